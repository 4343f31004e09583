"""Bytes → pages: an image (one page), the pages of a TIFF, or the pages of a PDF.

``open_document`` refuses bad input before any page is decoded or rendered, from what is cheap
to know: the size, the magic bytes, the page count and each page's pixel count from headers (a
5,000-page file or a page bomb costs milliseconds). Pages are then read one at a time, on
demand, so memory holds one page however long the document. Single images (a one-page TIFF
too) are decoded at open by ``decode()`` itself, so that they are refused exactly as before,
and before any model loads. PDFs are in ``pdf.py``; PDFium is imported only for a PDF.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..errors import InputError, PageError, TooLarge, UnreadableImage, UnsupportedFormat, reason
from .config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from .decode import SUPPORTED, DecodedImage, decode, sniff_format, to_bgr8

DEFAULT_MAX_PAGES = 2000
THUMBNAIL_SIDE = 320  # long side, px
THUMBNAIL_QUALITY = 80
PDF_MAGIC = b"%PDF-"
PDF_MAGIC_WINDOW = 1024  # readers accept junk before the header; so do we, this far


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS  # per page
    max_pages: int = DEFAULT_MAX_PAGES
    pdf_dpi: int = 200
    min_pdf_dpi: int = 72  # a PDF page that fits max_pixels only below this is refused


@dataclass(frozen=True)
class TextLine:
    """A line from a PDF's own text layer."""

    text: str
    box: list[list[int]]  # 4 points clockwise from the top-left, in the page rendered at its dpi
    words: tuple[tuple[str, list[list[int]]], ...] = ()  # each word's text and box, likewise


@dataclass
class Page:
    number: int  # 1-based
    width: int  # pixels as read: an image after EXIF orientation, a PDF page at `dpi`
    height: int
    pixels: np.ndarray | None  # H x W x 3 uint8 BGR to OCR; None for a text-layer page
    text_lines: list[TextLine] | None  # set (maybe []) only for born-digital PDF pages
    thumbnail: bytes  # JPEG, long side THUMBNAIL_SIDE (never upscaled)
    dpi: int | None = None  # PDF pages only
    points: tuple[float, float] | None = None  # PDF pages only: size in PDF points (w, h)


class Document:
    """An opened document whose pages are read on demand. A context manager: ``close()``
    releases what the reader holds (PDFium's document)."""

    def __init__(self, fmt: str, size: int, page_count: int) -> None:
        self.format = fmt
        self.bytes = size
        self.page_count = page_count

    def page(self, number: int) -> Page:
        """Decode or render page ``number`` (1-based). A page that cannot be read raises
        ``PageError``; the document's other pages are unaffected."""
        if not 1 <= number <= self.page_count:
            raise IndexError(f"page {number} of a {self.page_count}-page document")
        return self._read(number)

    def _read(self, number: int) -> Page:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release unless a subclass holds a handle."""

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_document(data: bytes, limits: Limits) -> Document:
    """Validate ``data`` cheaply and open it; raises an ``InputError`` subclass on bad input."""
    if not data:
        raise UnreadableImage("the file is empty", code="empty_body")
    if len(data) > limits.max_bytes:
        raise TooLarge(
            f"the file is {len(data)} bytes; the limit is {limits.max_bytes}",
            code="too_many_bytes",
        )
    fmt = sniff_format(data)  # an image's magic at offset 0 wins over a "%PDF" further in
    if fmt is None and PDF_MAGIC in data[:PDF_MAGIC_WINDOW]:
        from .pdf import open_pdf  # PDFium loads only for PDFs

        return open_pdf(data, limits)
    if fmt is None:
        raise UnsupportedFormat(
            f"not a type we read; supported: {', '.join(sorted({*SUPPORTED, 'pdf'}))}"
        )
    if fmt == "tiff":
        frames = _tiff_frames(data, limits)
        if len(frames) > 1:
            return _TiffDocument(data, frames)
    decoded = decode(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    return _ImageDocument(decoded)


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The thumbnail's size for a page of ``width`` x ``height``: long side 320, or less when
    the page is smaller (never upscaled)."""
    scale = min(1.0, THUMBNAIL_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def make_thumbnail(bgr: np.ndarray) -> bytes:
    """A JPEG preview of a BGR page (INTER_AREA averages, so text thins out rather than
    aliasing)."""
    h, w = bgr.shape[:2]
    size = thumbnail_size(w, h)
    if size != (w, h):
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any non-empty 8-bit BGR array
        raise ValueError("cannot encode the thumbnail")
    return buf.tobytes()


class _ImageDocument(Document):
    """One image, decoded at open."""

    def __init__(self, decoded: DecodedImage) -> None:
        super().__init__(decoded.info.format, decoded.info.bytes, 1)
        self._pixels = decoded.pixels

    def _read(self, number: int) -> Page:
        h, w = self._pixels.shape[:2]
        return Page(number, w, h, self._pixels, None, make_thumbnail(self._pixels))


@dataclass(frozen=True)
class _Frame:
    """A TIFF page's size as read: both OpenCV and Pillow apply its orientation tag."""

    width: int
    height: int


class _TiffDocument(Document):
    """A multi-page TIFF: each page decoded on demand, by ``decode()``'s decoders and
    conversions."""

    def __init__(self, data: bytes, frames: list[_Frame]) -> None:
        super().__init__("tiff", len(data), len(frames))
        self._data = data
        self._frames = frames

    def _read(self, number: int) -> Page:
        pixels = _decode_tiff_page(self._data, number - 1, self._frames[number - 1])
        h, w = pixels.shape[:2]
        return Page(number, w, h, pixels, None, make_thumbnail(pixels))


def _tiff_frames(data: bytes, limits: Limits) -> list[_Frame]:
    """Every page's size from its header, refusing a page bomb or too many pages as soon as
    one is seen (nothing is decoded, nothing large allocated)."""
    frames: list[_Frame] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=["TIFF"]) as im:
                while True:
                    frames.append(_frame(im, len(frames) + 1, limits))
                    try:
                        im.seek(len(frames))
                    except EOFError:
                        return frames
    except InputError:
        raise
    except Exception as exc:  # Pillow's TIFF parser raises KeyError, IndexError… on bad IFDs
        raise UnreadableImage(f"cannot read the tiff header: {reason(exc)}",
                              code="corrupt_image") from exc


def _frame(im: Image.Image, number: int, limits: Limits) -> _Frame:
    if number > limits.max_pages:
        raise TooLarge(
            f"the document has over {limits.max_pages} pages; the limit is {limits.max_pages}",
            code="too_many_pages",
        )
    width, height = im.size
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"page {number} has no pixels", code="corrupt_image")
    if width * height > limits.max_pixels:
        raise TooLarge(
            f"page {number} is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels}",
            code="too_many_pixels",
        )
    return _Frame(width, height)


def _decode_tiff_page(data: bytes, index: int, frame: _Frame) -> np.ndarray:
    """OpenCV first (as ``decode()``), Pillow for layouts OpenCV does not read; either way the
    result must match the header that was checked at open."""
    size = (frame.height, frame.width)
    try:
        ok, mats = cv2.imdecodemulti(
            np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED, range=(index, index + 1)
        )
    except cv2.error:
        ok, mats = False, ()
    pixels = mats[0] if ok and mats and mats[0].shape[:2] == size else _pillow_page(data, index)
    if pixels.shape[:2] != size:
        raise PageError(f"page {index + 1}: the data does not match its header")
    return to_bgr8(pixels)


def _pillow_page(data: bytes, index: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=["TIFF"]) as im:
                im.seek(index)
                rgba = np.asarray(im.convert("RGBA"))
    except Exception as exc:  # whatever a damaged page makes Pillow raise: that page's error
        raise PageError(f"page {index + 1}: cannot decode it: {reason(exc)}") from exc
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
