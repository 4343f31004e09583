"""Greedy CTC decoding: best class per time step, collapse repeats, drop blanks (index 0).

Each emitted character keeps the time steps it was emitted over (its run of identical best
classes), which is where it sits along the line: the word boxes come from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Emitted:
    """One decoded character: its text, probability and time steps ``[start, end)``."""

    text: str
    prob: float
    start: int
    end: int


@dataclass(frozen=True)
class Decoded:
    text: str
    confidence: float  # mean probability of the emitted characters (0.0 when none)
    chars: tuple[Emitted, ...]


def load_charset(model_character_metadata: str) -> list[str]:
    """The recogniser's classes: blank, the model's ``character`` list, then a space."""
    return ["<blank>", *model_character_metadata.split("\n"), " "]


def greedy_decode(
    probs: np.ndarray, charset: Sequence[str], lengths: Sequence[int] | None = None
) -> list[Decoded]:
    """Decode a (batch, time, classes) probability tensor.

    ``lengths`` limits each item to its own time steps, so that padding added to batch lines
    of different widths can never emit characters.
    """
    best = probs.argmax(axis=2)
    best_p = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    return [_decode(best[i], best_p[i], charset,
                    best.shape[1] if lengths is None else min(int(lengths[i]), best.shape[1]))
            for i in range(best.shape[0])]


def _decode(idx: np.ndarray, p: np.ndarray, charset: Sequence[str], t: int) -> Decoded:
    idx, p = idx[:t], p[:t]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]]) if t else np.zeros(0, int)
    ends = np.r_[starts[1:], t].astype(int)
    chars = tuple(Emitted(charset[idx[s]], float(p[s]), int(s), int(e))
                  for s, e in zip(starts, ends, strict=True) if idx[s] != 0)
    conf = float(np.mean([c.prob for c in chars])) if chars else 0.0
    return Decoded("".join(c.text for c in chars), conf, chars)
