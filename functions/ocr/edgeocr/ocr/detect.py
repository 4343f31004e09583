"""DB (differentiable binarisation) text detection: image → text boxes with scores.

Input size policy: the longer side is scaled to ``max_side`` (portrait and square images) or
``max_side_wide`` (landscape), down for large images and up by at most ``max_upscale`` for
small ones (small text on a small poster needs the pixels). The common "shorter side ≥ 736"
policy makes tall receipts enormous; on the SROIE receipts max-side 960 is as accurate at
two thirds of the CPU time (DESIGN §3). Landscape photos (IC15 scenes, 1280x720) carry
small words that 960 loses: 1312 (what 736 on the short side gives there) raised F1 from
0.520 to 0.560 on the 25 dev scenes, and costs nothing on portrait documents.

Upscaling is paid only where the text needs it: an image that would be enlarged is first
detected at its own size, and enlarged only when a line found there is short (a small
poster's small print: where some print is small, more of it was missed). A 640x480 page of
20 px print read at 2x cost four times the pixels for the same boxes (Tesseract's
phototest; the rendered zh pages read as well or better at their own size).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import box_size, min_area_box, order_clockwise, unclip

_MIN_SIDE = 3
_COARSE = 0.5  # the retry scale when nothing was found
_COARSE_MIN = 640  # no retry for inputs already this small
_MAX_CANDIDATES = 1000
_SMALL_TEXT = 22  # a line box this short (text about 12 px) found at native size: enlarge


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # (4, 2) float32, image coordinates, ordered clockwise from top-left
    score: float


class TextDetector:
    def __init__(
        self,
        session,
        *,
        max_side: int = 960,
        max_side_wide: int = 1312,
        max_upscale: float = 2.0,
        thresh: float = 0.3,
        box_thresh: float = 0.5,
        unclip_ratio: float = 1.6,
    ) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.max_side = max_side
        self.max_side_wide = max_side_wide
        self.max_upscale = max_upscale
        self.thresh = thresh
        self.box_thresh = box_thresh
        self.unclip_ratio = unclip_ratio
        self._kernel = np.ones((2, 2), np.uint8)

    def scale(self, height: int, width: int) -> float:
        """The working scale: longer side to ``max_side`` (``max_side_wide`` landscape)."""
        limit = self.max_side_wide if width > height else self.max_side
        return min(self.max_upscale, limit / max(height, width))

    def input_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """Network input (height, width) at ``scale``, both multiples of 32."""
        return (
            max(32, round(height * scale / 32) * 32),
            max(32, round(width * scale / 32) * 32),
        )

    def __call__(self, img: np.ndarray) -> list[Detection]:
        h, w = img.shape[:2]
        scale = self.scale(h, w)
        if scale > 1.0:
            found = self._detect(img, 1.0)
            if found and min(min(box_size(d.box)) for d in found) >= _SMALL_TEXT:
                return found
        found = self._detect(img, scale)
        if not found and max(self.input_size(h, w, scale)) > _COARSE_MIN:
            # Nothing at the working scale: letters far taller than DB's receptive field (a
            # poster, a 300 px "TEST") only show up coarser. A quarter of the cost, and only
            # paid when the page looked empty.
            found = self._detect(img, scale * _COARSE)
        return found

    def _detect(self, img: np.ndarray, scale: float) -> list[Detection]:
        h, w = img.shape[:2]
        in_h, in_w = self.input_size(h, w, scale)
        resized = cv2.resize(img, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
        x = resized.astype(np.float32)
        x *= 2.0 / 255.0
        x -= 1.0
        x = x.transpose(2, 0, 1)[None]
        prob = self.session.run(None, {self.input_name: x})[0][0, 0]
        return self.postprocess(prob, h, w)

    def postprocess(self, prob: np.ndarray, height: int, width: int) -> list[Detection]:
        """Probability map → boxes in the coordinates of a ``width`` x ``height`` image."""
        mask = cv2.dilate((prob > self.thresh).astype(np.uint8), self._kernel)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        ph, pw = prob.shape
        sx, sy = width / pw, height / ph
        out: list[Detection] = []
        for contour in contours[:_MAX_CANDIDATES]:
            box, short = min_area_box(contour)
            if short < _MIN_SIDE:
                continue
            score = _mean_inside(prob, box)
            if score < self.box_thresh:
                continue
            box, short = unclip(box, self.unclip_ratio)
            if short < _MIN_SIDE + 2:
                continue
            box = box * np.array([sx, sy], dtype=np.float32)
            box[:, 0] = np.clip(np.round(box[:, 0]), 0, width)
            box[:, 1] = np.clip(np.round(box[:, 1]), 0, height)
            box = order_clockwise(box)
            if np.linalg.norm(box[0] - box[1]) <= 3 or np.linalg.norm(box[0] - box[3]) <= 3:
                continue
            out.append(Detection(box, score))
        return out


def _mean_inside(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside ``box`` (DB's "fast" box score)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(box - np.array([x0, y0], dtype=np.float32)).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])
