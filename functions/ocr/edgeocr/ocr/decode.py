"""Bytes → validated BGR pixels, entirely in memory.

Checks run cheapest first so that hostile input costs almost nothing: size, magic bytes,
then the pixel count read from the header (Pillow's lazy ``Image.open`` parses headers only),
and only then the full decode with OpenCV. Output is always 8-bit, 3-channel BGR in the
orientation the EXIF tag asks for, with transparency flattened onto white.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..errors import TooLarge, UnreadableImage, UnsupportedFormat, reason

# We enforce our own pixel limit before decoding; Pillow's global bomb check would only
# duplicate it with a different threshold.
Image.MAX_IMAGE_PIXELS = None

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
_PIL_FORMATS = {
    "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP",
}
SUPPORTED = tuple(sorted(_PIL_FORMATS))
_PILLOW_FALLBACK = ("gif", "tiff")  # no GIF codec in OpenCV; TIFF layouts it does not read

# EXIF orientation → the OpenCV operations that make the image upright.
_ORIENT: dict[int, tuple[int | None, int | None]] = {
    # tag: (flip code or None, rotate code or None), flip applied first
    2: (1, None),
    3: (None, cv2.ROTATE_180),
    4: (0, None),
    5: (1, cv2.ROTATE_90_COUNTERCLOCKWISE),
    6: (None, cv2.ROTATE_90_CLOCKWISE),
    7: (1, cv2.ROTATE_90_CLOCKWISE),
    8: (None, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    bytes: int


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # H x W x 3, uint8, BGR, upright
    info: ImageInfo


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def decode(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Validate and decode an uploaded image. Raises an ``InputError`` subclass on bad input."""
    if not data:
        raise UnreadableImage("the image is empty", code="empty_body")
    if len(data) > max_bytes:
        raise TooLarge(
            f"the image is {len(data)} bytes; the limit is {max_bytes}", code="too_many_bytes"
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat(f"not an image type we read; supported: {', '.join(SUPPORTED)}")

    width, height, orientation = _probe(data, fmt)
    if width * height > max_pixels:
        raise TooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            code="too_many_pixels",
        )

    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. a side over OpenCV's 2^20 limit in a tiny crafted header
        pixels = None
    if pixels is None or pixels.size == 0:
        if fmt not in _PILLOW_FALLBACK:
            # OpenCV reads these formats fully; if it fails the data is damaged, and Pillow
            # would quietly fill missing rows (and skip PNG checksums) instead of refusing.
            raise UnreadableImage(f"cannot decode the {fmt} data", code="corrupt_image")
        pixels = _decode_with_pillow(data)
    if pixels.shape[0] != height or pixels.shape[1] != width:
        raise UnreadableImage("the image data does not match its header", code="corrupt_image")
    # TIFF decoders (OpenCV's and Pillow's alike) apply the orientation tag themselves
    pixels = to_bgr8(pixels) if fmt == "tiff" else _orient(to_bgr8(pixels), orientation)
    h, w = pixels.shape[:2]
    return DecodedImage(pixels, ImageInfo(width=w, height=h, format=fmt, bytes=len(data)))


def _probe(data: bytes, fmt: str) -> tuple[int, int, int]:
    """Width, height and EXIF orientation from the header, without decoding pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as im:
                width, height = im.size
                try:
                    orientation = int(im.getexif().get(0x0112, 1))
                except Exception:  # a broken EXIF block is not worth refusing the image for
                    orientation = 1
    except Exception as exc:  # Pillow's parsers raise KeyError, IndexError… on hostile headers
        raise UnreadableImage(f"cannot read the {fmt} header: {reason(exc)}",
                              code="corrupt_image") from exc
    if width <= 0 or height <= 0:
        raise UnreadableImage("the image has no pixels", code="corrupt_image")
    return width, height, orientation if orientation in _ORIENT else 1


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)  # first frame of an animation / first page
            rgba = np.asarray(im.convert("RGBA"))
    except Exception as exc:  # as above: damaged data is bad input, whatever Pillow raises
        raise UnreadableImage(f"cannot decode the image: {reason(exc)}",
                              code="corrupt_image") from exc
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any decoded array (gray, gray+alpha, BGR, BGRA; 8/16-bit or float) → 8-bit BGR."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR), img[:, :, 1]
        return _flatten(*img)
    if channels == 4:
        return _flatten(img[:, :, :3], img[:, :, 3])
    return img


def _flatten(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite onto white, or onto black when the visible ink is light.

    White is the right page for dark ink, but white text on a transparent background (logos,
    captions cut from video) would vanish on white, so the background is chosen to contrast
    with the alpha-weighted mean luminance of what is visible.
    """
    if alpha.min() == 255:
        return np.ascontiguousarray(bgr)
    a = alpha.astype(np.float32) / 255.0
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    ink = float((gray * a).sum() / max(float(a.sum()), 1e-6))
    background = 0.0 if ink >= 128 else 255.0
    out = bgr.astype(np.float32) * a[:, :, None] + background * (1.0 - a[:, :, None])
    return out.round().astype(np.uint8)


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    flip, rotate = _ORIENT.get(orientation, (None, None))
    if flip is not None:
        img = cv2.flip(img, flip)
    if rotate is not None:
        img = cv2.rotate(img, rotate)
    return img
