"""Documents for tests/test_documents.py, built from real inputs by real tools.

- image PDFs: eval images wrapped losslessly by img2pdf (the JPEG bytes go in unchanged);
- multi-page TIFFs: Pillow's writer;
- born-digital PDFs: what Debian packages ship (pdfTeX manuals, installed by `make doc-tools`),
  with poppler's `pdftotext` as the ground truth;
- text layers, rotation, blank pages: PDFium itself (pypdfium2's editing API), the library a
  PDF producer like Chromium's uses;
- encryption: qpdf.
Only the inputs that no tool makes on purpose (a TIFF header claiming 10^10 pixels, a page tree
pointing at a missing object) are written byte by byte.
"""

from __future__ import annotations

import ctypes
import io
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import img2pdf
import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

# Debian packages that ship pdfTeX-made manuals: 36 + 17 pages of prose, tables and code.
# libtasn1-doc is installed by `make doc-tools`; shared-mime-info is in the base image, and
# its spec PDF is used where the release ships it.
REQUIRED_PDF = "libtasn1-doc"
SHIPPED_PDFS = {
    "libtasn1-doc": Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
    "shared-mime-info": Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
}


def eval_files(manifest: dict[str, dict], category: str, n: int) -> list[str]:
    """The first ``n`` files of a category, in manifest order (a fixed, reproducible pick)."""
    return [item["file"] for item in manifest.values() if item["category"] == category][:n]


def image_pdf(images: Iterable[bytes], page_size: tuple[float, float] | None = None) -> bytes:
    """One page per image, the image embedded as it is. ``page_size`` in points fits every
    image into pages of that size; by default a page is the image at its own resolution."""
    return img2pdf.convert(list(images), layout_fun=img2pdf.get_layout_fun(page_size))


def multipage_tiff(pages: Sequence[Image.Image]) -> bytes:
    """A lossless multi-page TIFF, one frame per image (each keeps its own mode)."""
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=list(pages[1:]),
                  compression="tiff_deflate")
    return buf.getvalue()


def save(pdf: pdfium.PdfDocument) -> bytes:
    buf = io.BytesIO()
    pdf.save(buf)
    pdf.close()
    return buf.getvalue()


def blank_pdf(pages: int, size: tuple[float, float] = (612, 792)) -> bytes:
    """``pages`` empty pages of ``size`` points (0 pages is a valid, empty PDF)."""
    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(*size).close()
    return save(pdf)


def add_text(pdf: pdfium.PdfDocument, page: pdfium.PdfPage, lines: Sequence[str], *,
             mode: int = 0, x: float = 72, top: float = 72, size: float = 12) -> None:
    """Write ``lines`` in Helvetica from (x, top) downwards (top measured from the page's top
    edge), with text render ``mode`` (0 fill, 3 invisible: an OCR layer)."""
    height = page.get_mediabox()[3]
    for i, line in enumerate(lines):
        obj = pdfium_c.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", size)
        text = (line + "\0").encode("utf-16-le")
        buf = ctypes.create_string_buffer(text, len(text))
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(buf, pdfium_c.FPDF_WIDESTRING))
        pdfium_c.FPDFTextObj_SetTextRenderMode(obj, mode)
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, x, height - top - size * 1.5 * (i + 1))
        pdfium_c.FPDFPage_InsertObject(page.raw, obj)
    page.gen_content()


def text_pdf(lines: Sequence[str], *, size: tuple[float, float] = (612, 792), rotate: int = 0,
             mode: int = 0) -> bytes:
    """One born-digital page of ``lines`` (or an invisible layer of them, ``mode=3``)."""
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(*size)
    add_text(pdf, page, lines, mode=mode)
    page.set_rotation(rotate)
    page.close()
    return save(pdf)


def with_text_layer(pdf_bytes: bytes, lines: Sequence[str], mode: int) -> bytes:
    """``pdf_bytes`` with ``lines`` written over its first page: an image PDF plus a hidden
    OCR layer (``mode=3``) is what OCRmyPDF and scanners' software produce."""
    pdf = pdfium.PdfDocument(pdf_bytes)
    page = pdf[0]
    add_text(pdf, page, lines, mode=mode)
    page.close()
    return save(pdf)


def rotated(pdf_bytes: bytes, degrees: int) -> bytes:
    """The same PDF with /Rotate set on every page."""
    pdf = pdfium.PdfDocument(pdf_bytes)
    for page in pdf:
        page.set_rotation(degrees)
        page.close()
    return save(pdf)


def qpdf_encrypt(pdf_bytes: bytes, tmp: Path, user_password: str = "secret") -> bytes:
    """AES-256 with a user password, by qpdf (Debian `qpdf`)."""
    src, dst = tmp / "plain.pdf", tmp / "encrypted.pdf"
    src.write_bytes(pdf_bytes)
    subprocess.run([tool("qpdf"), "--encrypt", user_password, "owner-pw", "256", "--",
                    str(src), str(dst)], check=True)
    return dst.read_bytes()


def pdftotext_pages(path: Path, *, layout: bool) -> list[str]:
    """Poppler's text of every page (it ends each page with a form feed): the ground truth
    for born-digital pages."""
    args = [tool("pdftotext"), "-enc", "UTF-8", *(["-layout"] if layout else []), str(path), "-"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return out.split("\f")[:-1]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is missing: run `make doc-tools`")
    return path


def pdf_from_objects(objects: Sequence[bytes]) -> bytes:
    """A PDF of the given object bodies (object 1 the catalog), with an exact xref table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def dangling_page_pdf() -> bytes:
    """Two pages, the second a reference to an object that is not in the file (what a
    damaged or carelessly merged PDF looks like): page 1 reads, page 2 cannot load."""
    return pdf_from_objects([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R 9 0 R] /Count 2 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ])


def tiff_bomb(width: int = 100_000, height: int = 100_000, first: bytes | None = None) -> bytes:
    """A little-endian TIFF whose IFDs claim ``width`` x ``height`` 8-bit gray pixels backed
    by 16 bytes of data. With ``first`` (a real TIFF's page, as a 1-page TIFF file) the bomb
    is page 2, so that only a check of every page's header catches it."""
    def ifd(data_at: int) -> bytes:  # 2 + 9 * 12 + 4 = 114 bytes, then the data
        tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                (273, 4, data_at), (277, 3, 1), (278, 4, height), (279, 4, 16)]
        body = struct.pack("<H", len(tags))
        body += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
        return body + struct.pack("<I", 0)

    if first is None:
        return b"II*\x00" + struct.pack("<I", 8) + ifd(8 + 114) + bytes(16)
    # append the bomb's IFD after the real file and link the real file's last IFD to it
    at = len(first) + (len(first) % 2)
    data = bytearray(first + bytes(at - len(first)))
    data += ifd(at + 114) + bytes(16)
    last = struct.unpack_from("<I", data, 4)[0]
    while True:
        count = struct.unpack_from("<H", data, last)[0]
        link = last + 2 + 12 * count
        nxt = struct.unpack_from("<I", data, link)[0]
        if nxt == 0:
            struct.pack_into("<I", data, link, at)
            return bytes(data)
        last = nxt


def ink_box(bgr: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the dark pixels."""
    ys, xs = np.nonzero(bgr.min(axis=2) < 128)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# --- damaged documents (tests/test_bad_documents.py, tests/test_fuzz.py) ---------------------


def plain_text_pdf(lines: Sequence[str], size: tuple[float, float] = (240, 90)) -> bytes:
    """One born-digital page of Helvetica ``lines`` whose content stream is not compressed, so
    that a byte-level mutation lands on text operators (PDFium's own writer compresses)."""
    ops = [b"BT /F1 12 Tf 14 TL 10 %d Td" % (size[1] - 22)]
    for line in lines:
        escaped = line.encode("latin-1").replace(b"\\", b"\\\\").replace(b"(", b"\\(")
        ops.append(b"(%s) Tj T*" % escaped.replace(b")", b"\\)"))
    content = b"\n".join([*ops, b"ET"])
    return pdf_from_objects([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>" % size,
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ])


def broken_content_pdf(pdf_bytes: bytes, page: int) -> bytes:
    """``pdf_bytes`` with page ``page``'s content stream replaced by bytes that claim to be
    Flate data and do not inflate (a damaged stream), written by qpdf (pikepdf, img2pdf's
    PDF library). Its objects, xref and the other pages are intact."""
    import pikepdf

    with pikepdf.open(io.BytesIO(pdf_bytes)) as pdf:
        pdf.pages[page - 1].obj.Contents.write(b"\x78\x9c" + bytes(range(7, 250)),
                                               filter=pikepdf.Name.FlateDecode)
        buf = io.BytesIO()
        pdf.save(buf)
    return buf.getvalue()


def tiff_ifds(data: bytes) -> list[tuple[int, dict[int, tuple[int, int, int, int]]]]:
    """A little-endian TIFF's IFDs in chain order: (offset, {tag: (type, count, value,
    entry offset)}), stopping at a link out of the file or back to an IFD already seen."""
    assert data[:4] == b"II*\x00", "little-endian TIFF only"
    ifds: list[tuple[int, dict[int, tuple[int, int, int, int]]]] = []
    at = struct.unpack_from("<I", data, 4)[0]
    while at and at + 2 <= len(data) and at not in {o for o, _ in ifds}:
        count = struct.unpack_from("<H", data, at)[0]
        tags = {}
        for i in range(count):
            entry = at + 2 + 12 * i
            if entry + 12 > len(data):
                break
            tag, kind, n, value = struct.unpack_from("<HHII", data, entry)
            tags[tag] = (kind, n, value, entry)
        ifds.append((at, tags))
        link = at + 2 + 12 * count
        at = struct.unpack_from("<I", data, link)[0] if link + 4 <= len(data) else 0
    return ifds


def _single_strip(data: bytes, page: int) -> tuple[int, int, int]:
    """(entry offset of StripOffsets, strip start, strip length) of a one-strip page."""
    _, tags = tiff_ifds(data)[page - 1]
    (_, n, start, entry), (_, _, length, _) = tags[273], tags[279]
    assert n == 1, "the builders below take pages stored as one strip"
    return entry, start, length


def tiff_with_truncated_page(tiff: bytes, page: int) -> bytes:
    """``tiff`` (a Pillow-written little-endian TIFF) whose page ``page`` has lost the second
    half of its data: that page's strip is moved to the end of the file and cut there, as a
    writer that puts the last strip last and a transfer cut short leave it. Every IFD and
    every other page is intact."""
    entry, start, length = _single_strip(tiff, page)
    out = bytearray(tiff)
    struct.pack_into("<I", out, entry + 8, len(out))
    return bytes(out + tiff[start:start + length // 2])


def tiff_cut_in_page(tiff: bytes, page: int) -> bytes:
    """``tiff`` cut off in the middle of page ``page``'s data. Pillow writes each page's data
    before its IFD, so that page's IFD and all later ones are gone, and the previous page's
    link to the next IFD points past the end of the file."""
    _, start, length = _single_strip(tiff, page)
    return tiff[:start + length // 2]


def tiff_set_tag(tiff: bytes, page: int, tag: int, value: int) -> bytes:
    """``tiff`` (little-endian) with one tag of page ``page`` set to ``value`` (a SHORT or
    LONG held in the entry itself), e.g. a compression no reader knows."""
    kind, n, _, entry = tiff_ifds(tiff)[page - 1][1][tag]
    assert n == 1 and kind in (3, 4), "a single SHORT or LONG value"
    out = bytearray(tiff)
    struct.pack_into("<I" if kind == 4 else "<H", out, entry + 8, value)
    return bytes(out)
