"""Word boxes: every line's words spell it, lie inside it, and land on the ink.

Truth for the rendered lines is each word's own ink, found by drawing the word alone on a
blank image at the same place; the engine never sees that image. Pages are also turned 90°,
180° and 270°, and the truth turned with them: the boxes must come back in the page's own
pixel grid whichever way it was read.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from edgeocr.ocr.geometry import rotate_points
from edgeocr.ocr.pages import Limits, open_document
from edgeocr.ocr.words import is_cjk

LATIN = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SERIF = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
CJK = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"  # `make cjk-font`
TOLERANCE = 4  # px, every edge


def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: run `make cjk-font`")
    return ImageFont.truetype(path, size)


def ink_box(size: tuple[int, int], xy: tuple[float, float], text: str,
            face: ImageFont.FreeTypeFont) -> tuple[int, int, int, int]:
    """The ink of ``text`` drawn alone at ``xy``: (x0, y0, x1, y1), pixel edges."""
    alone = Image.new("L", size, 0)
    ImageDraw.Draw(alone).text(xy, text, font=face, fill=255)
    x0, y0, x1, y1 = alone.getbbox()
    return x0, y0, x1, y1


def render(rows: list[list[str]], face: ImageFont.FreeTypeFont, *, gap: float = 1.0,
           size: tuple[int, int] = (900, 0)) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """Rows of words, drawn left to right (CJK words with no space between them), and each
    word's ink box."""
    line_h = int(face.size * 2.2)
    width, height = size[0], size[1] or line_h * len(rows) + face.size
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    truth = []
    for r, words in enumerate(rows):
        x, y = face.size, face.size // 2 + r * line_h
        for k, word in enumerate(words):
            if k and not (is_cjk(word) and is_cjk(words[k - 1])):
                x += face.getlength(" ") * gap
            draw.text((x, y), word, font=face, fill=(20, 20, 20))
            truth.append((word, ink_box((width, height), (x, y), word, face)))
            x += face.getlength(word)
    return np.array(img)[:, :, ::-1].copy(), truth


def turned(img: np.ndarray, truth: list[tuple[str, tuple]], k: int):
    """The image turned clockwise by k quarter turns, and the truth boxes with it (as the
    axis-aligned rectangles they still are)."""
    h, w = img.shape[:2]
    out = np.ascontiguousarray(np.rot90(img, -k))
    moved = []
    for word, (x0, y0, x1, y1) in truth:
        pts = rotate_points(np.array([[x0, y0], [x1, y1]], np.float32), k, w, h)
        moved.append((word, (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())))
    return out, moved


def rect(box: list[list[int]]) -> tuple[int, int, int, int]:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return min(xs), min(ys), max(xs), max(ys)


def all_words(out) -> list:
    return [w for line in out.lines for w in line.words]


def assert_words_spell_and_sit_inside(out) -> None:
    for line in out.lines:
        assert line.words, line
        assert "".join(w.text for w in line.words) == line.text.replace(" ", "")
        poly = np.array(line.box, np.float32).reshape(-1, 1, 2)
        for word in line.words:
            assert " " not in word.text and word.text
            assert 0.0 <= word.confidence <= 1.0
            for x, y in word.box:  # inside the line's box (1 px for rounding)
                assert cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= -1.0, (
                    word, line.box)


def assert_boxes_match(out, truth: list[tuple[str, tuple]]) -> None:
    words = all_words(out)
    assert [w.text for w in words] == [t for t, _ in truth]
    for word, (_, want) in zip(words, truth, strict=True):
        got = rect(word.box)
        err = max(abs(g - t) for g, t in zip(got, want, strict=True))
        assert err <= TOLERANCE, (word.text, got, want)


ROWS = [["Invoice", "No.", "48213", "dated", "12/03/2024"],
        ["Total", "amount", "due:", "1,284.50", "EUR"],
        ["Thank", "you", "for", "your", "business"]]


@pytest.mark.parametrize("face_path,size", [(LATIN, 28), (SERIF, 22), (LATIN, 40)])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rendered_page_word_boxes_land_on_the_ink(engine, face_path, size, k):
    img, truth = render(ROWS, font(face_path, size))
    img, truth = turned(img, truth, k)
    out = engine.ocr_image(img)
    assert out.rotation == (4 - k) % 4 * 90
    assert_words_spell_and_sit_inside(out)
    assert_boxes_match(out, truth)


def test_tight_line_word_boxes_land_on_the_ink(engine):
    img, truth = render([["Quick", "brown", "fox", "2024"]], font(LATIN, 30), size=(420, 64))
    out = engine.ocr_image(img, mode="line")
    assert_words_spell_and_sit_inside(out)
    assert_boxes_match(out, truth)


def test_cjk_runs_are_one_word_per_character(engine):
    rows = [["发", "票", "号", "码", "2024", "年", "合", "计", "金", "额"]]
    img, truth = render(rows, font(CJK, 32), size=(620, 80))
    out = engine.ocr_image(img)
    assert [line.text for line in out.lines] == ["发票号码 2024 年合计金额"]
    assert_words_spell_and_sit_inside(out)
    assert_boxes_match(out, truth)


@pytest.mark.parametrize("item_id,k", [
    *((i, k) for i in ("sroie_X51006556818", "sroie_X51005677334", "tess_eurotext",
                       "zhsyn_dev_page_01") for k in (0, 1, 2)),
    ("ic15_img_35", 0), ("ic15_img_37", 0),  # scenes: turned, DB finds none of their words
])
def test_real_pages_words_spell_their_lines_inside_them(engine, eval_dir, manifest, item_id, k):
    item = manifest[item_id]
    img = cv2.imread(str(eval_dir / item["file"]))
    out = engine.ocr_image(np.ascontiguousarray(np.rot90(img, -k)))
    assert out.lines
    assert_words_spell_and_sit_inside(out)


def test_born_digital_pages_have_words_from_their_text_layer():
    pdf = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")  # `make doc-tools`
    with open_document(pdf.read_bytes(), Limits(max_bytes=1 << 30)) as doc:
        lines = [ln for n in range(1, 6) for ln in doc.page(n).text_lines or ()]
    assert len(lines) > 20
    for line in lines:
        assert line.words
        assert "".join(w for w, _ in line.words) == line.text.replace(" ", "")
        x0, y0, x1, y1 = rect(line.box)
        for _, box in line.words:
            wx0, wy0, wx1, wy1 = rect(box)
            assert x0 <= wx0 <= wx1 <= x1 and y0 <= wy0 <= wy1 <= y1


def test_words_round_trip_through_the_stored_result(engine, eval_dir, manifest):
    from edgeocr.domain import PageResult
    from edgeocr.ocr.pages import Page
    from edgeocr.reader import read_page

    img = cv2.imread(str(eval_dir / manifest["sroie_X51006556818"]["file"]))
    h, w = img.shape[:2]
    result, _ = read_page(engine, Page(number=1, width=w, height=h, pixels=img,
                                       text_lines=None, thumbnail=b""))
    obj = result.to_json()
    assert all(line["words"] for line in obj["lines"])
    assert PageResult.from_json(obj) == result
