"""The OCR engine: bytes → upright image → boxes → crops → text lines, on the CPU.

Pure Python over numpy, OpenCV and ONNX Runtime, with no HTTP or AWS. One ``Engine`` holds
the three sessions for the life of the process.

Decisions the engine makes from evidence it already has (no extra model):
- page orientation: box shapes say whether lines run sideways (90°/270°); the line
  classifier's length-weighted vote over the widest lines says 0° or 180°; when the vote is
  close, recognition confidence on the widest lines read both ways settles it. An
  upside-down page keeps its boxes (turned with it), so it is detected once;
- lines: only the lines recognition is unsure of are classified, and those the classifier
  calls upside down are read both ways (a label stuck on upside down);
- sparse pages: DB finds little of text running up or down a photo (a sign shot on its
  side), too little to tell the page is turned; a page that reads as fewer than about two
  words is also read turned a quarter, and the clearly more confident reading wins;
- vertical CJK columns: when lines run vertically, the tallest few are also read as columns
  (their characters cut apart and laid in a row, ``columns``); if that reads about as
  surely as the page turned either way or better, the page is columns, read right to left;
- tight crops: an image that is one line (one row of text filling its height, or no
  detection at all on a small image) is read whole, as recognition-only mode would, whichever
  way its text runs: as it is, turned 180° and, unless it is clearly wider than tall, turned
  90° both ways; the most confident reading wins (a reading of one or two characters counts
  for less), and a visible one is never dropped.

Every line keeps the crop it was read from (``geometry.Crop``), so its words, found in the
crop (``words``), map back into the page through the crop's own geometry, however the line
and the page were turned to be read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .classify import LineClassifier
from .columns import column_words, restack
from .config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, EngineSettings
from .ctc import load_charset
from .decode import DecodedImage, ImageInfo, decode, to_bgr8
from .detect import TextDetector
from .geometry import Crop, box_size, rotate_image, rotate_points
from .layout import group_rows, reading_order
from .models import CLS_FILE, DET_FILE, REC_FILE, ModelSet, create_session
from .recognize import HEIGHT, Recognition, TextRecognizer
from .words import WordSpan, words

Mode = Literal["auto", "page", "line"]

_SIDEWAYS_ASPECT = 1.5  # a box this much taller than wide is a vertical line
_LINE_FILL = 0.5  # one row whose boxes cover this share of the height: the image is a line
_SMALL_IMAGE = 200  # no detection on an image this short: still try reading it whole
_TIE_LOW = 0.3  # a classifier vote for 180° above this is checked by recognition
_TIE_SAMPLE = 6
_COLUMN_SAMPLE = 4  # the tallest lines read to tell CJK columns from a page on its side
_COLUMN_SLACK = 0.01  # columns win unless the page turned reads more surely by this much
# (the recogniser reads stacked characters turned on their side nearly as well: 1.000 vs
# 0.996 on rendered columns; a page of rows on its side reads 0.5-0.8 as columns, 0.99 turned)
_VOTE_SAMPLE = 12  # the widest lines classified for the page's 0°/180° vote
_DOUBT = 0.9  # a line read with less confidence is classified (and maybe read turned)
_WIDE = 2.0  # a tight crop this much wider than tall is not tried turned 90°
_TURN_MARGIN = 0.01  # a turned tight crop must read this much more surely to win
_SHORT = 1.0  # readings of a few characters are discounted by 1 - exp(-n / _SHORT)
_CONTRAST = 3.0  # grey-level standard deviation of an image with something visible on it
_SMALL_PAGE = 400  # px, longer side: a small image ...
_FEW_BOXES = 3  # ... with this many boxes or fewer is also read whole (one word, cut up)
_SPARSE_CHARS = 12  # a page read as fewer characters (about two words) is also read turned
_TURN_MARGIN_PAGE = 0.05  # ... a quarter, and that reading must be this much more sure to win


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float
    box: list[list[int]]  # 4 points, clockwise from the top-left of the text


@dataclass(frozen=True)
class Line:
    text: str
    confidence: float
    box: list[list[int]]  # 4 points, clockwise from the top-left of the text
    words: tuple[Word, ...] = ()


@dataclass
class OcrOutput:
    image: ImageInfo
    lines: list[Line]
    rotation: int = 0  # degrees clockwise the page was turned to read it
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


class Engine:
    def __init__(self, model_dir: Path, config: EngineSettings | None = None,
                 threads: int = 0) -> None:
        """``threads`` 0 leaves ONNX Runtime its default (one per physical core)."""
        self.config = config or EngineSettings()
        self.models = ModelSet.load(model_dir)
        es = self.config
        det = create_session(self.models.path(DET_FILE), threads)
        cls = create_session(self.models.path(CLS_FILE), threads)
        rec = create_session(self.models.path(REC_FILE), threads)
        charset = load_charset(rec.get_modelmeta().custom_metadata_map["character"])
        self.detector = TextDetector(
            det, max_side=es.det_max_side, max_side_wide=es.det_max_side_wide,
            max_upscale=es.det_max_upscale, thresh=es.det_thresh,
            box_thresh=es.det_box_thresh, unclip_ratio=es.det_unclip_ratio,
        )
        self.classifier = LineClassifier(cls)
        self.recognizer = TextRecognizer(rec, charset, max_ratio=es.max_line_ratio)

    def ocr(self, data: bytes, mode: Mode = "auto", *, max_bytes: int = DEFAULT_MAX_BYTES,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> OcrOutput:
        """Validate, decode and OCR encoded image bytes."""
        t0 = time.perf_counter()
        decoded = decode(data, max_bytes=max_bytes, max_pixels=max_pixels)
        decode_ms = round((time.perf_counter() - t0) * 1000, 1)
        out = self.ocr_decoded(decoded, mode=mode)
        out.timings_ms = {"decode": decode_ms, **out.timings_ms}
        return out

    def ocr_decoded(self, decoded: DecodedImage, mode: Mode = "auto") -> OcrOutput:
        """OCR an image the caller already validated and decoded (so that bad input is
        refused before the models are even loaded)."""
        return self.ocr_image(decoded.pixels, mode=mode, info=decoded.info)

    def ocr_image(
        self, img: np.ndarray, mode: Mode = "auto", info: ImageInfo | None = None
    ) -> OcrOutput:
        """OCR an upright-by-EXIF image array (gray, BGR or BGRA, 8 or 16 bit); boxes are in
        its coordinates."""
        img = to_bgr8(img)
        h, w = img.shape[:2]
        info = info or ImageInfo(width=w, height=h, format="raw", bytes=int(img.nbytes))
        clock = _Clock()

        boxes = [] if mode == "line" else [d.box for d in self.detector(img)]
        clock.lap("detect")
        if mode == "line" or (mode == "auto" and _is_tight(img, boxes)):
            return self._read_tight(img, info, clock)
        page = self._read_page(img, boxes, info, clock)
        if page.rotation in (0, 180) and _chars(page) < _SPARSE_CHARS:
            # DB finds little of text running up or down a photo (a poster, a sign, shot on
            # its side): a page that reads almost nothing is read turned a quarter too
            turned = self._read_page(img, [], info, clock, turns=1)
            if _output_score(turned) > _output_score(page) + _TURN_MARGIN_PAGE:
                page = turned
        if mode == "auto" and max(h, w) <= _SMALL_PAGE and len(boxes) <= _FEW_BOXES:
            # A small image with a few boxes may still be one word, cut up by the detector
            # (a vertical "BAG" as "BA" over "G"): read it whole too, and keep the better.
            tight = self._read_tight(img, info, clock)
            if _output_score(tight) > _output_score(page):
                return tight
        return page

    def _read_page(self, img: np.ndarray, boxes: list[np.ndarray], info: ImageInfo,
                   clock: _Clock, turns: int | None = None) -> OcrOutput:
        """Lines found by the detector, oriented, read and put in reading order; ``turns``
        forces the page's quarter turns (detecting again), else its boxes decide."""
        h, w = img.shape[:2]
        # Lines running vertically: try the page turned 90° clockwise (detecting again, on
        # the turned page, is what makes a turned page read as well as an upright one).
        if turns is None:
            turns = 1 if _is_sideways(boxes) else 0
            if turns and self._columns_upright(img, boxes, clock):
                return self._read_columns(img, boxes, info, clock)
        upright = rotate_image(img, turns)
        if turns:
            boxes = [d.box for d in self.detector(upright)]
            clock.lap("detect")
        crops = [_crop(upright, b) for b in boxes]
        flipped = self._page_flipped(crops, clock)
        if flipped:
            crops = [c.turned(2) for c in crops]
        clock.lap("orient")

        results = self.recognizer([c.pixels for c in crops])
        clock.lap("recognize")
        self._settle_doubtful(crops, results, clock)

        es = self.config
        keep = [i for i, r in enumerate(results)
                if r.text.strip() and r.confidence >= es.text_score]
        uh, uw = upright.shape[:2]
        reading = [rotate_points(crops[i].quad, 2 if flipped else 0, uw, uh) for i in keep]
        order = [keep[j] for j in reading_order(reading)]
        lines = [self._line(crops[i], results[i], turns, (uw, uh), (w, h)) for i in order]
        clock.lap("words")
        rotation = ((turns + (2 if flipped else 0)) % 4) * 90
        return OcrOutput(info, lines, rotation=rotation, timings_ms=clock.laps)

    def _columns_upright(self, img: np.ndarray, boxes: list[np.ndarray],
                         clock: _Clock) -> bool:
        """Are the tall lines vertical CJK columns (characters upright, stacked) rather than
        a page on its side? The tallest few read both ways say."""
        tall = sorted(boxes, key=lambda b: -box_size(b)[1] / max(box_size(b)[0], 1.0))
        sample = [Crop.cut(img, b) for b in tall[:_COLUMN_SAMPLE]]
        stacked = _mean_conf(self.recognizer([restack(c.pixels)[0] for c in sample]))
        sideways = max(_mean_conf(self.recognizer([c.turned(k).pixels for c in sample]))
                       for k in (1, 3))
        clock.lap("orient")
        return stacked >= sideways - _COLUMN_SLACK

    def _read_columns(self, img: np.ndarray, boxes: list[np.ndarray], info: ImageInfo,
                      clock: _Clock) -> OcrOutput:
        """A page of vertical columns: each column's characters read as a row, columns in
        reading order right to left, each top to bottom (wide lines, a title, as rows)."""
        h, w = img.shape[:2]
        crops = [Crop.cut(img, b) for b in boxes]
        stacks = [restack(c.pixels) if c.pixels.shape[0] > c.pixels.shape[1] else None
                  for c in crops]
        results = self.recognizer([s[0] if s else c.pixels
                                   for c, s in zip(crops, stacks, strict=True)])
        clock.lap("recognize")
        keep = [i for i, r in enumerate(results)
                if r.text.strip() and r.confidence >= self.config.text_score]
        # columns right to left, then top to bottom: rows of the page turned a quarter
        order = [keep[j] for j in reading_order(
            [np.stack([crops[i].quad[:, 1], w - crops[i].quad[:, 0]], axis=1) for i in keep])]
        lines = [self._line(crops[i], results[i], 0, (w, h), (w, h),
                            None if stacks[i] is None else
                            column_words(crops[i].pixels.shape[1], results[i], stacks[i][1]))
                 for i in order]
        clock.lap("words")
        return OcrOutput(info, lines, rotation=0, timings_ms=clock.laps)

    def _read_tight(self, img: np.ndarray, info: ImageInfo, clock: _Clock) -> OcrOutput:
        """The whole image as one line, read whichever way gives the most confident text."""
        h, w = img.shape[:2]
        whole = Crop.whole(img)
        turns = [0, 2] if w >= h * _WIDE else [0, 1, 2, 3]
        candidates = [whole.turned(k) for k in turns]
        results = self.recognizer([c.pixels for c in candidates])
        clock.lap("recognize")
        # as it is wins ties: "66" turned is "99", and just as sure
        best = max(range(len(turns)),
                   key=lambda k: (_tight_score(results[k]) - (_TURN_MARGIN if k else 0.0), -k))
        lines = []
        if results[best].text.strip() and _visible(img):
            lines = [self._line(candidates[best], results[best], 0, (w, h), (w, h))]
        clock.lap("words")
        return OcrOutput(info, lines, rotation=turns[best] * 90, timings_ms=clock.laps)

    def _settle_doubtful(self, crops: list[Crop], results: list[Recognition],
                         clock: _Clock) -> None:
        """Lines read with little confidence that the classifier calls upside down are read
        turned too; the more confident reading wins (in place)."""
        doubt = [i for i, r in enumerate(results) if r.confidence < _DOUBT]
        if not doubt:
            return
        p180 = self.classifier([crops[i].pixels for i in doubt])
        clock.lap("classify")
        odd = [i for i, p in zip(doubt, p180, strict=True) if p > self.config.cls_thresh]
        if odd:
            turned = [crops[i].turned(2) for i in odd]
            again = self.recognizer([c.pixels for c in turned])
            for i, crop, alt in zip(odd, turned, again, strict=True):
                if alt.confidence > results[i].confidence:
                    results[i], crops[i] = alt, crop
        clock.lap("recognize")

    def _line(self, crop: Crop, reading: Recognition, turns: int, upright_size: tuple[int, int],
              size: tuple[int, int], spans: list[WordSpan] | None = None) -> Line:
        """A line in the coordinates of the image as given: its crop's corners and its words'
        boxes (found in the crop unless given), mapped out of the crop and back through the
        page's quarter turns."""
        uw, uh = upright_size
        back = (-turns) % 4

        def page_box(pts: np.ndarray) -> list[list[int]]:
            return _int_box(rotate_points(pts, back, uw, uh), *size)

        found = [Word(wd.text, wd.confidence,
                      page_box(crop.to_image(np.array([[wd.box[0], wd.box[1]],
                                                       [wd.box[2], wd.box[1]],
                                                       [wd.box[2], wd.box[3]],
                                                       [wd.box[0], wd.box[3]]]))))
                 for wd in (words(crop.pixels, reading) if spans is None else spans)]
        return Line(reading.text, round(reading.confidence, 4), page_box(crop.quad),
                    tuple(found))

    def _page_flipped(self, crops: list[Crop], clock: _Clock) -> bool:
        """Is the page upside down? A length-weighted classifier vote over the widest lines;
        whenever it does not clearly say upright, recognition confidence on the widest lines
        read both ways decides (the classifier alone misreads some binarised scans as 180°)."""
        if not crops:
            return False
        aspect = np.array([c.pixels.shape[1] / max(c.pixels.shape[0], 1) for c in crops],
                          dtype=np.float32)
        widest = np.argsort(-aspect, kind="stable")[:_VOTE_SAMPLE]
        p180 = self.classifier([crops[i].pixels for i in widest])
        clock.lap("classify")
        weights = aspect[widest]
        vote = float((weights * (p180 > 0.5)).sum() / weights.sum())
        if vote < _TIE_LOW:
            return False
        # the widest lines, each cut to what one recognition pass reads: the verdict needs
        # a few words, not a 20,000 px banner read twice
        limit = self.recognizer.max_width / HEIGHT
        sample = [crops[i].pixels[:, : int(crops[i].pixels.shape[0] * limit) + 1]
                  for i in widest[:_TIE_SAMPLE]]
        upright = _mean_conf(self.recognizer(sample))
        flipped = _mean_conf(self.recognizer([rotate_image(c, 2) for c in sample]))
        return flipped > upright


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + (now - self.t) * 1000, 1)
        self.t = now


def _mean_conf(results: list[Recognition]) -> float:
    return sum(r.confidence * len(r.text) for r in results) / max(
        sum(len(r.text) for r in results), 1
    )


def _is_sideways(boxes: list[np.ndarray]) -> bool:
    """Do most text lines (by area) run vertically? Then the page is turned 90° or 270°."""
    tall = wide = 0.0
    for b in boxes:
        w, h = box_size(b)
        if h > w * _SIDEWAYS_ASPECT:
            tall += w * h
        elif w > h * _SIDEWAYS_ASPECT:
            wide += w * h
    return tall > wide


def _tight_score(r: Recognition) -> float:
    """Confidence, discounted for very short readings: text turned the wrong way is often
    read as one confident stray glyph (a CJK character, an "l"), rarely as a word."""
    n = sum(1 for c in r.chars if not c.text.isspace())
    return _discounted(r.confidence, n)


def _output_score(out: OcrOutput) -> float:
    """The same measure over all the lines of a reading, as if they were one."""
    n = _chars(out)
    conf = sum(line.confidence * len(line.text.replace(" ", "")) for line in out.lines)
    return _discounted(conf / n, n) if n else 0.0


def _discounted(confidence: float, n: int) -> float:
    return confidence * (1.0 - math.exp(-n / _SHORT))


def _chars(out: OcrOutput) -> int:
    return sum(len(line.text.replace(" ", "")) for line in out.lines)


def _visible(img: np.ndarray) -> bool:
    return float(img.std()) > _CONTRAST


def _is_tight(img: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """Is the image itself one line of text (a word crop, a single printed line)?"""
    h, w = img.shape[:2]
    if not boxes:
        return min(h, w) <= _SMALL_IMAGE and _visible(img)
    across = 0 if _is_sideways(boxes) else 1  # a vertical line fills the width instead
    rows = group_rows([b[:, ::-1] for b in boxes] if across == 0 else boxes)
    if len(rows) != 1:
        return False
    span = np.concatenate([b[:, across] for b in boxes])
    return float(span.max() - span.min()) >= _LINE_FILL * (h if across else w)


def _crop(img: np.ndarray, box: np.ndarray) -> Crop:
    crop = Crop.cut(img, box)
    ch, cw = crop.pixels.shape[:2]
    if ch >= cw * _SIDEWAYS_ASPECT:  # a vertical line inside a horizontal page
        crop = crop.turned(3)
    return crop


def _int_box(box: np.ndarray, width: int, height: int) -> list[list[int]]:
    box = np.round(box)
    box[:, 0] = np.clip(box[:, 0], 0, width)
    box[:, 1] = np.clip(box[:, 1], 0, height)
    return box.astype(int).tolist()
