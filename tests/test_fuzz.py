"""Fuzzing POST /ocr with hypothesis: mutated real images and documents, random bodies, every
body form, and documents through POST /uploads + PUT + the worker.

What must hold for any input (DESIGN §2): never a 5xx, never an unhandled exception (the
TestClient re-raises server exceptions), every non-200 is ``{"error": {"code", "message"}}``
with a 4xx we document, nothing is written to the store for a failed request, and every 200
is stored (this store never fails) and matches what was stored.

Seeds are *small* real images (IC15 word crops, RapidOCR's line crops, UW-III lines, and
the same crops re-encoded as WebP/TIFF/GIF/BMP, since the eval set has no small ones), so a
mutant that still decodes costs one cheap OCR and most budget goes on decoding paths.

Document seeds are small real documents: img2pdf PDFs of 1-3 of those crops (one page each,
at the crop's own size, so a mutant that still renders costs a small OCR), born-digital
PDFs (PDFium's writer, and one with an uncompressed content stream), an invisible OCR layer,
a rotated PDF, a page-tree entry pointing at a missing object, qpdf-encrypted PDFs, and
multi-page TIFFs from Pillow (deflate, packbits, raw, big-endian 16-bit). Mutations know the
formats: numbers, /Count, /MediaBox and page keys, junk at xref/trailer/startxref and other
keywords, object drop/repeat/swap/transplant, name swaps, content-stream junk; TIFF IFD
fields of every page, dimensions and other tags, IFD links (loops, out of the file). A
document that is read must be stored complete (its per-page objects too, for the worker);
one that is refused stores nothing (through the worker: only the upload's bytes and its
status object, which holds the error); and the worker must answer what a synchronous POST
answers (same status, same code, same stored result). The document apps cap pages at 4 MP
(``OCR_MAX_PIXELS``) so that a mutated /MediaBox costs at most a 4 MP render and read, and
documents at 64 pages (``OCR_MAX_PAGES``) so that a mutated /Count costs at most 64 pages.

Budget: the ``ci`` profile (default) is derandomized and bounded (~150 examples per image
test, ``DOC_EXAMPLES`` per document test, well under a minute); ``HYPOTHESIS_PROFILE=long``
(``make fuzz``) runs 3 x 5,000 image/body cases and 2 x 6,000 document cases with fresh
randomness and keeps failures in ``.hypothesis/`` for replay (``FUZZ_DOC_EXAMPLES`` overrides
the document count).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

import docs
from edgeocr.http.app import create_app
from edgeocr.keys import content_hash, page_key, result_key, status_key, upload_key
from edgeocr.settings import Settings
from helpers import (
    RecordingStore,
    assert_answer_is,
    assert_error_shape,
    fuzz_profile,
    record_worker_errors,
)

PROFILE = fuzz_profile()  # ci (make test) or long (make fuzz), registered in one place
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# per document test: each example that still opens renders and reads 1-3 small pages
DOC_EXAMPLES = int(os.environ.get("FUZZ_DOC_EXAMPLES", 6_000 if PROFILE_NAME == "long" else 25))
DOC_MAX_PIXELS = 4_000_000
# PDFium takes a page count from /Count: a 1-page file edited to say 2,000 is 2,000 pages
# (1,999 of them errors), which the worker stores one page object and one status at a time
DOC_MAX_PAGES = 64

EVAL = (Path(__file__).resolve().parents[1] / ".." / "shared" / "eval" / "images").resolve()
SEED_FILES = (
    "en_words_ic15/word_139.png",
    "en_words_ic15/word_612.png",
    "en_doclines_uw3/0036_010043.bin.png",
    "peer_rapidocr_lines/text_cls.jpg",
    "peer_rapidocr_lines/test_without_det.jpg",
)
DOCUMENTED_4XX = {400, 413, 415, 422}

# --------------------------------------------------------------------------- seeds


def _reencode(data: bytes, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").save(buf, fmt, **kw)
    return buf.getvalue()


def load_seeds() -> dict[str, bytes]:
    """Real small images, plus re-encodings so every decoder we accept gets mutants."""
    if not EVAL.is_dir():
        pytest.fail(f"eval images not found at {EVAL}")
    seeds = {name: (EVAL / name).read_bytes() for name in SEED_FILES}
    word = seeds[SEED_FILES[0]]
    seeds["word_139.webp"] = _reencode(word, "WEBP", quality=75)
    seeds["word_139.lossless.webp"] = _reencode(word, "WEBP", lossless=True)
    seeds["word_139.tif"] = _reencode(word, "TIFF", compression="packbits")
    seeds["word_612.deflate.tif"] = _reencode(seeds[SEED_FILES[1]], "TIFF",
                                              compression="tiff_deflate")
    seeds["word_139.gif"] = _reencode(word, "GIF")
    seeds["word_139.bmp"] = _reencode(word, "BMP")
    return seeds


SEEDS = load_seeds()
SEED_NAMES = sorted(SEEDS)

# ------------------------------------------------------------------------ document seeds

DOC_PAGES = ("en_words_ic15/word_139.png", "en_words_ic15/word_612.png",
             "peer_rapidocr_lines/text_cls.jpg", "peer_rapidocr_lines/test_without_det.jpg")


def _tiff(frames: list[Image.Image], **kw: Any) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], **kw)
    return buf.getvalue()


def _gray16_big_endian(im: Image.Image) -> Image.Image:
    """16-bit gray, which Pillow writes as a big-endian (``MM``) TIFF."""
    gray = np.asarray(im.convert("L")).astype(">u2") * 257
    return Image.frombytes("I;16B", im.size, gray.tobytes())


def load_doc_seeds() -> dict[str, bytes]:
    """Small real documents built by real tools (tests/docs.py) from the eval crops."""
    pages = [SEEDS[name] for name in DOC_PAGES]
    frames = [Image.open(io.BytesIO(page)).convert("RGB") for page in pages]
    one = docs.image_pdf(pages[:1])
    two = docs.image_pdf([pages[2], pages[1]])
    seeds = {
        "1page.pdf": one,
        "2pages.pdf": two,
        "3pages.pdf": docs.image_pdf(pages[1:]),
        "born_digital.pdf": docs.text_pdf(["edgeocr fuzz 42", "second line"], size=(200, 60)),
        "plain_text.pdf": docs.plain_text_pdf(["edgeocr fuzz 42", "a (second) line"]),
        "ocr_layer.pdf": docs.with_text_layer(two, ["hidden words"], mode=3),
        "rotated.pdf": docs.rotated(two, 90),
        "dangling.pdf": docs.pdf_from_objects([
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 9 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 60 30] >>",
        ]),
        "2pages.tif": docs.multipage_tiff(frames[:2]),
        "3pages.packbits.tif": _tiff([frames[1].convert("L"), frames[0].convert("1"),
                                      frames[3]], compression="packbits"),
        "2pages.raw.tif": _tiff(frames[1:3]),
        "2pages.16bit.be.tif": _tiff([_gray16_big_endian(f) for f in frames[:2]]),
    }
    if shutil.which("qpdf"):  # `make doc-tools`
        with tempfile.TemporaryDirectory() as tmp:
            seeds["encrypted.pdf"] = docs.qpdf_encrypt(one, Path(tmp))
            seeds["owner_password.pdf"] = docs.qpdf_encrypt(two, Path(tmp), user_password="")
    return seeds


DOC_SEEDS = load_doc_seeds()
DOC_SEED_NAMES = sorted(DOC_SEEDS)
ALL_SEEDS = {**SEEDS, **DOC_SEEDS}

# ------------------------------------------------------------------ format structure


def png_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each PNG chunk after the signature."""
    units, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        end = min(len(data), pos + 12 + length)
        units.append((pos, end))
        pos = end
    return units


def jpeg_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each marker segment before the scan (SOS and what follows is one)."""
    units, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            units.append((pos, len(data)))
            break
        end = min(len(data), pos + 2 + length)
        units.append((pos, end))
        pos = end
    return units


def riff_units(data: bytes) -> list[tuple[int, int]]:
    units, pos = [], 12
    while pos + 8 <= len(data):
        (length,) = struct.unpack("<I", data[pos + 4:pos + 8])
        end = min(len(data), pos + 8 + length + (length & 1))
        units.append((pos, end))
        pos = end
    return units


PDF_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b.*?endobj", re.S)


def pdf_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each ``N G obj ... endobj``."""
    return [m.span() for m in PDF_OBJECT.finditer(data)]


def is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]


def is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*")


def units_of(data: bytes) -> list[tuple[int, int]]:
    """Structural units to drop, repeat or swap: chunks, segments, PDF objects, or 64-byte
    blocks."""
    if data.startswith(b"\x89PNG"):
        units = png_units(data)
    elif data.startswith(b"\xff\xd8"):
        units = jpeg_units(data)
    elif data.startswith(b"RIFF"):
        units = riff_units(data)
    elif is_pdf(data):
        units = pdf_units(data)
    else:
        units = [(i, min(i + 64, len(data))) for i in range(0, len(data), 64)]
    return units or [(0, len(data))]


Field = tuple[int, int, str]  # offset, size in bytes, struct byte order


def header_fields(data: bytes) -> list[Field]:
    """Offsets of the header fields decoders trust: dimensions, depths, counts, offsets."""
    if data.startswith(b"\x89PNG") and len(data) >= 29:
        return [(16, 4, ">"), (20, 4, ">"), (24, 1, ">"), (25, 1, ">"), (26, 1, ">"),
                (27, 1, ">"), (28, 1, ">")]
    if data.startswith(b"\xff\xd8"):
        fields: list[Field] = []
        for start, _end in jpeg_units(data):
            fields.append((start + 2, 2, ">"))  # every segment's length
            if data[start + 1] in (0xC0, 0xC1, 0xC2):
                fields += [(start + 4, 1, ">"), (start + 5, 2, ">"), (start + 7, 2, ">"),
                           (start + 9, 1, ">"), (start + 11, 1, ">")]
        return [f for f in fields if f[0] + f[1] <= len(data)]
    if data.startswith(b"RIFF"):
        fields = [(4, 4, "<")]
        for start, _end in riff_units(data):
            fields.append((start + 4, 4, "<"))
            kind = data[start:start + 4]
            if kind == b"VP8 ":
                fields += [(start + 14, 2, "<"), (start + 16, 2, "<")]
            elif kind == b"VP8L":
                fields += [(start + 9, 2, "<"), (start + 11, 2, "<")]
        return [f for f in fields if f[0] + f[1] <= len(data)]
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return tiff_fields(data)
    if data.startswith(b"GIF"):
        return [(6, 2, "<"), (8, 2, "<"), (10, 1, "<"), (13 + 5, 2, "<"), (13 + 7, 2, "<")]
    if data.startswith(b"BM"):
        return [(2, 4, "<"), (10, 4, "<"), (18, 4, "<"), (22, 4, "<"), (28, 2, "<"),
                (30, 4, "<")]
    return [(0, 4, "<")]


def tiff_fields(data: bytes) -> list[Field]:
    """Each first-IFD entry's type, count and value/offset fields."""
    order = "<" if data.startswith(b"II") else ">"
    if len(data) < 8:
        return []
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return [(4, 4, order)]
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    fields: list[Field] = [(4, 4, order), (ifd, 2, order)]
    for i in range(min(count, 64)):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(data):
            break
        fields += [(entry + 2, 2, order), (entry + 4, 4, order), (entry + 8, 4, order)]
    return fields


def set_field(data: bytes, field: Field, value: int) -> bytes:
    offset, size, order = field
    fmt = order + {1: "B", 2: "H", 4: "I"}[size]
    value &= (1 << (8 * size)) - 1
    out = data[:offset] + struct.pack(fmt, value) + data[offset + size:]
    if out.startswith(b"\x89PNG") and 16 <= offset < 29:  # keep IHDR's CRC valid: the
        out = out[:29] + struct.pack(">I", zlib.crc32(out[12:29])) + out[33:]  # data lies
    return out


def get_field(data: bytes, field: Field) -> int:
    offset, size, order = field
    return struct.unpack(order + {1: "B", 2: "H", 4: "I"}[size], data[offset:offset + size])[0]


# ------------------------------------------------------------------------ mutations

Draw = Callable[[st.SearchStrategy[Any]], Any]
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 64, 127, 128, 255, 256, 1023, 4096,
               32767, 32768, 65535, 2**24 - 1, 2**31 - 1, 2**31, 2**32 - 1]


def flip_bits(draw: Draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(out) - 1))
        out[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(out)


def overwrite(draw: Draw, data: bytes) -> bytes:
    pos = draw(st.integers(0, len(data) - 1))
    patch = draw(st.binary(min_size=1, max_size=16))
    return data[:pos] + patch + data[pos + len(patch):]


def truncate(draw: Draw, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data) - 1))]


def cut_or_insert(draw: Draw, data: bytes) -> bytes:
    pos = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        return data[:pos] + data[pos + draw(st.integers(1, 256)):]
    return data[:pos] + draw(st.binary(min_size=1, max_size=64)) + data[pos:]


def splice(draw: Draw, data: bytes, pool: dict[str, bytes] = SEEDS) -> bytes:
    """Crossover with another seed: our head, their tail (or a slice of theirs inserted)."""
    other = pool[draw(st.sampled_from(sorted(pool)))]
    pos = draw(st.integers(0, len(data)))
    start = draw(st.integers(0, len(other) - 1))
    if draw(st.booleans()):
        return data[:pos] + other[start:]
    return data[:pos] + other[start:start + draw(st.integers(1, 512))] + data[pos:]


def unit_op(draw: Draw, data: bytes, pool: dict[str, bytes] = SEEDS) -> bytes:
    """Drop, repeat, swap or transplant a chunk / segment / object / block."""
    units = units_of(data)
    a, b = units[draw(st.integers(0, len(units) - 1))]
    op = draw(st.sampled_from(["drop", "repeat", "swap", "transplant"]))
    if op == "drop":
        return data[:a] + data[b:]
    if op == "repeat":
        return data[:b] + data[a:b] * draw(st.integers(1, 3)) + data[b:]
    if op == "swap":
        c, d = units[draw(st.integers(0, len(units) - 1))]
        if (c, d) == (a, b):
            return data
        (a, b), (c, d) = sorted([(a, b), (c, d)])
        return data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:]
    other = pool[draw(st.sampled_from(sorted(pool)))]
    c, d = units_of(other)[draw(st.integers(0, len(units_of(other)) - 1))]
    return data[:a] + other[c:d] + data[b:]


def change_field(draw: Draw, data: bytes) -> bytes:
    fields = [f for f in header_fields(data) if f[0] + f[1] <= len(data)]
    if not fields:
        return data
    field = fields[draw(st.integers(0, len(fields) - 1))]
    old = get_field(data, field)
    value = draw(st.one_of(
        st.sampled_from(INTERESTING),
        st.integers(0, 512),
        st.sampled_from([old + 1, max(old - 1, 0), old * 2, old // 2, old * 4]),
    ))
    return set_field(data, field, value)


MUTATIONS = (flip_bits, overwrite, truncate, cut_or_insert, splice, unit_op, change_field)


@st.composite
def mutated_images(draw: Draw) -> bytes:
    data = SEEDS[draw(st.sampled_from(SEED_NAMES))]
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        data = draw(st.sampled_from(MUTATIONS))(draw, data)
    return data


# ------------------------------------------------------------------ document mutations

PDF_NUMBER = re.compile(rb"(?<![A-Za-z0-9.])-?\d+(?:\.\d*)?")
NUMBERS = [b"0", b"-0", b"-1", b"1", b"2", b"0.0001", b".5", b"-.5", b"72", b"612", b"14400",
           b"14401", b"65535", b"65536", b"2147483647", b"2147483648", b"-2147483649",
           b"4294967295", b"4294967296", b"99999999999999999999", b"1" + b"0" * 40,
           b"1" + b"0" * 400, b"3.402823466e38", b"1e400", b"NaN", b"-inf", b"0 0 R"]


def number_for(draw: Draw, old: bytes) -> bytes:
    try:
        value = int(float(old))
    except (ValueError, OverflowError):
        value = 0
    return draw(st.one_of(
        st.sampled_from(NUMBERS),
        st.sampled_from([str(v).encode() for v in INTERESTING]),
        st.sampled_from([str(v).encode() for v in (value + 1, value - 1, value * 2, value // 2,
                                                   -value, value * 1000)]),
    ))


def pdf_number(draw: Draw, data: bytes) -> bytes:
    """Any number: object numbers, /Length, /Count, /Width, xref offsets, startxref, ..."""
    spans = [m.span() for m in PDF_NUMBER.finditer(data, 0, 1 << 16)]
    if not spans:
        return data
    a, b = spans[draw(st.integers(0, len(spans) - 1))]
    return data[:a] + number_for(draw, data[a:b]) + data[b:]


PAGE_COUNT = re.compile(rb"/Count\s*(-?\d+)")


def pdf_page_count(draw: Draw, data: bytes) -> bytes:
    spans = [m.span(1) for m in PAGE_COUNT.finditer(data)]
    if not spans:
        return data
    a, b = spans[draw(st.integers(0, len(spans) - 1))]
    value = draw(st.sampled_from([b"0", b"-1", b"1", b"2", b"3", b"4", b"5",
                                  b"%d" % DOC_MAX_PAGES, b"%d" % (DOC_MAX_PAGES + 1), b"2000",
                                  b"5000", b"65536", b"2147483647", b"4294967297",
                                  b"99999999999999999999"]))
    return data[:a] + value + data[b:]


PAGE_BOX = re.compile(rb"/(?:MediaBox|CropBox)\s*(\[[^\]]*\])")
BOXES = [b"[0 0 14400 14400]", b"[0 0 14401 14401]", b"[0 0 99999999 99999999]",
         b"[0 0 2147483648 2147483648]", b"[0 0 1%s 1]" % (b"0" * 40), b"[0 0 0 0]",
         b"[0 0 -612 -792]", b"[612 792 0 0]", b"[-7200 -7200 7200 7200]", b"[0 0 1 14400]",
         b"[0 0 14400 1]", b"[0 0 0.01 0.01]", b"[0 0 0.5 5000]", b"[0 0 5000 0.5]",
         b"[0 0 1728 1728]", b"[0 0 1e400 1e400]", b"[0 0 NaN 792]", b"[0 0 612]", b"[]",
         b"[0 0 612 792 5]", b"[/a /b /c /d]", b"[0 0 612 792", b"[(a) 0 612 792]",
         b"[4294967295 4294967295 0 0]"]


def pdf_page_box(draw: Draw, data: bytes) -> bytes:
    """A huge, negative, degenerate, inverted or malformed /MediaBox or /CropBox."""
    spans = [m.span(1) for m in PAGE_BOX.finditer(data)]
    if not spans:
        return data
    a, b = spans[draw(st.integers(0, len(spans) - 1))]
    return data[:a] + draw(st.sampled_from(BOXES)) + data[b:]


PAGE_DICT = re.compile(rb"/Type\s*/Page\b")
PAGE_ENTRIES = [b"/Rotate 90", b"/Rotate 45", b"/Rotate -270", b"/Rotate 2147483647",
                b"/UserUnit 75000", b"/UserUnit 0", b"/UserUnit -1", b"/CropBox [0 0 1 1]",
                b"/CropBox [0 0 14400 14400]", b"/MediaBox [0 0 14400 14400]",
                b"/MediaBox [0 0 3000 3000]", b"/Contents 999 0 R", b"/Contents [1 0 R 1 0 R]",
                b"/Resources 1 0 R", b"/Parent 999 0 R", b"/Kids [1 0 R]", b"/Type /Pages",
                b"/Count 5000", b"/Annots [<< /Subtype /Widget /Rect [0 0 1e9 1e9] >>]",
                b"/Group << /S /Transparency /CS /DeviceCMYK >>"]


def pdf_page_entry(draw: Draw, data: bytes) -> bytes:
    """An extra (or contradicting) key in a page dictionary."""
    ends = [m.end() for m in PAGE_DICT.finditer(data)]
    if not ends:
        return data
    at = ends[draw(st.integers(0, len(ends) - 1))]
    return data[:at] + b" " + draw(st.sampled_from(PAGE_ENTRIES)) + b" " + data[at:]


KEYWORD = re.compile(rb"xref|trailer|startxref|%%EOF|endobj|\bobj\b|endstream|\bstream\b|"
                     rb"/Prev|/Root|/Size|/Length|/Linearized|/Encrypt|/Kids|/Pages")
JUNK = [b"<<", b">>", b"[", b"]", b"(", b")", b"\\", b"<", b">", b"0 0 R", b"/Prev 0",
        b"/Prev 216", b"/Root 99 0 R", b"/Root 1 0 R", b"/Size 0", b"/Size 2147483647",
        b"%%EOF\n", b"xref\n0 1\n0000000000 65535 f \n", b"xref\n0 4294967295\n",
        b"trailer\n<< /Root 1 0 R /Size 9 >>\n", b"startxref\n0\n", b"startxref\n-1\n",
        b"endobj", b"stream\n", b"endstream", b"\x00", b"\r", b"\n" * 3, b"9999999999 0 obj",
        b"1 0 obj << /Type /XRef /W [1 9 1] /Size 3 /Index [0 4294967295] >> stream\n\x00\x01"
        b"endstream endobj", b"<< /Type /ObjStm /N 2147483647 /First 0 >> stream\n1 0 endstream",
        b"[" * 200, b"<<" * 200]


def pdf_keyword_junk(draw: Draw, data: bytes) -> bytes:
    """Junk at the structure the reader trusts: xref, trailer, startxref, objects, streams."""
    hits = [m.span() for m in KEYWORD.finditer(data)]
    if not hits:
        return data
    a, b = hits[draw(st.integers(0, len(hits) - 1))]
    junk = draw(st.one_of(st.sampled_from(JUNK), st.binary(min_size=1, max_size=24)))
    op = draw(st.sampled_from(["before", "after", "replace", "delete"]))
    if op == "before":
        return data[:a] + junk + data[a:]
    if op == "after":
        return data[:b] + junk + data[b:]
    return data[:a] + (junk if op == "replace" else b"") + data[b:]


PDF_NAME = re.compile(rb"/[A-Za-z][A-Za-z0-9]*")
NAMES = [b"/FlateDecode", b"/DCTDecode", b"/LZWDecode", b"/ASCIIHexDecode", b"/ASCII85Decode",
         b"/RunLengthDecode", b"/CCITTFaxDecode", b"/JBIG2Decode", b"/JPXDecode", b"/Crypt",
         b"/Page", b"/Pages", b"/Catalog", b"/XObject", b"/Image", b"/Form", b"/Font",
         b"/Type0", b"/Kids", b"/Contents", b"/Parent", b"/Resources", b"/Filter",
         b"/DecodeParms", b"/Length", b"/Width", b"/Height", b"/BitsPerComponent",
         b"/ColorSpace", b"/DeviceCMYK", b"/DeviceGray", b"/Indexed", b"/ICCBased", b"/ObjStm",
         b"/XRef", b"/Encrypt", b"/Annots", b"/Rotate", b"/MediaBox", b"/Root", b"/Prev"]


def pdf_name_swap(draw: Draw, data: bytes) -> bytes:
    spans = [m.span() for m in PDF_NAME.finditer(data, 0, 1 << 16)]
    if not spans:
        return data
    a, b = spans[draw(st.integers(0, len(spans) - 1))]
    return data[:a] + draw(st.sampled_from(NAMES)) + data[b:]


CONTENT = re.compile(rb"stream\r?\n")
OPERATORS = [b"q " * 300, b"Q " * 50, b"1000000 0 0 1000000 0 0 cm", b"0 0 0 0 0 0 cm",
             b"/Im0 Do", b"/Im0 Do " * 50, b"/F1 1e9 Tf", b"/F9 12 Tf (x) Tj",
             b"BI /W 100000 /H 100000 /BPC 8 /CS /G ID \x00\x00 EI",
             b"BI /W 2 /H 2 /BPC 1 /CS /G /F /CCF ID \xff\xff EI", b"0 0 m 1e30 1e30 l S",
             b"(unbalanced", b"[<00ff> -1e9 <41>] TJ", b"BT", b"ET", b"3 Tr", b"7 Tr",
             b"1 0 0 1 -1e9 -1e9 Tm (far away) Tj", b"/GS0 gs", b"/P <</MCID 0>> BDC"]


def pdf_content_junk(draw: Draw, data: bytes) -> bytes:
    """Operators inserted at the start of a stream (they count where it is a content stream
    that is not compressed)."""
    ends = [m.end() for m in CONTENT.finditer(data)]
    if not ends:
        return data
    at = ends[draw(st.integers(0, len(ends) - 1))]
    return data[:at] + draw(st.sampled_from(OPERATORS)) + b"\n" + data[at:]


def tiff_ifd_fields(data: bytes) -> tuple[list[Field], list[Field], list[int]]:
    """Every IFD in the chain (either byte order): the entry count and each entry's tag, type,
    count and value fields; the links (the header's and each IFD's next-IFD offset); and the
    IFDs' offsets."""
    order = "<" if data.startswith(b"II") else ">"
    fields: list[Field] = []
    links: list[Field] = [(4, 4, order)]
    ifds: list[int] = []
    if len(data) < 8:
        return fields, [], ifds
    (at,) = struct.unpack(order + "I", data[4:8])
    while at and at + 2 <= len(data) and at not in ifds and len(ifds) < 32:
        ifds.append(at)
        (count,) = struct.unpack(order + "H", data[at:at + 2])
        fields.append((at, 2, order))
        for i in range(min(count, 64)):
            entry = at + 2 + 12 * i
            if entry + 12 > len(data):
                break
            fields += [(entry, 2, order), (entry + 2, 2, order), (entry + 4, 4, order),
                       (entry + 8, 4, order), (entry + 8, 2, order)]
        link = at + 2 + 12 * count
        if link + 4 > len(data):
            break
        links.append((link, 4, order))
        (at,) = struct.unpack(order + "I", data[link:link + 4])
    return fields, links, ifds


def tiff_field(draw: Draw, data: bytes) -> bytes:
    """Any IFD field of any page: counts, tags, types, values, offsets."""
    fields, _, ifds = tiff_ifd_fields(data)
    if not fields:
        return data
    field = fields[draw(st.integers(0, len(fields) - 1))]
    old = get_field(data, field)
    value = draw(st.one_of(
        st.sampled_from(INTERESTING),
        st.integers(0, 512),
        st.sampled_from([old + 1, max(old - 1, 0), old * 2, old // 2, old * 4, len(data),
                         len(data) - 1, len(data) + 1, *ifds]),
    ))
    return set_field(data, field, value)


TIFF_TAGS = {
    256: [0, 1, 2, 65535, 65536, 100_000, 2**20, 2**20 + 1, 2**31 - 1, 2**32 - 1],  # width
    257: [0, 1, 2, 65535, 65536, 100_000, 2**20, 2**20 + 1, 2**31 - 1, 2**32 - 1],  # height
    258: [0, 1, 2, 3, 4, 7, 12, 16, 24, 32, 64, 65535],  # bits per sample
    259: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 32773, 32946, 34712, 34925, 50000, 65535],  # compression
    262: [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 32844, 32845, 65535],  # photometric
    273: [0, 1, 8, 2**31, 2**32 - 1],  # strip offsets
    274: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 65535],  # orientation
    277: [0, 1, 2, 3, 4, 5, 16, 65535],  # samples per pixel
    278: [0, 1, 2, 2**16, 2**32 - 1],  # rows per strip
    279: [0, 1, 15, 2**31, 2**32 - 1],  # strip byte counts
    284: [0, 1, 2, 3],  # planar configuration
    317: [0, 1, 2, 3, 65535],  # predictor
    338: [0, 1, 2, 3, 65535],  # extra samples
    339: [0, 1, 2, 3, 4, 5, 65535],  # sample format
}


def tiff_tag(draw: Draw, data: bytes) -> bytes:
    """Set a dimension, depth, compression, layout tag of one page: type LONG, count 1 (so
    that a value over 65535 is what a reader sees), or just the value."""
    order = "<" if data.startswith(b"II") else ">"
    _, _, ifds = tiff_ifd_fields(data)
    entries = []
    for at in ifds:
        (count,) = struct.unpack(order + "H", data[at:at + 2])
        for i in range(min(count, 64)):
            entry = at + 2 + 12 * i
            if entry + 12 <= len(data):
                (tag,) = struct.unpack(order + "H", data[entry:entry + 2])
                if tag in TIFF_TAGS:
                    entries.append((entry, tag))
    if not entries:
        return data
    entry, tag = entries[draw(st.integers(0, len(entries) - 1))]
    value = draw(st.sampled_from(TIFF_TAGS[tag]))
    if draw(st.booleans()):  # the value as a LONG, count 1
        return data[:entry + 2] + struct.pack(order + "HII", 4, 1, value) + data[entry + 12:]
    return set_field(data, (entry + 8, 4, order), value)


def tiff_link(draw: Draw, data: bytes) -> bytes:
    """Point the header or a page's next-IFD link elsewhere: nowhere, back into the chain
    (a loop), past the end, into the header or the pixel data."""
    _, links, ifds = tiff_ifd_fields(data)
    if not links:
        return data
    link = links[draw(st.integers(0, len(links) - 1))]
    value = draw(st.sampled_from([0, 1, 2, 4, 7, 8, len(data) - 2, len(data), len(data) + 100,
                                  2**31, 2**32 - 1, *ifds, *(i + 1 for i in ifds)]))
    return set_field(data, link, value)


def doc_truncate(draw: Draw, data: bytes) -> bytes:
    """Cut the file short, at any byte or at a structure (an object, an IFD) boundary."""
    cuts = [b for _, b in units_of(data)] if is_pdf(data) else tiff_ifd_fields(data)[2]
    if cuts and draw(st.booleans()):
        return data[: cuts[draw(st.integers(0, len(cuts) - 1))]]
    return truncate(draw, data)


GENERIC = (flip_bits, overwrite, doc_truncate, cut_or_insert, partial(splice, pool=ALL_SEEDS))
PDF_MUTATIONS = (*GENERIC, pdf_number, pdf_number, pdf_page_count, pdf_page_box, pdf_page_entry,
                 pdf_keyword_junk, pdf_keyword_junk, pdf_name_swap, pdf_content_junk,
                 partial(unit_op, pool=DOC_SEEDS))
TIFF_MUTATIONS = (*GENERIC, tiff_field, tiff_field, tiff_tag, tiff_tag, tiff_link)


@st.composite
def mutated_documents(draw: Draw) -> tuple[str, bytes]:
    """(seed name, bytes): a document seed after 0-3 mutations that know its format."""
    name = draw(st.sampled_from(DOC_SEED_NAMES))
    data = DOC_SEEDS[name]
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        ops = PDF_MUTATIONS if is_pdf(data) else TIFF_MUTATIONS if is_tiff(data) else GENERIC
        data = draw(st.sampled_from(ops))(draw, data)
    return name, data


MAGICS = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"II*\x00",
          b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"RIFF\xff\xff\xff\x7fWEBPVP8X",
          b"%PDF-1.7\n", b"\n%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\n"]
random_images = st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS),
                          st.binary(max_size=2048))

# ------------------------------------------------------------------------ body forms

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/tiff",
               "application/octet-stream", "image/x-anything", "image/png; charset=binary",
               "IMAGE/PNG", "image/"]


DOC_TYPES = ["application/pdf", "image/tiff", "application/octet-stream", "image/png",
             "application/pdf; charset=binary", "APPLICATION/PDF", "image/tiff-fx"]


@st.composite
def requests_for(draw: Draw, data: bytes, types: list[str] = IMAGE_TYPES) -> dict[str, Any]:
    """``client.post`` kwargs carrying ``data`` in one of the forms (or a broken one)."""
    # weighted towards forms that reach the decoder: that is where the bugs were
    form = draw(st.sampled_from(["raw"] * 4 + ["multipart"] * 2 + ["base64"] * 2
                                + ["raw_any_type", "base64_odd"]))
    if form == "raw":
        return {"content": data, "headers": {"Content-Type": draw(st.sampled_from(types))}}
    if form == "raw_any_type":
        return {"content": data, "headers": {"Content-Type": draw(printable)}}
    if form == "multipart":
        field = draw(st.sampled_from(["image", "file", "other"]))
        part = (draw(printable) or "x", data, draw(st.sampled_from([*types, "text/plain"])))
        extra = {"note": ("n.txt", b"hello", "text/plain")} if draw(st.booleans()) else {}
        return {"files": {field: part, **extra}}
    encoded = base64.b64encode(data).decode()
    if form == "base64":
        return {"json": {"image_base64": encoded}}
    variant = draw(st.sampled_from(["urlsafe", "no_padding", "newlines", "extra_key",
                                    "not_string", "truncated_json"]))
    if variant == "urlsafe":
        return {"json": {"image_base64": base64.urlsafe_b64encode(data).decode()}}
    if variant == "no_padding":
        return {"json": {"image_base64": encoded.rstrip("=")}}
    if variant == "newlines":
        return {"json": {"image_base64": "\n".join(encoded[i:i + 76]
                                                   for i in range(0, len(encoded), 76))}}
    if variant == "extra_key":
        return {"json": {"image_base64": encoded, "mode": "line"}}
    if variant == "not_string":
        return {"json": {"image_base64": [encoded]}}
    body = json.dumps({"image_base64": encoded}).encode()
    return {"content": body[: draw(st.integers(0, len(body) - 1))],
            "headers": {"Content-Type": "application/json"}}


broken_bodies = st.one_of(
    st.builds(lambda b: {"content": b, "headers": {"Content-Type": "application/json"}},
              st.binary(max_size=512)),
    st.builds(lambda t: {"content": t.encode(), "headers": {"Content-Type": "application/json"}},
              st.text(max_size=200)),
    st.builds(lambda v: {"json": v}, st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
            st.sampled_from(["image_base64", "image", "x"]), kids, max_size=3),
        max_leaves=8)),
    st.builds(lambda b, boundary: {"content": b, "headers": {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}},
        st.binary(max_size=512), st.sampled_from(["x", "----b", "", '"q"', "a" * 80])),
)

# ------------------------------------------------------------------------- the app

class FuzzApp:
    """The app with the real engine and a recording local store, built once per module, with
    its in-process worker. The worker's exceptions are kept: the local worker would log and
    retry them, and record "processing_failed" after the last attempt; for bad input that is a
    crash, and it fails the case."""

    def __init__(self, root: Path, engine, **settings: Any) -> None:
        self.store = RecordingStore(root)
        self.app = create_app(Settings(results_dir=root, **settings), store=self.store,
                              engine_factory=lambda: engine)
        self.client = TestClient(self.app, raise_server_exceptions=True)
        self.pipeline: str = self.app.state.pipeline
        self.local = self.app.state.local_worker
        self.worker_errors = record_worker_errors(self.local.worker)
        self.crashes: dict[str, str] = {}  # digests another exception made the worker fail

    def check(self, kwargs: dict[str, Any]) -> httpx.Response | None:
        """POST and assert the invariants; the final answer (after the worker, for a 202), or
        None when there is nothing more to check."""
        self.worker_errors.clear()
        before = len(self.store.puts)
        resp = self.client.post("/ocr", **kwargs)
        assert resp.status_code < 500, resp.text[:500]
        if resp.status_code == 202:  # a long document: the worker reads it
            event("202 handed to the worker")
            return self.settle(resp.json()["status_url"], before)
        if resp.status_code != 200:
            self.check_refused(resp)
            assert len(self.store.puts) == before, "a failed request wrote to the store"
            return resp
        self.check_stored(resp)
        return resp

    def upload(self, data: bytes, ctype: str) -> httpx.Response | None:
        """POST /uploads, the PUT it asks for, the worker, GET status_url: the final answer,
        with the invariants asserted (None when nothing was uploaded)."""
        self.worker_errors.clear()
        before = len(self.store.puts)
        sha = hashlib.sha256(data).hexdigest()
        offer = self.client.post("/uploads", json={"sha256": sha, "bytes": len(data),
                                                   "content_type": ctype})
        assert offer.status_code < 500, offer.text[:500]
        if not data:
            assert offer.status_code == 422, offer.text[:500]
            self.check_refused(offer)
            return None
        if offer.status_code == 200:  # read before: nothing to upload
            event("uploads: 200 read before")
            self.check_stored(offer)
            return offer
        if offer.status_code == 202:
            return self.settle(offer.json()["status_url"], before)
        if offer.status_code != 201:  # refused before: its recorded error
            event("uploads: refused before")
            self.check_refused(offer, sha)
            assert len(self.store.puts) == before, "a refused hash wrote to the store"
            return offer
        up = offer.json()["upload"]
        put = self.client.put(up["url"], content=data, headers=up["headers"])
        assert put.status_code == 200, put.text[:500]
        return self.settle(offer.json()["status_url"], before)

    def settle(self, status_url: str, before: int) -> httpx.Response | None:
        """Let the worker finish (retries included), then GET status_url and check it."""
        digest = status_url.rsplit("/", 1)[1]
        for _ in range(5):  # a crash is retried after the marker join_idle waits for
            assert self.local.join_idle(timeout=300), "the worker did not go idle"
            resp = self.client.get(status_url)
            if resp.status_code != 202:
                break
        assert resp.status_code != 202, f"still pending once the worker is idle: {resp.text}"
        for exc in self.worker_errors:
            self.crashes[digest] = repr(exc)
            self.crashed(digest)
        assert resp.status_code < 500, resp.text[:500]
        new = self.store.puts[before:]
        if resp.status_code == 200:
            self.check_stored(resp)
            for n in range(1, resp.json()["document"]["pages"] + 1):
                page = self.store.get(page_key(self.pipeline, digest, n))
                assert page is not None, f"page {n}'s object is missing"
            return resp
        error = self.check_refused(resp, digest)
        allowed = {status_key(self.pipeline, digest), upload_key(digest)}
        assert set(new) <= allowed, f"a refused document stored {sorted(set(new) - allowed)}"
        status = json.loads(self.store.get(status_key(self.pipeline, digest)).body)
        assert status["status"] == "failed" and status["error"] == error, status
        return resp

    def check_refused(self, resp: httpx.Response, digest: str | None = None) -> dict[str, str]:
        assert resp.status_code in DOCUMENTED_4XX, resp.text[:500]
        error = assert_error_shape(resp)
        event(f"{resp.status_code} {error['code']}")
        if error["code"] == "processing_failed":
            self.crashed(digest)  # the worker gave up on these bytes: it crashed on them
        return error

    def crashed(self, digest: str | None) -> None:
        """One failure, raised from one place, whether the crash is seen now or its recorded
        "processing_failed" is answered on a replay (so that hypothesis shrinks one error)."""
        raise AssertionError(f"the worker crashed on these bytes: "
                             f"{self.crashes.get(digest or '', 'processing_failed')}")

    def check_stored(self, resp: httpx.Response) -> None:
        """A 200 is stored, and is what was stored; a document's pages are in order, each
        read or carrying its error, their thumbnails stored."""
        body = resp.json()
        event(f"200 {'hit' if body['cached'] else 'miss'}")
        assert body["stored"] is True and body["result_url"], body
        key = result_key(self.pipeline, body["hash"])
        stored = self.store.get(key)
        assert stored is not None, "a 200 said stored: true but nothing is there"
        result = json.loads(stored.body)
        assert_answer_is(result, body)
        pages = result["pages"]
        assert result["document"]["pages"] == len(pages) >= 1, result["document"]
        assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
        assert result["text"] == "\f".join(p["text"] for p in pages)
        for page in pages:
            if "error" in page:
                event(f"200 with a page error {page['error']['code']}")
                assert page["lines"] == [] and page["thumbnail"] is None, page
            else:
                assert page["width"] > 0 and page["height"] > 0, page
                assert self.store.get(page["thumbnail"]) is not None, page["thumbnail"]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, engine):
    app = FuzzApp(tmp_path_factory.mktemp("fuzz-store"), engine)
    with app.client:
        yield app


@pytest.fixture(scope="module")
def docfuzz(tmp_path_factory, engine):
    """Documents by POST /ocr (and the twin the upload test compares the worker with)."""
    app = FuzzApp(tmp_path_factory.mktemp("docfuzz-store"), engine, max_pixels=DOC_MAX_PIXELS,
                  max_pages=DOC_MAX_PAGES)
    with app.client:
        yield app


@pytest.fixture(scope="module")
def upfuzz(tmp_path_factory, engine):
    """Documents by POST /uploads + PUT + the worker, in a store of their own."""
    app = FuzzApp(tmp_path_factory.mktemp("upfuzz-store"), engine, max_pixels=DOC_MAX_PIXELS,
                  max_pages=DOC_MAX_PAGES)
    with app.client:
        yield app


@settings(PROFILE)
@given(data=mutated_images(), form=st.data())
def test_mutated_real_images(fuzz: FuzzApp, data: bytes, form: st.DataObject):
    kwargs = form.draw(requests_for(data))
    resp = fuzz.check(kwargs)
    if resp and resp.status_code == 200 and kwargs.get("content") == data:
        assert resp.json()["hash"] == content_hash(data, None)  # raw bodies: byte-exact


@settings(PROFILE)
@given(data=random_images, form=st.data())
def test_random_bytes(fuzz: FuzzApp, data: bytes, form: st.DataObject):
    fuzz.check(form.draw(requests_for(data)))


@settings(PROFILE)
@given(kwargs=broken_bodies)
def test_broken_bodies(fuzz: FuzzApp, kwargs: dict[str, Any]):
    fuzz.check(kwargs)


@settings(PROFILE, max_examples=DOC_EXAMPLES)
@given(case=mutated_documents(), form=st.data())
def test_mutated_documents(docfuzz: FuzzApp, case: tuple[str, bytes], form: st.DataObject):
    name, data = case
    event(f"seed {name}")
    kwargs = form.draw(requests_for(data, DOC_TYPES))
    resp = docfuzz.check(kwargs)
    if resp and resp.status_code == 200 and kwargs.get("content") == data:
        assert resp.json()["hash"] == content_hash(data, None)


@settings(PROFILE, max_examples=DOC_EXAMPLES)
@given(case=mutated_documents(),
       ctype=st.sampled_from(["application/pdf", "image/tiff", "application/octet-stream"]))
def test_mutated_documents_uploaded(upfuzz: FuzzApp, docfuzz: FuzzApp, case: tuple[str, bytes],
                                    ctype: str):
    """Through the worker, and then the same bytes by POST /ocr in another store: the same
    status and code, and a read document the same stored result."""
    name, data = case
    event(f"seed {name}")
    final = upfuzz.upload(data, ctype)
    if final is None:
        return
    twin = docfuzz.check({"content": data, "headers": {"Content-Type": "application/pdf"}})
    if twin is None:
        return
    assert twin.status_code == final.status_code, (final.text[:300], twin.text[:300])
    if final.status_code != 200:
        assert twin.json()["error"]["code"] == final.json()["error"]["code"], (
            final.text[:300], twin.text[:300])
        if twin.json() != final.json():
            event(f"same code, another message: {final.json()['error']['code']}")
        return
    key = result_key(upfuzz.pipeline, final.json()["hash"])
    mine, theirs = (json.loads(app.store.get(key).body) for app in (upfuzz, docfuzz))
    if mine != theirs:
        # PDFium draws a font it has to substitute (a font dict without /BaseFont) with
        # metrics that depend on what the process read before, so text-layer boxes may move
        # a few pixels between two reads of the same bytes; the text may not
        assert without_text_boxes(mine) == without_text_boxes(theirs), differences(mine, theirs)
        event("text-layer boxes differ between two reads")


def without_text_boxes(result: dict[str, Any]) -> dict[str, Any]:
    pages = [{**p, "lines": [line["text"] for line in p["lines"]]} if p["source"] == "text"
             else p for p in result["pages"]]
    return {**result, "pages": pages}


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two JSON values differ: (path, a's, b's), the first few."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [(f"{path}.{k}", a.get(k), b.get(k)) for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}.{k}")
        return out[:8]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")][:8]
    return [] if a == b else [(path, a, b)]
