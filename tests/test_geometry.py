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


def test_crop_quad_rectifies_a_tilted_box():
    img = np.full((200, 200, 3), 255, np.uint8)
    box = np.array([[50, 60], [150, 40], [154, 60], [54, 80]], np.float32)
    crop = crop_quad(img, box)
    w, h = box_size(box)
    assert crop.shape[:2] == (round(h), round(w))
