"""Pure scoring functions for ``scripts/eval.py``: no models, no I/O.

What is compared (``shared/eval/README.md`` says why these are needed):

- Both sides are NFKC-normalised (full-width letters, digits and punctuation become ASCII,
  ``￥`` becomes ``¥``), lower-cased (SROIE GT is all upper case), TeX and curly quotes are
  folded to ``"`` and ``'`` (UW3 GT writes ````` `` ````` and ``''``; engines print ``"`` or
  ``“``), and whitespace runs collapse to one space.
- Line items: CER = Levenshtein edits / GT characters with all whitespace *removed*. Spaces
  are layout, not reading: PP-OCR spaces Latin words inside Chinese lines differently from
  the GT, which alone is 3% CER on the zh lines. A line's prediction is all its predicted
  lines joined. Exact match uses the same form.
- Page items: bag-of-words F1 over multisets of tokens: whitespace-split words with leading
  and trailing punctuation stripped (``TOTAL:`` = ``TOTAL``; punctuation-only tokens
  dropped), and every CJK character a token of its own. Pages whose GT contains Chinese are
  scored as a bag of *characters* (all but spaces and punctuation): Chinese has no word
  spaces, and the digits and Latin in it are spaced arbitrarily (``2026/06/11 19:00:32``
  comes out as one run). Reading order does not count, so scenes (no order in the GT) and
  receipts (GT split into segments) are fair.
- A category's figure is the *mean over its items* (macro), for CER and F1 alike: each image
  counts once, however long its text, so one 800-word page cannot hide a failed one.

These choices reproduce the reference figures measured with RapidOCR 3.10 on this machine
(SROIE F1 0.884, Tesseract pages 0.749, zh pages 0.999, UW3 lines CER 0.011, zh lines 0.002
rec-only and 0.270 full pipeline) where the alternatives miss them: micro F1 gives 0.96 on
the Tesseract pages (one unreadable page of four vanishes in the token total), micro CER
0.19 on the zh lines' full pipeline, splitting punctuation off instead of stripping it 0.93
on SROIE, word tokens 0.992 on the zh pages, keeping spaces 3% on the zh lines, and no quote
folding 0.014 on UW3. (IC15 scenes, 0.519, is not reproduced: 0.554 here, 0.506 without the
ignore boxes.)
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‟": '"', "‘": "'", "’": "'",
                         "‚": "'", "‛": "'"})

# Scripts written without spaces between words: each character is a token of its own.
_CJK_RANGES = (
    (0x3000, 0x303F),  # CJK symbols and punctuation (、。「」 …)
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)

Point = tuple[float, float]


def normalise(text: str) -> str:
    """NFKC, lower case, quotes folded, whitespace runs to one space, trimmed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_QUOTES)
    text = text.replace("``", '"').replace("''", '"')
    return _SPACE.sub(" ", text).strip()


def strip_spaces(text: str) -> str:
    """The CER form: normalised and with every space removed (spacing is not content)."""
    return normalise(text).replace(" ", "")


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Edit distance (insert, delete, substitute; each costs 1), two-row DP."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class CerCount:
    """Edits against a GT length: one line item's CER, kept as counts for reports."""

    edits: int
    length: int

    @property
    def cer(self) -> float:
        # An empty GT with any output is all error; with none, no error.
        if self.length == 0:
            return float(self.edits > 0)
        return self.edits / self.length


def cer_count(pred: str, gt: str) -> CerCount:
    """Edits and GT length of one line item, in the CER form of both sides."""
    p, g = strip_spaces(pred), strip_spaces(gt)
    return CerCount(levenshtein(p, g), len(g))


def mean_cer(counts: Iterable[CerCount]) -> float:
    """The category's CER: the mean of its items' CERs (each image counts once)."""
    cers = [c.cer for c in counts]
    return sum(cers) / len(cers) if cers else 0.0


def exact_match(pred: str, gt: str) -> bool:
    """Same text after normalisation, spaces ignored as in CER."""
    return strip_spaces(pred) == strip_spaces(gt)


def is_cjk(ch: str) -> bool:
    """True for characters of scripts written without word spaces."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_punct(ch: str) -> bool:
    """Unicode punctuation or symbol (``.,:;!?"'()$%#@¥、。「」`` …)."""
    return unicodedata.category(ch)[0] in "PS"


def strip_punct(word: str) -> str:
    """The word without leading and trailing punctuation (inner kept: ``12.50``, ``it's``)."""
    start, end = 0, len(word)
    while start < end and is_punct(word[start]):
        start += 1
    while end > start and is_punct(word[end - 1]):
        end -= 1
    return word[start:end]


def has_cjk(text: str) -> bool:
    """Does the text contain Chinese (or other CJK) characters?"""
    return any(is_cjk(ch) for ch in text)


def tokenise(text: str, chars: bool = False) -> list[str]:
    """Normalised whitespace-split words; each CJK character is a word on its own; every word
    stripped of edge punctuation, and dropped if nothing is left.

    ``chars``: every non-space, non-punctuation character is a token instead, for Chinese
    pages, where spaces inside dates, phone numbers and Latin runs are arbitrary.
    """
    if chars:
        return [ch for ch in normalise(text) if ch != " " and not is_punct(ch)]
    pieces: list[str] = []
    for word in normalise(text).split():
        run = ""
        for ch in word:
            if is_cjk(ch):
                pieces += [run, ch]
                run = ""
            else:
                run += ch
        pieces.append(run)
    return [t for t in map(strip_punct, pieces) if t]


@dataclass(frozen=True)
class BowCount:
    """Multiset overlap of predicted and GT tokens: one page item's precision, recall, F1."""

    matched: int
    predicted: int
    expected: int

    @property
    def precision(self) -> float:
        return self.matched / self.predicted if self.predicted else float(self.expected == 0)

    @property
    def recall(self) -> float:
        return self.matched / self.expected if self.expected else float(self.predicted == 0)

    @property
    def f1(self) -> float:
        total = self.predicted + self.expected
        return 2 * self.matched / total if total else 1.0


def bow_count(pred: str, gt: str, chars: bool | None = None) -> BowCount:
    """Bag-of-words overlap: a token matches as many times as it occurs on both sides.

    ``chars``: bag of characters instead (see ``tokenise``); by default when the GT has
    Chinese, so that every caller scores Chinese pages the same way.
    """
    if chars is None:
        chars = has_cjk(gt)
    p, g = Counter(tokenise(pred, chars)), Counter(tokenise(gt, chars))
    return BowCount(sum((p & g).values()), p.total(), g.total())


def mean_f1(counts: Iterable[BowCount]) -> float:
    """The category's F1: the mean of its items' F1s (each image counts once)."""
    f1s = [c.f1 for c in counts]
    return sum(f1s) / len(f1s) if f1s else 0.0


def polygon(flat_or_points: Sequence[float] | Sequence[Sequence[float]]) -> list[Point]:
    """Points from ``[x1, y1, x2, y2, ...]`` (manifest) or ``[[x, y], ...]`` (engine boxes)."""
    seq = list(flat_or_points)
    if seq and isinstance(seq[0], int | float):
        return [(float(seq[i]), float(seq[i + 1])) for i in range(0, len(seq) - 1, 2)]
    return [(float(p[0]), float(p[1])) for p in seq]  # type: ignore[index]


def centre(box: Sequence[float] | Sequence[Sequence[float]]) -> Point:
    """Mean of the corners."""
    pts = polygon(box)
    return sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)


def inside(point: Point, poly: Sequence[Point]) -> bool:
    """Ray casting; points on an edge may go either way, which is fine for centres."""
    x, y = point
    hit = False
    for (x1, y1), (x2, y2) in zip(poly, [*poly[1:], poly[0]], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def drop_ignored(
    lines: Sequence[tuple[str, Sequence]], ignore_boxes: Sequence[Sequence[float]]
) -> list[tuple[str, Sequence]]:
    """Predicted (text, box) lines whose box centre is outside every "don't care" region.

    IC15 GT leaves illegible text (``###``) untranscribed; reading it must not count as a
    false positive.
    """
    polys = [polygon(b) for b in ignore_boxes]
    return [(t, b) for t, b in lines if not any(inside(centre(b), p) for p in polys)]
