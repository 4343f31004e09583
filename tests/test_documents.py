"""bytes → pages (edgeocr.ocr.pages, .pdf): images, multi-page TIFFs and PDFs, built from the
eval images and from PDFs that Debian ships (tests/docs.py says how each is made)."""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image, ImageOps

import docs
from edgeocr.errors import (
    EncryptedDocument,
    InputError,
    PageError,
    TooLarge,
    UnreadableDocument,
    UnreadableImage,
    UnsupportedFormat,
)
from edgeocr.ocr.decode import decode
from edgeocr.ocr.pages import Limits, make_thumbnail, open_document
from scoring import bow_count, normalise

LIMITS = Limits()
BIG = Limits(max_bytes=200 * 1024 * 1024)
FAST_S = 0.5  # a refusal costs no rendering: far under this
TEXT_PAGE_MS = 50


def decoded(data: bytes) -> np.ndarray:
    return decode(data, max_bytes=BIG.max_bytes, max_pixels=10**9).pixels


def jpeg_size(data: bytes) -> tuple[int, int]:
    assert data[:3] == b"\xff\xd8\xff"
    h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return w, h


@pytest.fixture(scope="module")
def receipts(eval_dir, manifest) -> list[bytes]:
    return [(eval_dir / f).read_bytes() for f in docs.eval_files(manifest, "receipts_sroie", 3)]


@pytest.fixture(scope="module")
def tess_pages(eval_dir, manifest) -> list[bytes]:
    """phototest.tif and eurotext.tif: 1-bit scans (the .png is the same page turned)."""
    files = [f for f in docs.eval_files(manifest, "en_pages_tesseract", 4) if "rotated" not in f]
    return [(eval_dir / f).read_bytes() for f in files[:2]]


@pytest.fixture(scope="module")
def receipt_pdf(receipts) -> bytes:
    """A receipt on a US letter page, as a scanner's PDF would hold it."""
    return docs.image_pdf(receipts[:1], page_size=(612, 792))


@pytest.fixture(scope="module")
def shipped() -> dict[str, Path]:
    """The shipped PDFs on this machine: libtasn1-doc's always (`make doc-tools` installs
    it), shared-mime-info's where the Debian release still ships its spec as a PDF."""
    present = {name: path for name, path in docs.SHIPPED_PDFS.items() if path.is_file()}
    if docs.REQUIRED_PDF not in present:
        pytest.fail(f"{docs.SHIPPED_PDFS[docs.REQUIRED_PDF]} is missing: run `make doc-tools`")
    return present


# --- images and TIFFs -----------------------------------------------------------------------


def test_an_image_is_one_page_exactly_as_decode_reads_it(eval_dir, receipts, tess_pages):
    png = (eval_dir / "images/en_pages_tesseract/phototest-rotated-180.png").read_bytes()
    for data, fmt in [(receipts[0], "jpeg"), (png, "png"), (tess_pages[0], "tiff")]:
        with open_document(data, LIMITS) as doc:
            assert (doc.format, doc.bytes, doc.page_count) == (fmt, len(data), 1)
            page = doc.page(1)
        expected = decoded(data)
        assert page.pixels is not None and np.array_equal(page.pixels, expected)
        assert (page.height, page.width) == expected.shape[:2]
        assert page.text_lines is None and page.dpi is None and page.points is None
        w, h = jpeg_size(page.thumbnail)
        assert max(w, h) == 320 and abs(w / h - page.width / page.height) < 0.02


def test_a_bad_image_is_refused_at_open(receipts):
    with pytest.raises(UnreadableImage):
        open_document(receipts[0][: len(receipts[0]) // 2], LIMITS)


def test_tiff_pages_equal_their_source_images(receipts, tess_pages):
    sources = [receipts[0], *tess_pages]
    tiff = docs.multipage_tiff([Image.open(io.BytesIO(s)) for s in sources])
    with open_document(tiff, LIMITS) as doc:
        assert (doc.format, doc.page_count) == ("tiff", 3)
        pages = [doc.page(n) for n in (3, 1, 2)]  # any order: each page stands alone
    for page, source in zip(pages, [sources[2], sources[0], sources[1]], strict=True):
        assert np.array_equal(page.pixels, decoded(source))
        assert page.text_lines is None and jpeg_size(page.thumbnail)


@pytest.mark.parametrize("mode", ["I;16", "CMYK", "RGBA", "LA", "L"])
def test_tiff_pages_convert_like_decode(receipts, mode):
    """Each page of a multi-page TIFF reads as decode() reads that page on its own."""
    rgb = Image.open(io.BytesIO(receipts[1])).convert("RGB")
    if mode == "I;16":
        odd = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    elif mode in ("RGBA", "LA"):
        odd = rgb.convert(mode)
        odd.putalpha(Image.linear_gradient("L").resize(rgb.size))
    else:
        odd = rgb.convert(mode)
    tiff = docs.multipage_tiff([rgb, odd])
    single = docs.multipage_tiff([odd])
    with open_document(tiff, LIMITS) as doc:
        page = doc.page(2)
    assert np.array_equal(page.pixels, decoded(single))


def test_tiff_pages_opencv_cannot_read_are_read_by_pillow(monkeypatch, receipts, tess_pages):
    """The same pixels either way (as decode() falls back for the first page). The alpha is
    all or nothing: OpenCV premultiplies a TIFF's partial alpha, Pillow does not."""
    rgb = Image.open(io.BytesIO(receipts[0])).convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size).point(lambda v: 255 * (v > 99)))
    tiff = docs.multipage_tiff([rgb, rgba, Image.open(io.BytesIO(tess_pages[0]))])
    with open_document(tiff, LIMITS) as doc:
        by_opencv = [doc.page(n).pixels for n in (1, 2, 3)]

    def unreadable(*args, **kwargs):
        raise cv2.error("no TIFF codec")

    monkeypatch.setattr(cv2, "imdecodemulti", unreadable)
    with open_document(tiff, LIMITS) as doc:
        by_pillow = [doc.page(n).pixels for n in (1, 2, 3)]
    for a, b in zip(by_opencv, by_pillow, strict=True):
        assert a.shape == b.shape and np.abs(a.astype(np.int16) - b).max() <= 1


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_tiff_pages_are_turned_by_their_orientation_tag(receipts, orientation):
    """Turned once, as Pillow's exif_transpose turns them (OpenCV and Pillow both apply a
    TIFF's own orientation tag when they decode it, so nothing else may turn it again)."""
    pages = [Image.open(io.BytesIO(r)).convert("RGB") for r in receipts[:2]]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:],
                  tiffinfo={274: orientation})
    reference = pages[1].copy()
    reference.getexif()[274] = orientation
    expected = np.asarray(ImageOps.exif_transpose(reference))[:, :, ::-1]
    assert expected.shape[:2] != pages[1].size[::-1] or orientation == 3
    page = open_document(buf.getvalue(), LIMITS).page(2)
    assert np.array_equal(page.pixels, expected)
    assert (page.width, page.height) == (expected.shape[1], expected.shape[0])


def test_tiff_page_bomb_is_refused_from_its_header(tess_pages):
    first = docs.multipage_tiff([Image.open(io.BytesIO(tess_pages[0]))])
    for bomb in (docs.tiff_bomb(), docs.tiff_bomb(first=first)):
        start = time.perf_counter()
        with pytest.raises(TooLarge) as info:
            open_document(bomb, LIMITS)
        assert info.value.code == "too_many_pixels"
        assert "100000x100000" in info.value.message
        assert time.perf_counter() - start < FAST_S


def test_tiff_with_too_many_pages_is_refused(tess_pages):
    frame = Image.open(io.BytesIO(tess_pages[0]))
    tiff = docs.multipage_tiff([frame] * 4)
    with pytest.raises(TooLarge) as info:
        open_document(tiff, Limits(max_pages=3))
    assert info.value.code == "too_many_pages"
    assert open_document(tiff, Limits(max_pages=4)).page_count == 4


# --- PDFs: pages to OCR -----------------------------------------------------------------------


def test_image_pdf_page_is_rendered_at_the_pdf_dpi(receipt_pdf):
    with open_document(receipt_pdf, LIMITS) as doc:
        assert (doc.format, doc.bytes, doc.page_count) == ("pdf", len(receipt_pdf), 1)
        page = doc.page(1)
    assert (page.dpi, page.points) == (200, (612, 792))
    assert (page.width, page.height) == (1700, 2200)
    assert page.pixels.shape == (2200, 1700, 3) and page.pixels.dtype == np.uint8
    assert page.text_lines is None
    assert jpeg_size(page.thumbnail) == (247, 320)
    # the receipt is there: dark ink inside the page, a white margin around it
    x0, y0, x1, y1 = docs.ink_box(page.pixels)
    assert x1 - x0 > 500 and y1 - y0 > 1500


def test_an_image_pdf_rendered_at_the_image_resolution_is_the_image(receipts):
    """img2pdf's page is the JPEG at its own 96 dpi: rendered at 96 dpi, the page is the
    image, pixel for pixel (up to the JPEG decoder), in BGR order, upright."""
    image = decoded(receipts[0])
    page = open_document(docs.image_pdf(receipts[:1]), Limits(pdf_dpi=96)).page(1)
    assert page.points == (image.shape[1] * 72 / 96, image.shape[0] * 72 / 96)
    assert page.pixels.shape == image.shape
    assert np.abs(page.pixels.astype(np.int16) - image).mean() < 1.0


@pytest.mark.parametrize("rotate", [0, 90])
def test_pdf_page_size_is_points_times_dpi_rounded(rotate):
    """A page of 100.1 x 200.1 points at 200 dpi is 278.06 x 555.83 px: 278 x 556, not the
    279 x 556 a ceiling would give."""
    pdf = docs.rotated(docs.blank_pdf(1, (100.1, 200.1)), rotate)
    page = open_document(pdf, LIMITS).page(1)
    points = (100.1, 200.1) if rotate == 0 else (200.1, 100.1)
    assert page.points == pytest.approx(points, abs=1e-3)
    assert (page.width, page.height) == tuple(round(p * 200 / 72) for p in page.points)
    assert page.pixels.shape == (page.height, page.width, 3)
    assert (page.pixels == 255).all()  # a blank page renders white


def test_pdf_rotate_90_turns_the_rendered_page(receipt_pdf):
    upright = open_document(receipt_pdf, LIMITS).page(1)
    turned = open_document(docs.rotated(receipt_pdf, 90), LIMITS).page(1)
    assert turned.points == (792, 612)
    assert (turned.width, turned.height) == (2200, 1700)
    expected = cv2.rotate(upright.pixels, cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(turned.pixels.astype(np.int16) - expected).mean() < 1.0


def test_dpi_is_lowered_to_fit_max_pixels(receipt_pdf):
    limits = Limits(max_pixels=1_000_000)
    page = open_document(receipt_pdf, limits).page(1)
    assert 72 <= page.dpi < 200
    assert page.width * page.height <= limits.max_pixels
    assert (page.width, page.height) == (round(612 * page.dpi / 72), round(792 * page.dpi / 72))
    # the highest integer dpi that fits: one more would pass the limit
    assert round(612 * (page.dpi + 1) / 72) * round(792 * (page.dpi + 1) / 72) > 1_000_000
    assert page.pixels.shape == (page.height, page.width, 3)


def test_a_page_too_large_even_at_72_dpi_is_refused():
    pdf = docs.blank_pdf(1, (14400, 14400))  # 200 x 200 inches, the PDF maximum
    start = time.perf_counter()
    with pytest.raises(TooLarge) as info:
        open_document(pdf, LIMITS)
    assert info.value.code == "too_many_pixels"
    assert time.perf_counter() - start < FAST_S
    # the same page is fine where the limit allows it at 72 dpi
    assert open_document(pdf, Limits(max_pixels=14400**2)).page_count == 1


def test_invisible_text_layer_is_not_trusted(receipt_pdf, manifest):
    """An image PDF with another tool's hidden OCR layer is OCR'd again, from pixels."""
    layer = manifest["sroie_X51006556818"]["text"].splitlines()[:20]
    for pdf in (docs.with_text_layer(receipt_pdf, layer, mode=3),
                docs.text_pdf(layer, mode=3)):
        page = open_document(pdf, LIMITS).page(1)
        assert page.text_lines is None
        assert page.pixels is not None and page.pixels.shape == (2200, 1700, 3)


def test_visible_text_is_read_and_hidden_text_left_out():
    pdf = docs.with_text_layer(docs.text_pdf(["Visible words here"]), ["hidden words"], mode=3)
    page = open_document(pdf, LIMITS).page(1)
    assert page.pixels is None
    assert [line.text for line in page.text_lines] == ["Visible words here"]


def test_pdf_pages_are_read_on_demand(monkeypatch, receipts):
    pdf = docs.image_pdf([receipts[i % 3] for i in range(60)], page_size=(612, 792))
    renders = []
    real = pdfium_c.FPDF_RenderPageBitmap
    monkeypatch.setattr(pdfium_c, "FPDF_RenderPageBitmap",
                        lambda *a: renders.append(a[4:6]) or real(*a))
    start = time.perf_counter()
    doc = open_document(pdf, BIG)
    assert time.perf_counter() - start < FAST_S
    assert (doc.page_count, renders) == (60, [])
    page = doc.page(50)
    assert renders == [(1700, 2200)] and page.number == 50
    doc.close()


def test_a_100_page_pdf_reads_in_bounded_memory(tmp_path, eval_dir, manifest):
    """Peak RSS of a fresh process reading every page of 100 letter pages (3.7 Mpx each)."""
    files = docs.eval_files(manifest, "receipts_sroie", 40)
    pdf = docs.image_pdf([(eval_dir / files[i % 40]).read_bytes() for i in range(100)],
                         page_size=(612, 792))
    path = tmp_path / "100.pdf"
    path.write_bytes(pdf)
    script = (
        "import json, sys, time\n"
        # VmHWM, not getrusage: Linux carries ru_maxrss over exec from the forking parent
        "def peak_mb():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "from edgeocr.ocr.pages import Limits, open_document\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "t = time.perf_counter()\n"
        "with open_document(data, Limits(max_bytes=len(data))) as doc:\n"
        "    sizes = {doc.page(n).pixels.shape for n in range(1, doc.page_count + 1)}\n"
        "print(json.dumps({'pages': doc.page_count, 'sizes': [list(s) for s in sizes],\n"
        "    's': time.perf_counter() - t,\n"
        "    'peak_mb': peak_mb()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                         capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout)
    # each receipt is a scan filling its page: read at the image's own pixels (DESIGN §3)
    assert result["pages"] == 100 and len(result["sizes"]) > 1
    assert all(h * w <= 40_000_000 for h, w, _ in result["sizes"])
    # interpreter + libraries ~80 MB, the file 36 MB, one page 11 MB: 185 MB measured
    assert result["peak_mb"] < 400, result


# --- PDFs: born-digital pages -----------------------------------------------------------------


@pytest.mark.parametrize("package", sorted(docs.SHIPPED_PDFS))
def test_born_digital_pages_read_from_the_text_layer(shipped, package):
    if package not in shipped:
        pytest.skip(f"{package} ships no PDF on this Debian release")
    path = shipped[package]
    layout = docs.pdftotext_pages(path, layout=True)
    plain = docs.pdftotext_pages(path, layout=False)
    with open_document(path.read_bytes(), LIMITS) as doc:
        assert doc.page_count == len(layout) > 10
        f1_layout, f1_plain, in_one_row = [], [], []
        for n in range(1, doc.page_count + 1):
            page = doc.page(n)
            assert page.pixels is None and page.text_lines, n
            text = "\n".join(line.text for line in page.text_lines)
            f1_layout.append(bow_count(text, layout[n - 1]).f1)
            f1_plain.append(bow_count(text, plain[n - 1]).f1)
            check_lines(page)
            rows = [normalise(row) for row in layout[n - 1].splitlines()]
            in_one_row += [any(normalise(ln.text) in row for row in rows)
                           for ln in page.text_lines]
    # a line is one printed row (pdftotext may join several of ours into a row, as in a
    # table, but not the other way round): 99.3% and 99.6% measured, the rest dot leaders
    # spaced differently; a hyphenated word's two halves joined across rows drops it to 97%
    assert statistics.mean(in_one_row) >= 0.98
    # pdftotext -layout keeps a word hyphenated across lines in two halves, as we do; plain
    # pdftotext joins them, so it is compared as a whole, not page by page
    # measured: min 0.994, means 0.9993 and 1.0 (layout), 0.996 and 0.9993 (plain)
    assert min(f1_layout) >= 0.99, f1_layout
    assert statistics.mean(f1_layout) >= 0.998
    assert statistics.mean(f1_plain) >= 0.99


def check_lines(page) -> None:
    """Non-empty, single-spaced lines in reading order, boxes clockwise inside the page."""
    assert jpeg_size(page.thumbnail)[1] == 320
    assert (page.width, page.height) == tuple(round(p * page.dpi / 72) for p in page.points)
    prev_top = -1
    for line in page.text_lines:
        assert line.text and line.text == line.text.strip() and "  " not in line.text
        (x0, y0), (x1, y0b), (x1b, y1), (x0b, y1b) = line.box
        assert (x0, x1, y0, y1) == (x0b, x1b, y0b, y1b)
        assert 0 <= x0 <= x1 <= page.width and 0 <= y0 <= y1 <= page.height
        # top to bottom: no line starts above the one before it, unless they share a row
        assert (y0 + y1) / 2 >= prev_top, line
        prev_top = y0


def test_text_pages_cost_under_50_ms(monkeypatch, shipped):
    """Thumbnail included: a text page renders only its thumbnail, never the full page."""
    renders = []
    real = pdfium_c.FPDF_RenderPageBitmap
    monkeypatch.setattr(pdfium_c, "FPDF_RenderPageBitmap",
                        lambda *a: renders.append(max(a[4:6])) or real(*a))
    times = []
    for path in shipped.values():
        with open_document(path.read_bytes(), LIMITS) as doc:
            for n in range(1, doc.page_count + 1):
                start = time.perf_counter()
                doc.page(n)
                times.append((time.perf_counter() - start) * 1000)
    assert statistics.median(times) < TEXT_PAGE_MS, sorted(times)  # measured: 7 ms
    assert renders == [320] * len(times)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_text_boxes_are_where_the_text_is_drawn(rotate):
    lines = ["The quick brown fox", "jumps over the lazy dog 12.50"]
    pdf = docs.text_pdf(lines, rotate=rotate)
    page = open_document(pdf, LIMITS).page(1)
    assert sorted(line.text for line in page.text_lines) == sorted(lines)
    # PDFium's own render of the page, independent of ours
    with pdfium.PdfDocument(pdf) as check:
        ink = check[0].render(scale=page.dpi / 72).to_numpy()
    assert ink.shape[:2] == (page.height, page.width)
    dark = ink.min(axis=2) < 128
    covered = np.zeros_like(dark)
    for line in page.text_lines:
        (x0, y0), _, (x1, y1), _ = line.box
        assert dark[y0:y1, x0:x1].any(), line
        covered[y0:y1, x0:x1] = True
    assert not (dark & ~covered).any(), np.argwhere(dark & ~covered)[:5]


def test_shipped_page_lines_match_the_rendered_ink(shipped):
    """Boxes on a real page cover its text: the ink outside every box is only rules."""
    with open_document(shipped[docs.REQUIRED_PDF].read_bytes(), LIMITS) as doc:
        page = doc.page(5)
    with pdfium.PdfDocument(shipped[docs.REQUIRED_PDF]) as check:
        ink = check[4].render(scale=page.dpi / 72).to_numpy().min(axis=2) < 128
    covered = np.zeros_like(ink)
    for line in page.text_lines:
        (x0, y0), _, (x1, y1), _ = line.box
        covered[y0:y1, x0:x1] = True
    assert (ink & covered).sum() / ink.sum() > 0.97


# --- bad documents ----------------------------------------------------------------------------


def bad_documents(shipped_pdf: bytes, receipt_pdf: bytes, tmp_path) -> dict[str, bytes]:
    return {
        "encrypted": docs.qpdf_encrypt(receipt_pdf, tmp_path),
        "truncated": shipped_pdf[: len(shipped_pdf) // 2],
        "truncated_image_pdf": receipt_pdf[: len(receipt_pdf) // 2],
        "header_only": b"%PDF-1.7\n",
        "garbage_after_header": b"%PDF-1.4\n" + bytes(range(256)) * 40,
        "no_pages": docs.blank_pdf(0),
        "5000_pages": docs.blank_pdf(5000),
    }


EXPECTED = {
    "encrypted": (EncryptedDocument, "encrypted_document"),
    "truncated": (UnreadableDocument, "unreadable_document"),
    "truncated_image_pdf": (UnreadableDocument, "unreadable_document"),
    "header_only": (UnreadableDocument, "unreadable_document"),
    "garbage_after_header": (UnreadableDocument, "unreadable_document"),
    "no_pages": (UnreadableDocument, "unreadable_document"),
    "5000_pages": (TooLarge, "too_many_pages"),
}


def test_bad_pdfs_are_refused_fast_with_their_own_error(shipped, receipt_pdf, tmp_path):
    shipped_pdf = shipped[docs.REQUIRED_PDF].read_bytes()
    for name, data in bad_documents(shipped_pdf, receipt_pdf, tmp_path).items():
        cls, code = EXPECTED[name]
        start = time.perf_counter()
        with pytest.raises(InputError) as info:
            open_document(data, BIG)
        elapsed = time.perf_counter() - start
        assert (type(info.value), info.value.code) == (cls, code), name
        assert elapsed < FAST_S, (name, elapsed)


def test_a_pdf_with_only_an_owner_password_opens(receipt_pdf, tmp_path):
    """Permissions-only encryption needs no password to read: not an encrypted document."""
    pdf = docs.qpdf_encrypt(receipt_pdf, tmp_path, user_password="")
    assert open_document(pdf, LIMITS).page(1).pixels.shape == (2200, 1700, 3)


def test_size_and_type_are_checked_before_anything_else(receipt_pdf):
    with pytest.raises(TooLarge) as info:
        open_document(receipt_pdf, Limits(max_bytes=len(receipt_pdf) - 1))
    assert info.value.code == "too_many_bytes"
    with pytest.raises(UnsupportedFormat):
        open_document(b"PK\x03\x04 a zip, not a page", LIMITS)
    with pytest.raises(UnreadableImage) as info:
        open_document(b"", LIMITS)
    assert info.value.code == "empty_body"
    # junk before the header, as readers allow (within the first 1024 bytes)
    assert open_document(b"\n" * 1000 + receipt_pdf, LIMITS).page_count == 1
    with pytest.raises(UnsupportedFormat):
        open_document(b"\n" * 1100 + receipt_pdf, LIMITS)


def test_a_page_that_cannot_load_fails_alone():
    with open_document(docs.dangling_page_pdf(), LIMITS) as doc:
        assert doc.page_count == 2
        assert doc.page(1).pixels.shape == (2200, 1700, 3)
        with pytest.raises(PageError) as info:
            doc.page(2)
        assert info.value.code == "unreadable_page"
        assert doc.page(1).pixels is not None  # the document is still usable
        with pytest.raises(IndexError):
            doc.page(3)


def test_a_closed_document_reads_no_more(receipt_pdf):
    doc = open_document(receipt_pdf, LIMITS)
    with doc:
        doc.page(1)
    doc.close()  # closing twice is harmless
    with pytest.raises(ValueError):
        doc.page(1)


# --- PDFium under threads ---------------------------------------------------------------------

WATCHED = ("FPDF_LoadMemDocument64", "FPDF_LoadPage", "FPDF_RenderPageBitmap",
           "FPDFText_LoadPage", "FPDFText_CountChars", "FPDFText_ClosePage", "FPDF_ClosePage",
           "FPDF_CloseDocument")


def test_pdfium_is_entered_by_one_thread_at_a_time(monkeypatch, shipped, receipt_pdf):
    """Two threads reading pages at once (of one shared document and of their own) get what
    one thread alone gets, and are never inside PDFium together."""
    text_pdf = shipped[docs.REQUIRED_PDF].read_bytes()
    alone = [page_digest(open_document(pdf, LIMITS).page(n))
             for pdf, n in ((receipt_pdf, 1), (text_pdf, 3))]

    state = {"inside": 0, "most": 0}
    guard = threading.Lock()

    def watch(fn):
        def entered(*args):
            with guard:
                state["inside"] += 1
                state["most"] = max(state["most"], state["inside"])
            time.sleep(0.002)  # widen the window in which another thread could come in
            try:
                return fn(*args)
            finally:
                with guard:
                    state["inside"] -= 1
        return entered

    for name in WATCHED:
        monkeypatch.setattr(pdfium_c, name, watch(getattr(pdfium_c, name)))

    shared = open_document(text_pdf, LIMITS)
    results: dict[int, list] = {0: [], 1: []}

    def work(k: int) -> None:
        for _ in range(3):
            own = open_document(receipt_pdf, LIMITS)
            results[k].append(page_digest(own.page(1)))
            own.close()
            results[k].append(page_digest(shared.page(3)))

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    assert results[0] == results[1] == alone * 3
    assert state["most"] == 1


def page_digest(page) -> tuple:
    pixels = None if page.pixels is None else (page.pixels.shape, int(page.pixels.sum()))
    lines = None if page.text_lines is None else [(ln.text, ln.box) for ln in page.text_lines]
    return page.width, page.height, page.dpi, pixels, lines


# --- thumbnails -------------------------------------------------------------------------------


def test_thumbnail_is_a_small_jpeg_and_never_upscaled(receipts):
    img = decoded(receipts[0])
    h, w = img.shape[:2]
    assert jpeg_size(make_thumbnail(img)) == (round(w * 320 / h), 320)
    small = cv2.resize(img, (100, 200))
    thumb = make_thumbnail(small)
    assert jpeg_size(thumb) == (100, 200)
    back = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(back.astype(np.int16) - small).mean() < 8  # quality ~80: close to source


def test_a_scanned_page_is_read_at_its_images_own_pixels(eval_dir):
    """DESIGN §3: a page made of one embedded image is read at that image's resolution, so
    a scan in a PDF reads exactly as the image alone (img2pdf places a JPEG at 96 dpi, which
    200 dpi would have upscaled 2.08x); a page that is not one image is rendered at pdf_dpi."""
    jpeg = (eval_dir / "images/receipts_sroie/X51006556818.jpg").read_bytes()
    alone = decode(jpeg, max_bytes=10**8, max_pixels=10**8).pixels
    with open_document(docs.image_pdf([jpeg]), Limits(max_bytes=10**8)) as doc:
        page = doc.page(1)
    assert (page.height, page.width) == alone.shape[:2] and page.dpi == 96
    assert np.array_equal(page.pixels, alone)
    with open_document(docs.blank_pdf(1), Limits(max_bytes=10**8)) as doc:
        assert doc.page(1).dpi == 200  # nothing embedded: the configured resolution
