"""Vertical Chinese: characters upright, top to bottom, columns right to left.

Rendered as the eval's zh sets are (a Debian CJK font, `make cjk-font`), each character drawn
upright below the last; the truth of every character's box is its own ink.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scoring import cer_count
from test_words import CJK, font, ink_box, rect

POEMS = ["春眠不觉晓处处闻啼鸟", "夜来风雨声花落知多少",
         "床前明月光疑是地上霜", "举头望明月低头思故乡"]


def columns_page(texts: list[str], size: int, pitch: float = 1.2):
    """Columns from the right edge leftwards; each character's ink box."""
    face = font(CJK, size)
    step = int(size * pitch)
    width = int(size * 1.2 + len(texts) * size * 2.2)
    height = int(size + max(len(t) for t in texts) * step + size)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    truth = []
    for j, text in enumerate(texts):
        x = width - int(size * 1.6) - int(j * size * 2.2)
        for k, ch in enumerate(text):
            xy = (x, size // 2 + k * step)
            draw.text(xy, ch, font=face, fill=(15, 15, 15))
            truth.append((ch, ink_box((width, height), xy, ch, face)))
    return np.array(img)[:, :, ::-1].copy(), truth


@pytest.mark.parametrize("size,n", [(32, 3), (40, 4), (28, 2)])
def test_columns_read_right_to_left_top_to_bottom(engine, size, n):
    img, truth = columns_page(POEMS[:n], size)
    out = engine.ocr_image(img)
    assert out.rotation == 0
    assert len(out.lines) == n
    for line, want in zip(out.lines, POEMS[:n], strict=True):
        assert cer_count(line.text, want).cer <= 0.1, (line.text, want)
    # each character a word, its box on its own ink, inside its column's box
    words = [w for line in out.lines for w in line.words]
    got = {w.text: rect(w.box) for w in words}
    for line in out.lines:
        x0, y0, x1, y1 = rect(line.box)
        for w in line.words:
            wx0, wy0, wx1, wy1 = rect(w.box)
            assert x0 - 1 <= wx0 <= wx1 <= x1 + 1 and y0 - 1 <= wy0 <= wy1 <= y1 + 1
    matched = 0
    for ch, (tx0, ty0, tx1, ty1) in truth:
        if ch in got and sum(1 for c, _ in truth if c == ch) == 1:
            gx0, gy0, gx1, gy1 = got[ch]
            # along the column the cell is the character's ink; across it, the column's
            assert abs(gy0 - ty0) <= 4 and abs(gy1 - ty1) <= 4, (ch, got[ch], (ty0, ty1))
            assert gx0 <= tx0 + 4 and gx1 >= tx1 - 4
            matched += 1
    assert matched >= len(truth) // 2


def test_a_page_of_rows_on_its_side_is_not_taken_for_columns(engine, eval_dir, manifest):
    import cv2

    item = manifest["zhsyn_dev_page_01"]
    img = cv2.imread(str(eval_dir / item["file"]))
    for k in (1, 3):
        out = engine.ocr_image(np.ascontiguousarray(np.rot90(img, -k)))
        assert out.rotation == (4 - k) % 4 * 90
