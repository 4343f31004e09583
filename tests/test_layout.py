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
    """A tall box (a big initial, a logo) beside the first line joins that line; the line
    below stays its own row, even though the tall box overlaps it too."""
    boxes = [rect(10, 0, 40, 60), rect(60, 0, 100, 20), rect(60, 40, 100, 20)]
    assert group_rows(boxes) == [[0, 1], [2]]
    assert reading_order(boxes) == [0, 1, 2]


def test_rows_hold_the_right_boxes_left_to_right():
    """Three printed lines given shuffled, with mixed heights and slight skew: each row holds
    exactly its line's boxes, left to right."""
    boxes = [rect(400, 205, 80, 20),   # 0: line 3, right
             rect(10, 8, 120, 24),     # 1: line 1, left (taller font)
             rect(250, 103, 90, 20),   # 2: line 2, middle
             rect(150, 12, 60, 18),    # 3: line 1, right
             rect(10, 200, 150, 22),   # 4: line 3, left
             rect(120, 100, 100, 20),  # 5: line 2, left
             rect(380, 107, 40, 14)]   # 6: line 2, right (smaller font)
    assert group_rows(boxes) == [[1, 3], [5, 2, 6], [4, 0]]
    assert reading_order(boxes) == [1, 3, 5, 2, 6, 4, 0]


def test_empty():
    assert reading_order([]) == []
