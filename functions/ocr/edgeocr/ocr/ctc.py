"""Greedy CTC decoding: best class per time step, collapse repeats, drop blanks (index 0)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def load_charset(model_character_metadata: str) -> list[str]:
    """The recogniser's classes: blank, the model's ``character`` list, then a space."""
    return ["<blank>", *model_character_metadata.split("\n"), " "]


def greedy_decode(
    probs: np.ndarray, charset: Sequence[str], lengths: Sequence[int] | None = None
) -> list[tuple[str, float]]:
    """Decode a (batch, time, classes) probability tensor.

    ``lengths`` limits each item to its own time steps, so that padding added to batch lines
    of different widths can never emit characters. Confidence is the mean probability of the
    emitted characters (0.0 for an empty line).
    """
    best = probs.argmax(axis=2)
    best_p = probs.max(axis=2)
    out: list[tuple[str, float]] = []
    for i in range(best.shape[0]):
        t = best.shape[1] if lengths is None else min(int(lengths[i]), best.shape[1])
        idx, p = best[i, :t], best_p[i, :t]
        keep = idx != 0
        keep[1:] &= idx[1:] != idx[:-1]
        chars = idx[keep]
        text = "".join(charset[c] for c in chars)
        out.append((text, float(p[keep].mean()) if chars.size else 0.0))
    return out
