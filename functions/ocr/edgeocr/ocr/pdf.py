"""PDF pages through PDFium (pypdfium2): count and sizes at open, one page at a time after.

A page whose text objects are visible is born digital: its text layer is read instead of its
pixels (exact, and a few ms instead of seconds of OCR), and only a small preview is rendered.
A page whose only text is invisible (render mode 3: another tool's OCR layer, not trusted) or
that has no text is rendered at ``Limits.pdf_dpi``, lowered to fit ``max_pixels``.

PDFium is not thread-safe. Every call into it, pypdfium2's helpers included, holds ``_LOCK``,
and every handle is closed explicitly under it, so that no finalizer calls PDFium later from
whichever thread drops the last reference. That is why a ``PdfDocument`` must be closed (use
it as a context manager): pypdfium2's finalizer would close it without the lock.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ..errors import EncryptedDocument, PageError, TooLarge, UnreadableDocument, reason
from .layout import reading_order
from .pages import Document, Limits, Page, TextLine, make_thumbnail, thumbnail_size
from .words import is_cjk

_LOCK = threading.Lock()  # one per process: PDFium has global state
_POINTS_PER_INCH = 72
_WHITE = 0xFFFFFFFF
_SCAN_COVER = 0.9  # an image over this share of the page, alone on it, makes the page a scan
_SUBPIXEL = 16
_LINE_BREAKS = frozenset({0x0A, 0x0D})
_HYPHENS = frozenset({0x02, 0xFFFE})  # PDFium's mark for a hyphen that splits a word at line end
_INVISIBLE = pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE  # render mode 3: an OCR layer
_PASSWORD_ERRORS = frozenset({pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY})

Points = tuple[float, float]


def open_pdf(data: bytes, limits: Limits) -> PdfDocument:
    """Open a PDF and check its page count and every page's size (no page is loaded)."""
    with _LOCK:
        pdf = _load(data)
        try:
            count = len(pdf)
            if count > limits.max_pages:
                raise TooLarge(
                    f"the document has {count} pages; the limit is {limits.max_pages}",
                    code="too_many_pages",
                )
            for index in range(count):
                points = _size_by_index(pdf, index)
                if points is not None:
                    fit_dpi(points, limits, index + 1)
        except BaseException:
            pdf.close()
            raise
    return PdfDocument(pdf, data, count, limits)


def fit_dpi(points: Points, limits: Limits, number: int = 1) -> int:
    """``limits.pdf_dpi``, lowered (to an integer) until the page fits ``max_pixels``; a page
    that would need less than ``min_pdf_dpi`` is refused (it would be unreadable anyway)."""
    dpi = limits.pdf_dpi
    if _area(points, dpi) > limits.max_pixels:
        width, height = points
        dpi = min(dpi, int(_POINTS_PER_INCH * math.sqrt(limits.max_pixels / (width * height))))
        while dpi > 0 and _area(points, dpi) > limits.max_pixels:
            dpi -= 1
    floor = min(limits.min_pdf_dpi, limits.pdf_dpi)
    if dpi < floor:
        (w, h), inches = pixel_size(points, floor), [p / _POINTS_PER_INCH for p in points]
        raise TooLarge(
            f"page {number} is {inches[0]:.0f}x{inches[1]:.0f} inches: {w}x{h} = {w * h} "
            f"pixels at {floor} dpi; the limit is {limits.max_pixels}",
            code="too_many_pixels",
        )
    return dpi


def pixel_size(points: Points, dpi: float) -> tuple[int, int]:
    """The page's size in pixels at ``dpi``, rounded (PDFium's own helper rounds up)."""
    scale = dpi / _POINTS_PER_INCH
    return max(1, round(points[0] * scale)), max(1, round(points[1] * scale))


def _area(points: Points, dpi: float) -> int:
    w, h = pixel_size(points, dpi)
    return w * h


@dataclass
class _Content:
    points: Points
    dpi: int
    width: int
    height: int
    pixels: np.ndarray | None
    text_lines: list[TextLine] | None
    preview: np.ndarray | None  # a thumbnail-sized render of a text page


class PdfDocument(Document):
    def __init__(self, pdf: pdfium.PdfDocument, data: bytes, count: int, limits: Limits) -> None:
        super().__init__("pdf", len(data), count)
        self._pdf: pdfium.PdfDocument | None = pdf
        self._data = data  # PDFium reads pages from this buffer as they are loaded
        self._limits = limits

    def _read(self, number: int) -> Page:
        with _LOCK:
            if self._pdf is None:
                raise ValueError("the document is closed")
            c = _read_page(self._pdf, number, self._limits)
        # encoding the thumbnail needs no PDFium: other threads may render meanwhile
        thumbnail = make_thumbnail(c.pixels if c.pixels is not None else c.preview)
        return Page(number, c.width, c.height, c.pixels, c.text_lines, thumbnail,
                    dpi=c.dpi, points=c.points)

    def close(self) -> None:
        with _LOCK:
            if self._pdf is not None:
                self._pdf.close()
                self._pdf = None


def _load(data: bytes) -> pdfium.PdfDocument:
    """Open through the raw call: PDFium's last-error code is only meaningful right after a
    failed load (pypdfium2 also reads it after a load that worked but found no pages, when it
    is a stale code from some earlier failure)."""
    raw = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    if not raw:
        code = pdfium_c.FPDF_GetLastError()
        if code in _PASSWORD_ERRORS:
            raise EncryptedDocument("the PDF is encrypted: it needs a password")
        reason = pdfium.internal.ErrorToStr.get(code, "unknown error").lower()
        raise UnreadableDocument(f"cannot open the PDF: {reason}")
    pdf = pdfium.PdfDocument(raw)  # reads `data` in place: the caller keeps it alive
    if len(pdf) < 1:
        pdf.close()
        raise UnreadableDocument("the PDF has no pages")
    return pdf


def _size_by_index(pdf: pdfium.PdfDocument, index: int) -> Points | None:
    """The page's displayed size (after /Rotate) in points, or None when PDFium cannot tell
    without loading the page (then that page fails on its own, later)."""
    try:
        w, h = pdf.get_page_size(index)
    except pdfium.PdfiumError:
        return None
    return (w, h) if w > 0 and h > 0 else None


def _read_page(pdf: pdfium.PdfDocument, number: int, limits: Limits) -> _Content:
    try:
        page = pdf[number - 1]
    except pdfium.PdfiumError as exc:
        raise PageError(f"page {number} cannot be loaded: {reason(exc)}") from exc
    try:
        return _page_content(page, number, limits)
    except pdfium.PdfiumError as exc:
        raise PageError(f"page {number} cannot be read: {reason(exc)}") from exc
    finally:
        page.close()


def _page_content(page: pdfium.PdfPage, number: int, limits: Limits) -> _Content:
    points = page.get_size()
    if not (points[0] > 0 and points[1] > 0):
        raise PageError(f"page {number} has no area")
    try:
        dpi = fit_dpi(points, limits, number)
    except TooLarge as exc:  # only when the size PDFium gave at open was not this one
        raise PageError(exc.message) from exc
    width, height = pixel_size(points, dpi)
    lines = _text_lines(page, width, height)
    if lines is None:
        native = _scan_dpi(page, points, limits)
        if native is not None:  # a scan: read it at its own pixels, as the image alone reads
            width, height = pixel_size(points, native)
            dpi = round(native)
        return _Content(points, dpi, width, height, _render(page, width, height), None, None)
    preview = _render(page, *thumbnail_size(width, height))
    return _Content(points, dpi, width, height, None, lines, preview)


def _scan_dpi(page: pdfium.PdfPage, points: Points, limits: Limits) -> float | None:
    """The resolution of the one image a scanned page is made of (DESIGN §3: such a page may
    be read at its image's own resolution), when that image covers the page and nothing but
    text (an invisible OCR layer) is drawn beside it; None otherwise, or when the image's own
    pixels would pass ``max_pixels``. Reading a scan at its pixels reads it exactly as the
    image alone would, where a fixed dpi would resample it first."""
    images, others = [], 0
    for obj in page.get_objects(max_depth=1):
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            images.append(obj)
        elif obj.type != pdfium_c.FPDF_PAGEOBJ_TEXT:
            others += 1
    if len(images) != 1 or others:
        return None
    left, bottom, right, top = images[0].get_bounds()
    covered = max(0.0, right - left) * max(0.0, top - bottom)
    if covered < _SCAN_COVER * points[0] * points[1]:
        return None
    px_w, px_h = images[0].get_px_size()
    dpi = _POINTS_PER_INCH * math.sqrt(px_w * px_h / covered)  # whatever the image's turn
    if not dpi > 0 or _area(points, dpi) > limits.max_pixels:
        return None
    return dpi


def _render(page: pdfium.PdfPage, width: int, height: int) -> np.ndarray:
    """The page at exactly ``width`` x ``height`` (its /Rotate applied), BGR on white, drawn
    straight into the array that is returned (no copy)."""
    pixels = np.empty((height, width, 3), np.uint8)
    bitmap = pdfium_c.FPDFBitmap_CreateEx(
        width, height, pdfium_c.FPDFBitmap_BGR, pixels.ctypes.data_as(ctypes.c_void_p), width * 3
    )
    if not bitmap:
        raise PageError(f"cannot allocate a {width}x{height} page")
    try:
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, _WHITE)
        pdfium_c.FPDF_RenderPageBitmap(bitmap, page.raw, 0, 0, width, height, 0,
                                       pdfium_c.FPDF_ANNOT)
    finally:
        pdfium_c.FPDFBitmap_Destroy(bitmap)
    return pixels


def _text_objects(page: pdfium.PdfPage) -> tuple[bool, set[int]]:
    """Whether any text object on the page is visible, and the addresses of those that are
    not (render mode 3), whose characters are left out of the text."""
    visible, invisible = False, set()
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_TEXT]):
        if pdfium_c.FPDFTextObj_GetTextRenderMode(obj.raw) == _INVISIBLE:
            invisible.add(_address(obj.raw))
        else:
            visible = True
    return visible, invisible


def _address(handle: object) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def _text_lines(page: pdfium.PdfPage, width: int, height: int) -> list[TextLine] | None:
    """The page's visible text as lines in reading order, boxes in the pixel grid of the page
    rendered at ``width`` x ``height``; None when the page has no visible text."""
    visible, invisible = _text_objects(page)
    if not visible:
        return None
    textpage = page.get_textpage()
    try:
        raw_lines = _read_chars(textpage.raw, invisible)
    finally:
        textpage.close()
    lines = [TextLine(text, _device_box(page, rect, width, height),
                      tuple((w, _device_box(page, r, width, height)) for w, r in words))
             for text, rect, words in raw_lines]
    order = reading_order([np.array(line.box, np.float32) for line in lines])
    return [lines[i] for i in order]


Rect = list[float]  # left, bottom, right, top in PDF page space


def _read_chars(textpage: object,
                invisible: set[int]) -> list[tuple[str, Rect, list[tuple[str, Rect]]]]:
    """Lines of words from PDFium's character stream: each line's text, rectangle and words
    with theirs. PDFium marks line ends (generated CR LF) and word gaps (generated spaces)
    itself; a hyphen that splits a word ends its line too (PDFium joins the two halves
    without a break). A CJK character is a word of its own, as in OCR'd lines."""
    lines: list[tuple[str, Rect, list[tuple[str, Rect]]]] = []
    words: list[tuple[str, Rect]] = []
    word: list[str] = []
    rect: Rect | None = None
    word_rect: Rect | None = None
    box = pdfium_c.FS_RECTF()

    def end_word() -> None:
        nonlocal word_rect
        if word and word_rect is not None:
            words.append(("".join(word), word_rect))
        word.clear()
        word_rect = None

    def end_line() -> None:
        nonlocal rect
        end_word()
        if words and rect is not None:
            text = ""
            for k, (w, _) in enumerate(words):
                joined = k == 0 or (is_cjk(w) and is_cjk(words[k - 1][0]))
                text += ("" if joined else " ") + w
            lines.append((text, rect, list(words)))
        words.clear()
        rect = None

    for i in range(pdfium_c.FPDFText_CountChars(textpage)):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i)
        if code in _LINE_BREAKS:
            end_line()
            continue
        hyphen = code in _HYPHENS
        if not hyphen and (code < 0x20 or chr(code).isspace()):
            end_word()
            continue
        if invisible and _address(pdfium_c.FPDFText_GetTextObject(textpage, i)) in invisible:
            continue
        ch = "-" if hyphen else chr(code)
        if is_cjk(ch):
            end_word()
        word.append(ch)
        if pdfium_c.FPDFText_GetLooseCharBox(textpage, i, box):
            rect = _union(rect, [box.left, box.bottom, box.right, box.top])
            word_rect = _union(word_rect, [box.left, box.bottom, box.right, box.top])
        if hyphen:
            end_line()
        elif is_cjk(ch):
            end_word()
    end_line()
    return lines


def _union(a: Rect | None, b: Rect) -> Rect:
    if a is None:
        return b
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _device_box(page: pdfium.PdfPage, rect: Rect, width: int, height: int) -> list[list[int]]:
    """A page-space rectangle as 4 pixel corners, clockwise from the top-left, through the
    transform rendering uses (page box origin, y axis flipped, /Rotate). PDFium rounds to
    whole device pixels, so it maps onto a grid ``_SUBPIXEL`` times finer, and the box is
    widened outwards to whole pixels from there."""
    xs, ys = [], []
    for x, y in ((rect[0], rect[1]), (rect[2], rect[3])):
        dx, dy = ctypes.c_int(), ctypes.c_int()
        pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, width * _SUBPIXEL, height * _SUBPIXEL, 0,
                                   x, y, dx, dy)
        xs.append(dx.value / _SUBPIXEL)
        ys.append(dy.value / _SUBPIXEL)
    x0, x1 = max(math.floor(min(xs)), 0), min(math.ceil(max(xs)), width)
    y0, y1 = max(math.floor(min(ys)), 0), min(math.ceil(max(ys)), height)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
