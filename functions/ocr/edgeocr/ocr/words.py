"""Words of a read line and their boxes in the line's crop.

A line's characters come from recognition with the span of the crop each was read from (its
CTC time steps). Those spans say which word is where, but only to a time step (8 px of the
48 px high line) and centred on the glyph rather than at its edges. So each word's edges are
then taken from the ink itself: within the stretch of the crop that the alignment gives the
word (from half-way to the previous word to half-way to the next), the first and last columns
with ink (of the runs of inked columns centred there), and the rows with ink over those
columns. Ink of the neighbouring lines that a crop's margins catch is left out first. Where
the crop shows no glyphs there (a faint photo, a textured background), the alignment's own
span stands.

Words are split at spaces; a CJK character is a word of its own (no spaces to split at).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .recognize import Char, Recognition

_BAND = (0.25, 0.75)  # rows of the crop surely inside the line (neighbours stay out)
_SOLID = 0.6  # more of a word's rectangle than this is "ink": the mask shows no glyphs


@dataclass(frozen=True)
class WordSpan:
    """A word and its box ``(x0, y0, x1, y1)`` in the crop's pixels."""

    text: str
    confidence: float
    box: tuple[float, float, float, float]


def words(crop: np.ndarray, reading: Recognition) -> list[WordSpan]:
    groups = split_words(reading.chars)
    if not groups:
        return []
    h, w = crop.shape[:2]
    ink = _ink(crop)
    columns = runs(ink.any(axis=0))
    spans = [(g[0].x0, g[-1].x1) for g in groups]
    out = []
    for k, group in enumerate(groups):
        left = 0.0 if k == 0 else (spans[k - 1][1] + spans[k][0]) / 2
        right = float(w) if k == len(groups) - 1 else (spans[k][1] + spans[k + 1][0]) / 2
        box = _ink_box(ink, columns, left, right) or (
            max(spans[k][0], 0.0), 0.0, min(spans[k][1], float(w)), float(h))
        out.append(WordSpan("".join(c.text for c in group),
                            round(sum(c.prob for c in group) / len(group), 4), box))
    return out


def split_words(chars: tuple[Char, ...]) -> list[list[Char]]:
    """Runs of characters between spaces; each CJK character alone."""
    groups: list[list[Char]] = []
    current: list[Char] = []
    for c in chars:
        if c.text.isspace():
            if current:
                groups.append(current)
            current = []
        elif is_cjk(c.text):
            if current:
                groups.append(current)
            groups.append([c])
            current = []
        else:
            current.append(c)
    if current:
        groups.append(current)
    return groups


def is_cjk(text: str) -> bool:
    """Han, kana, hangul and CJK punctuation: scripts written without spaces."""
    ch = text[:1]
    return ("\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af"
            or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef")


def ink_mask(crop: np.ndarray) -> np.ndarray:
    """Boolean ink: Otsu's threshold, with the crop's border taken as background."""
    gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([binary[0], binary[-1], binary[:, 0], binary[:, -1]])
    return binary != (1 if border.mean() >= 0.5 else 0)


def _ink(crop: np.ndarray) -> np.ndarray:
    """The ink of a line's crop, less the blobs that touch the top or bottom edge without
    reaching the middle of the line (the descenders and capitals of the lines above and
    below)."""
    ink = ink_mask(crop).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    h = ink.shape[0]
    b0, b1 = _band(h)
    top = stats[:, cv2.CC_STAT_TOP]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    stray = ((top == 0) | (bottom == h)) & ((bottom <= b0) | (top >= b1))
    stray[0] = False  # the background
    if stray.any():
        ink[stray[labels]] = 0
    return ink.astype(bool)


def _band(h: int) -> tuple[int, int]:
    b0 = int(h * _BAND[0])
    return b0, max(int(np.ceil(h * _BAND[1])), b0 + 1)


def runs(inked: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``[start, end)`` of True in a 1-D mask (the inked columns or rows of a crop)."""
    at = np.flatnonzero(inked)
    if at.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(at) > 1)
    starts = np.r_[at[0], at[breaks + 1]]
    ends = np.r_[at[breaks], at[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _ink_box(ink: np.ndarray, columns: list[tuple[int, int]], left: float,
             right: float) -> tuple[float, float, float, float] | None:
    """The ink of the runs of inked columns centred between ``left`` and ``right``: the
    word's glyphs, broken print included, and none of a neighbour's glyph that crosses the
    half-way point."""
    mine = [(a, b) for a, b in columns if left <= (a + b) / 2 < right]
    if not mine:
        return None
    x0, x1 = mine[0][0], mine[-1][1]
    if ink[:, x0:x1].mean() > _SOLID:
        return None  # not glyphs on a background: a photo's texture, a solid bar
    rows = np.flatnonzero(ink[:, x0:x1].any(axis=1))
    return float(x0), float(rows[0]), float(x1), float(rows[-1] + 1)
