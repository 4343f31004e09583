import numpy as np

from edgeocr.ocr.layout import group_rows, reading_order


def rect(x, y, w, h):
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def test_rows_top_to_bottom_then_left_to_right():
    boxes = [rect(300, 102, 50, 20), rect(10, 10, 80, 20), rect(10, 100, 100, 22),
             rect(200, 12, 60, 18)]
    assert reading_order(boxes) == [1, 3, 2, 0]


def test_slight_skew_stays_one_row():
    boxes = [rect(10, 50, 100, 20), rect(120, 56, 100, 20), rect(230, 62, 100, 20)]
    assert group_rows(boxes) == [[0, 1, 2]]


def test_a_tall_box_does_not_merge_the_next_line():
    boxes = [rect(10, 0, 40, 60), rect(60, 0, 100, 20), rect(60, 40, 100, 20)]
    rows = group_rows(boxes)
    assert len(rows) == 2


def test_empty():
    assert reading_order([]) == []
