"""The OCR engine: bytes → upright image → boxes → crops → text lines, on the CPU.

Pure Python over numpy, OpenCV and ONNX Runtime, with no HTTP or AWS. One ``Engine`` holds
the three sessions for the life of the process.

Decisions the engine makes from evidence it already has (no extra model):
- page orientation: box shapes say whether lines run sideways (90°/270°); the line
  classifier's length-weighted vote says 0° or 180°; when the vote is close, recognition
  confidence on the widest lines read both ways settles it;
- single-line images: a tight crop (one row of text filling the image height, or no
  detection at all on a small image) is recognised whole, as recognition-only mode would,
  instead of being cut by the detector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .classify import LineClassifier
from .config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, EngineSettings
from .ctc import load_charset
from .decode import DecodedImage, ImageInfo, decode, to_bgr8
from .detect import TextDetector
from .geometry import box_size, crop_quad, rotate_image, rotate_points
from .layout import group_rows, reading_order
from .models import CLS_FILE, DET_FILE, REC_FILE, ModelSet, create_session
from .recognize import HEIGHT, Recognition, TextRecognizer

Mode = Literal["auto", "page", "line"]

_SIDEWAYS_ASPECT = 1.5  # a box this much taller than wide is a vertical line
_LINE_FILL = 0.5  # one row whose boxes cover this share of the height: the image is a line
_SMALL_IMAGE = 200  # no detection on an image this short: still try reading it whole
_TIE_LOW = 0.3  # a classifier vote for 180° above this is checked by recognition
_TIE_SAMPLE = 6


@dataclass(frozen=True)
class Line:
    text: str
    confidence: float
    box: list[list[int]]  # 4 points, clockwise from the top-left of the text


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
        es = self.config

        boxes = [] if mode == "line" else [d.box for d in self.detector(img)]
        clock.lap("detect")
        # Lines running vertically: try the page turned 90° clockwise (detecting again, on
        # the turned page, is what makes a turned page read as well as an upright one).
        turns = 1 if _is_sideways(boxes) else 0
        upright = rotate_image(img, turns)
        boxes, crops, p180 = self._lines(upright, mode, boxes if turns == 0 else None, clock)
        if self._page_flipped(crops, p180):
            turns += 2
            upright = rotate_image(img, turns)
            boxes, crops, p180 = self._lines(upright, mode, None, clock)
        clock.lap("orient")

        results = self.recognizer(crops)
        # Lines the classifier confidently calls upside down against the page's verdict
        # (a label stuck on upside down) are read both ways; the more confident reading wins.
        odd = [i for i, p in enumerate(p180) if p > es.cls_thresh]
        if odd:
            again = self.recognizer([rotate_image(crops[i], 2) for i in odd])
            for i, alt in zip(odd, again, strict=True):
                if alt.confidence > results[i].confidence:
                    results[i] = alt
                    boxes[i] = np.roll(boxes[i], 2, axis=0)  # the text's top-left is its BR
        clock.lap("recognize")

        keep = [
            i for i, r in enumerate(results) if r.text.strip() and r.confidence >= es.text_score
        ]
        boxes = [boxes[i] for i in keep]
        results = [results[i] for i in keep]
        order = reading_order(boxes)

        uh, uw = upright.shape[:2]
        back = (-turns) % 4
        lines = [
            Line(
                text=results[i].text,
                confidence=round(results[i].confidence, 4),
                box=_int_box(rotate_points(boxes[i], back, uw, uh), w, h),
            )
            for i in order
        ]
        return OcrOutput(info, lines, rotation=(turns % 4) * 90, timings_ms=clock.laps)

    def _lines(
        self, upright: np.ndarray, mode: Mode, boxes: list[np.ndarray] | None, clock: _Clock
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Line boxes, their crops and P(180°) for an image believed upright. ``boxes`` are
        reused when the detector already ran on exactly this image."""
        uh, uw = upright.shape[:2]
        if boxes is None:
            boxes = [] if mode == "line" else [d.box for d in self.detector(upright)]
            clock.lap("detect")
        if mode == "line" or (mode == "auto" and _is_single_line(upright, boxes)):
            boxes = [np.array([[0, 0], [uw, 0], [uw, uh], [0, uh]], dtype=np.float32)]
        crops = [_crop(upright, b) for b in boxes]
        p180 = self.classifier(crops) if crops else np.zeros(0, np.float32)
        clock.lap("classify")
        return boxes, crops, p180

    def _page_flipped(self, crops: list[np.ndarray], p180: np.ndarray) -> bool:
        """Is the page upside down? A length-weighted classifier vote; whenever it does not
        clearly say upright, recognition confidence on the widest lines read both ways
        decides (the classifier alone misreads some binarised scans as 180°)."""
        if not crops:
            return False
        weights = np.array([c.shape[1] / max(c.shape[0], 1) for c in crops], dtype=np.float32)
        vote = float((weights * (p180 > 0.5)).sum() / weights.sum())
        if vote < _TIE_LOW:
            return False
        # the widest lines, each cut to what one recognition pass reads: the verdict needs
        # a few words, not a 20,000 px banner read twice
        limit = self.recognizer.max_width / HEIGHT
        sample = [crops[i][:, : int(crops[i].shape[0] * limit) + 1]
                  for i in np.argsort(-weights)[:_TIE_SAMPLE]]
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


def _is_single_line(img: np.ndarray, boxes: list[np.ndarray]) -> bool:
    h, w = img.shape[:2]
    if not boxes:
        return h <= _SMALL_IMAGE and w >= h * 0.5 and float(img.std()) > 8.0
    rows = group_rows(boxes)
    if len(rows) != 1:
        return False
    ys = np.concatenate([b[:, 1] for b in boxes])
    return float(ys.max() - ys.min()) >= _LINE_FILL * h


def _crop(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    crop = crop_quad(img, box)
    ch, cw = crop.shape[:2]
    if ch >= cw * _SIDEWAYS_ASPECT:  # a vertical line inside a horizontal page
        crop = cv2.rotate(crop, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return crop


def _int_box(box: np.ndarray, width: int, height: int) -> list[list[int]]:
    box = np.round(box)
    box[:, 0] = np.clip(box[:, 0], 0, width)
    box[:, 1] = np.clip(box[:, 1], 0, height)
    return box.astype(int).tolist()
