"""The engine on whatever pixels: noise, flat fields, stripes, specks, text at any angle, in
any size down to 1 px, gray or colour. It never raises, and whatever it reads keeps the
word-box invariants: the words spell their line, and each box lies inside the image and
inside its line."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from helpers import fuzz_profile

PROFILE = fuzz_profile()


@st.composite
def images(draw) -> np.ndarray:
    h = draw(st.integers(1, 320))
    w = draw(st.integers(1, 320))
    kind = draw(st.sampled_from(["noise", "flat", "stripes", "specks", "text"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif kind == "flat":
        img = np.full((h, w, 3), draw(st.integers(0, 255)), np.uint8)
    elif kind == "stripes":
        period = draw(st.integers(1, 40))
        axis = draw(st.integers(0, 1))
        ramp = (np.arange((h, w)[axis]) // period % 2 * 255).astype(np.uint8)
        img = np.repeat(np.expand_dims(ramp, 1 - axis), (w, h)[axis], axis=1 - axis)
        img = np.ascontiguousarray(np.dstack([img] * 3))
    elif kind == "specks":
        img = np.full((h, w, 3), 255, np.uint8)
        for _ in range(draw(st.integers(1, 30))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.circle(img, (x, y), int(rng.integers(1, 6)), (0, 0, 0), -1)
    else:
        img = np.full((max(h, 40), max(w, 160), 3), 255, np.uint8)
        text = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,", min_size=1, max_size=12))
        cv2.putText(img, text, (4, img.shape[0] // 2 + 10), cv2.FONT_HERSHEY_SIMPLEX,
                    draw(st.floats(0.4, 1.5)), (0, 0, 0), draw(st.integers(1, 3)))
        img = np.ascontiguousarray(np.rot90(img, -draw(st.integers(0, 3))))
    if draw(st.booleans()):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


@PROFILE
@given(images())
def test_any_pixels_read_without_error_and_keep_word_invariants(engine, img):
    out = engine.ocr_image(img)
    h, w = img.shape[:2]
    assert out.rotation in (0, 90, 180, 270)
    for line in out.lines:
        assert line.text.strip()
        assert "".join(wd.text for wd in line.words) == line.text.replace(" ", "")
        poly = np.array(line.box, np.float32).reshape(-1, 1, 2)
        for word in line.words:
            for x, y in word.box:
                assert 0 <= x <= w and 0 <= y <= h
                assert cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= -1.0
