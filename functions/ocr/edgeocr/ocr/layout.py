"""Reading order: rows top to bottom, boxes left to right within a row.

Two boxes share a row when their vertical spans overlap by at least half of the smaller
height, which tolerates slight skew and mixed font sizes on one printed line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_rows(boxes: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``boxes`` grouped into rows, each row sorted left to right."""
    if not boxes:
        return []
    spans = [(float(b[:, 1].min()), float(b[:, 1].max()), float(b[:, 0].min())) for b in boxes]
    order = sorted(range(len(boxes)), key=lambda i: (spans[i][0] + spans[i][1]) / 2)
    rows: list[list[int]] = []
    row_top = row_bottom = 0.0
    for i in order:
        top, bottom, _ = spans[i]
        if rows:
            overlap = min(bottom, row_bottom) - max(top, row_top)
            smaller = min(bottom - top, row_bottom - row_top)
            if smaller > 0 and overlap >= 0.5 * smaller:
                rows[-1].append(i)
                # track the row by its members' median extent so one tall box cannot swallow
                # the next printed line
                row_top = float(np.median([spans[j][0] for j in rows[-1]]))
                row_bottom = float(np.median([spans[j][1] for j in rows[-1]]))
                continue
        rows.append([i])
        row_top, row_bottom = top, bottom
    return [sorted(row, key=lambda j: spans[j][2]) for row in rows]


def reading_order(boxes: Sequence[np.ndarray]) -> list[int]:
    return [i for row in group_rows(boxes) for i in row]
