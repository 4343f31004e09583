"""Quadrilateral geometry on top of OpenCV: box ordering, DB unclip, line crops, rotations.

Boxes are float32 arrays of shape (4, 2), points clockwise from the top-left of the text.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def order_clockwise(pts: np.ndarray) -> np.ndarray:
    """Order 4 points top-left, top-right, bottom-right, bottom-left (image axes)."""
    pts = np.asarray(pts, dtype=np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def min_area_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle around ``points``, ordered, and its short side."""
    rect = cv2.minAreaRect(np.asarray(points, dtype=np.float32).reshape(-1, 1, 2))
    return order_clockwise(cv2.boxPoints(rect)), float(min(rect[1]))


def unclip(box: np.ndarray, ratio: float) -> tuple[np.ndarray, float]:
    """DB's unclip for a rectangle: offset every side by area * ratio / perimeter.

    DB shrinks text regions by exactly this distance during training. For a rectangle the
    rounded polygon offset (pyclipper in the reference code) has as its minimum-area
    rectangle the rectangle grown by the distance on each side, so OpenCV alone suffices.
    """
    (cx, cy), (w, h), angle = cv2.minAreaRect(box.reshape(-1, 1, 2).astype(np.float32))
    if w <= 0 or h <= 0:
        return box, 0.0
    distance = w * h * ratio / (2.0 * (w + h))
    grown = ((cx, cy), (w + 2 * distance, h + 2 * distance), angle)
    return order_clockwise(cv2.boxPoints(grown)), float(min(w, h) + 2 * distance)


def box_size(box: np.ndarray) -> tuple[float, float]:
    """Width (along the top edge) and height (along the left edge) of an ordered box."""
    w = max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[3] - box[2]))
    h = max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2]))
    return float(w), float(h)


_WARP_MAX = 32_000  # OpenCV's remap needs both images under 32767 px a side


def crop_quad(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Rectify the quadrilateral ``box`` (text reading left to right along its top edge).

    Only the box's bounding rectangle (plus a margin for the interpolation) is warped: it
    is cheaper, and it keeps very large images within OpenCV's limits. A line longer than
    those limits is rectified at a proportionally smaller size.
    """
    w, h = box_size(box)
    scale = min(1.0, _WARP_MAX / max(w, h, 1.0))
    w, h = max(round(w * scale), 1), max(round(h * scale), 1)
    x0, y0 = (int(v) for v in np.maximum(np.floor(box.min(axis=0)) - 3, 0))
    x1, y1 = (int(v) for v in np.ceil(box.max(axis=0)) + 4)
    roi = img[y0:y1, x0:x1]
    src = box - np.array([x0, y0], dtype=np.float32)
    if max(roi.shape[:2]) > _WARP_MAX:
        f = _WARP_MAX / max(roi.shape[:2])
        roi = cv2.resize(roi, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        src = src * f
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    return cv2.warpPerspective(
        roi, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def rotate_image(img: np.ndarray, quarter_turns: int) -> np.ndarray:
    """Rotate clockwise by 90° × ``quarter_turns``."""
    k = quarter_turns % 4
    if k == 0:
        return img
    code = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)[k - 1]
    return cv2.rotate(img, code)


def rotate_points(pts: np.ndarray, quarter_turns: int, width: int, height: int) -> np.ndarray:
    """Map points of a ``width`` x ``height`` image into the image rotated clockwise by
    90° × ``quarter_turns`` (pixel-edge coordinates, so boxes stay inside the image)."""
    k = quarter_turns % 4
    x, y = pts[..., 0], pts[..., 1]
    if k == 0:
        out = np.stack([x, y], axis=-1)
    elif k == 1:
        out = np.stack([height - y, x], axis=-1)
    elif k == 2:
        out = np.stack([width - x, height - y], axis=-1)
    else:
        out = np.stack([y, width - x], axis=-1)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Crop:
    """A rectified line and where it came from: its corners (top-left, top-right,
    bottom-right, bottom-left of the crop, which is the text's own reading frame) as points
    of the image it was cut from. Turning a crop rolls its corners, so any point of any crop,
    however it was turned to be read, maps back into the image."""

    pixels: np.ndarray
    quad: np.ndarray  # (4, 2) float32

    @classmethod
    def whole(cls, img: np.ndarray) -> Crop:
        h, w = img.shape[:2]
        return cls(img, np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32))

    @classmethod
    def cut(cls, img: np.ndarray, box: np.ndarray) -> Crop:
        return cls(crop_quad(img, box), np.asarray(box, dtype=np.float32))

    def turned(self, quarter_turns: int) -> Crop:
        """The crop turned clockwise by 90° × ``quarter_turns``."""
        k = quarter_turns % 4
        return Crop(rotate_image(self.pixels, k), np.roll(self.quad, k, axis=0))

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Points of the crop (pixel-edge coordinates) as points of the image."""
        h, w = self.pixels.shape[:2]
        rect = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        m = cv2.getPerspectiveTransform(rect, self.quad.astype(np.float32))
        pts = np.asarray(pts, dtype=np.float32).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, m).reshape(-1, 2)
