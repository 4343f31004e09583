"""Vertical CJK columns: characters upright, stacked top to bottom.

The recogniser reads rows, and a column turned on its side would give it characters lying
on their sides. So a column is cut into its characters (at the gaps in its ink, pieces of one
character, such as the strokes of 三, put back together up to a square) and the characters are
laid side by side into a row, which reads as any printed line does. Each character's place
in the row maps back to its cell of the column, which is its box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .recognize import Char, Recognition
from .words import WordSpan, ink_mask, runs, split_words

_MERGE = 1.15  # pieces are joined while the character stays within this many widths tall
_GAP = 0.25  # background between characters laid in a row, in character widths


@dataclass(frozen=True)
class Cell:
    """Where one character of a column lies: rows ``[y0, y1)`` of the column, and columns
    ``[x0, x1)`` of the row it was laid into."""

    y0: int
    y1: int
    x0: int
    x1: int


def restack(column: np.ndarray) -> tuple[np.ndarray, list[Cell]]:
    """The column's characters laid left to right in a row, each upright."""
    h, w = column.shape[:2]
    ink = ink_mask(column)
    inked_cols = np.flatnonzero(ink.any(axis=0))
    size = max(int(inked_cols[-1] - inked_cols[0] + 1) if inked_cols.size else w, 1)
    pieces: list[list[int]] = []
    for a, b in runs(ink.any(axis=1)):
        if pieces and b - pieces[-1][0] <= _MERGE * size:
            pieces[-1][1] = b
        else:
            pieces.append([a, b])
    if not pieces:
        return column, [Cell(0, h, 0, w)]
    background = np.median(column[_border(h, w)], axis=0).astype(column.dtype)
    gap = max(round(_GAP * size), 1)
    height = max(b - a for a, b in pieces) + 2 * gap
    row = np.empty((height, w * len(pieces) + gap * (len(pieces) + 1), *column.shape[2:]),
                   dtype=column.dtype)
    row[...] = background
    cells, x = [], gap
    for a, b in pieces:  # each character upright, as it stood, vertically centred
        top = (height - (b - a)) // 2
        row[top : top + (b - a), x : x + w] = column[a:b]
        cells.append(Cell(a, b, x, x + w))
        x += w + gap
    return row, cells


def _border(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = True, True, True, True
    return mask


def column_words(width: int, reading: Recognition, cells: list[Cell]) -> list[WordSpan]:
    """The words of a column read as a row, in the column's pixels: across its width, over
    the cells their characters were read from."""
    out = []
    for group in split_words(reading.chars):
        mine = [_cell_of(c, cells) for c in group]
        box = (0.0, float(min(c.y0 for c in mine)), float(width), float(max(c.y1 for c in mine)))
        out.append(WordSpan("".join(c.text for c in group),
                            round(sum(c.prob for c in group) / len(group), 4), box))
    return out


def _cell_of(char: Char, cells: list[Cell]) -> Cell:
    """The cell a read character came from: the nearest to the centre of its span."""
    mid = (char.x0 + char.x1) / 2
    return min(cells, key=lambda cell: abs((cell.x0 + cell.x1) / 2 - mid))
