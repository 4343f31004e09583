import cv2
import numpy as np
import pytest

from edgeocr.ocr.geometry import (
    box_size,
    crop_quad,
    order_clockwise,
    rotate_image,
    rotate_points,
    unclip,
)


def test_order_clockwise_from_any_permutation():
    box = np.array([[10, 20], [110, 20], [110, 50], [10, 50]], np.float32)
    for perm in ([2, 0, 3, 1], [3, 2, 1, 0], [1, 3, 0, 2]):
        assert order_clockwise(box[perm]).tolist() == box.tolist()


def test_unclip_grows_each_side_by_db_distance():
    box = np.array([[0, 0], [100, 0], [100, 20], [0, 20]], np.float32)
    grown, short = unclip(box, 1.5)
    d = 100 * 20 * 1.5 / (2 * 120)
    w, h = box_size(grown)
    assert w == pytest.approx(100 + 2 * d, abs=1e-3)
    assert h == pytest.approx(20 + 2 * d, abs=1e-3)
    assert short == pytest.approx(20 + 2 * d, abs=1e-3)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_rotate_points_follows_rotate_image(turns):
    img = np.zeros((30, 50), np.uint8)
    img[5, 40] = 255  # pixel centre (40.5, 5.5)
    rotated = rotate_image(img, turns)
    ys, xs = np.nonzero(rotated)
    moved = rotate_points(np.array([[40.5, 5.5]], np.float32), turns, 50, 30)
    assert moved[0].tolist() == [xs[0] + 0.5, ys[0] + 0.5]


def test_rotate_points_round_trip():
    pts = np.array([[3, 4], [20, 7]], np.float32)
    there = rotate_points(pts, 1, 50, 30)
    assert rotate_points(there, 3, 30, 50).tolist() == pts.tolist()


def tilted_on_a_page(src: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``src`` turned by ``degrees`` about its centre onto a larger white page, and the quad
    (clockwise from its top-left corner) where it landed."""
    h, w = src.shape[:2]
    pad = int(np.ceil(0.6 * (w + h)))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (pad, pad)
    page = cv2.warpAffine(src, m, (w + 2 * pad, h + 2 * pad), flags=cv2.INTER_CUBIC,
                          borderValue=(255, 255, 255))
    corners = np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float32)
    return page, cv2.transform(corners, m)[0]


@pytest.mark.parametrize("image", ["en_doclines_uw3/0028_010012.bin.png",
                                   "en_words_ic15/word_139.png"])
@pytest.mark.parametrize("degrees", [8.0, -12.0])
def test_crop_quad_rectifies_a_tilted_box(eval_dir, image, degrees):
    """A real text image, tilted onto a page: cropping its quad gives the image back, pixel
    for pixel up to interpolation, and not mirrored, flipped or shifted."""
    src = cv2.imread(str(eval_dir / "images" / image))
    page, box = tilted_on_a_page(src, degrees)
    crop = crop_quad(page, box)
    w, h = box_size(box)
    assert crop.shape == src.shape == (round(h), round(w), 3)
    got, want = crop.astype(int), src.astype(int)

    def differs(a: np.ndarray) -> float:
        return float(np.abs(a - want).mean())

    assert differs(got) < 12, differs(got)  # two cubic resamplings apart
    for wrong in (got[:, ::-1], got[::-1, ::-1], np.roll(got, 2, axis=1),
                  np.full_like(got, 255)):  # mirrored, turned over, 2 px off, blank
        assert differs(wrong) > 3 * differs(got)
