"""Build ``tests/corpus/bad/``: hostile and odd uploads, each with the answer the API owes.

Why a script and not hand-collected files: every case is derived reproducibly from real eval
images (Apache-2.0 sources only: Tesseract's ``phototest.tif`` and RapidOCR's test lines) or
from headers crafted here, so a reviewer can see exactly how each file was damaged, and the
corpus can be rebuilt when a case is added. Files stay a few KB each: a "50,000 x 50,000" PNG
is a header plus a small deflate stream, which is the point (it must be refused from the
header, before anything is allocated).

``expected.json`` lists every file with the status and error code the API must answer (DESIGN
§2: 400 unreadable, 413 too large, 415 not an image type we read) or, for the edge cases that
must succeed, 200 plus what to check in the result.

    .venv/bin/python scripts/make_bad_corpus.py [--eval-dir ../shared/eval] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL = (ROOT / ".." / "shared" / "eval").resolve()
DEFAULT_OUT = ROOT / "tests" / "corpus" / "bad"
PHOTOTEST = "images/en_pages_tesseract/phototest.tif"
EN_LINE = "images/peer_rapidocr_lines/en_rec.jpg"
REFERENCE = "ok_reference.png"  # the line the first-frame / first-page cases must read as
SOURCES = {
    PHOTOTEST: "tesseract-ocr/test, Apache-2.0",
    EN_LINE: "RapidAI/RapidOCR, Apache-2.0",
}


@dataclass
class Case:
    """One corpus file and the answer it must get."""

    file: str
    status: int
    code: str | None
    why: str
    source: str | None = None
    checks: dict[str, object] = field(default_factory=dict)


class Sources:
    """The real images everything is derived from, loaded once."""

    def __init__(self, eval_dir: Path) -> None:
        page = Image.open(eval_dir / PHOTOTEST)
        # copy through numpy: a crop keeps the TIFF's encoder info, which trips Pillow's writer
        self.ref = Image.fromarray(np.asarray(page.crop((28, 150, 232, 194)).convert("L")))
        self.line2 = Image.fromarray(np.asarray(page.crop((28, 184, 595, 230)).convert("L")))
        self.en_jpeg = (eval_dir / EN_LINE).read_bytes()


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_from_chunks(width: int, height: int, depth: int, color: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each chunk of a PNG."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((pos, data[pos + 4:pos + 8], length))
        pos += 12 + length
    return out


def idat_of(data: bytes) -> tuple[int, int]:
    """Offset and length of the first IDAT chunk."""
    return next((pos, length) for pos, kind, length in png_chunks(data) if kind == b"IDAT")


def with_bad_idat_crc(png: bytes) -> bytes:
    pos, length = idat_of(png)
    crc_at = pos + 8 + length
    return png[:crc_at] + bytes(b ^ 0xFF for b in png[crc_at:crc_at + 4]) + png[crc_at + 4:]


def with_garbage_idat(png: bytes, rng: random.Random) -> bytes:
    """IDAT replaced by random bytes with a *valid* CRC: only the inflater can notice."""
    pos, length = idat_of(png)
    garbage = rng.randbytes(length)
    return png[:pos] + png_chunk(b"IDAT", garbage) + png[pos + 12 + length:]


def png_missing_rows(img: Image.Image) -> bytes:
    """A complete, valid zlib stream holding only the top half of the rows IHDR promises."""
    gray = np.asarray(img.convert("L"))
    half = gray[: gray.shape[0] // 2]
    raw = b"".join(b"\0" + row.tobytes() for row in half)
    return png_from_chunks(img.width, img.height, 8, 0, zlib.compress(raw, 9))


def png_huge(width: int, height: int) -> bytes:
    """A header promising width x height 8-bit gray, and a real deflate stream of a few rows."""
    rows = (b"\0" + bytes(width)) * 40
    return png_from_chunks(width, height, 8, 0, zlib.compress(rows, 9))


def tiff_header(width: int, height: int, payload: bytes = bytes(16)) -> bytes:
    """A minimal little-endian, uncompressed 8-bit gray TIFF with the given header dims."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(payload))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + payload


def tiff_extra_samples(width: int, height: int, samples: int) -> bytes:
    """An uncompressed RGB TIFF with ``samples - 3`` extra channels (OpenCV reads up to 4)."""
    entries: list[tuple[int, int, list[int]]] = [
        (256, 4, [width]), (257, 4, [height]), (258, 3, [8] * samples), (259, 3, [1]),
        (262, 3, [2]), (273, 4, [0]), (277, 3, [samples]), (278, 4, [height]),
        (279, 4, [width * height * samples]), (284, 3, [1]), (338, 3, [0] * (samples - 3)),
    ]
    count = len(entries)
    blob_at = 8 + 2 + 12 * count + 4
    blob = b""
    ifd = struct.pack("<H", count)
    packed_values = []
    for tag, kind, values in entries:
        raw = b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in values)
        packed_values.append((tag, kind, values, raw))
    pixels_at = blob_at + sum(len(raw) for *_, raw in packed_values if len(raw) > 4)
    for tag, kind, values, raw in packed_values:
        if tag == 273:
            raw = struct.pack("<I", pixels_at)
        if len(raw) <= 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, len(values), blob_at + len(blob))
            blob += raw
    pixels = np.full((height, width, samples), 255, np.uint8).tobytes()
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + blob + pixels


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = bytes(64)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + info + pixels


def gif_big_frame(width: int, height: int) -> bytes:
    """A 1x1 logical screen holding one image descriptor of width x height."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;"
    return screen + frame


def jpeg_with_sof(jpeg: bytes, height: int, width: int) -> bytes:
    """The same scan data under a baseline SOF0 header claiming other dimensions."""
    at = jpeg.index(b"\xff\xc0") + 5
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


def jpeg_with_app1(jpeg: bytes, exif_tiff: bytes) -> bytes:
    payload = b"Exif\0\0" + exif_tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def exif_ifd_loop() -> bytes:
    """An EXIF IFD whose ExifIFD pointer points back at itself."""
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHII", 0x8769, 4, 1, 8) + b"\0\0\0\0")


def webp_lossless_with_size(webp: bytes, width: int, height: int) -> bytes:
    """A real lossless WebP whose VP8L header claims other dimensions (14 bits each)."""
    at = webp.index(b"VP8L") + 9
    bits = int.from_bytes(webp[at:at + 4], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    return webp[:at] + bits.to_bytes(4, "little") + webp[at + 4:]


def zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def animated_gif(first: Image.Image, *later: Image.Image) -> bytes:
    frames = [first.convert("P"), *(f.resize(first.size).convert("P") for f in later)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                  loop=0)


def animated_webp(first: Image.Image, *later: Image.Image) -> bytes:
    frames = [f.resize(first.size).convert("RGB") for f in later]
    return encode(first.convert("RGB"), "WEBP", save_all=True, append_images=frames,
                  duration=100, lossless=True)


def multipage_tiff(first: Image.Image, *later: Image.Image) -> bytes:
    # RGB: Pillow 13's libtiff writer rejects multi-page "L" with compression
    return encode(first.convert("RGB"), "TIFF", save_all=True,
                  append_images=[p.convert("RGB") for p in later], compression="tiff_deflate")


def gray_alpha(img: Image.Image) -> Image.Image:
    """Ink opaque, paper mostly transparent: flattening must bring the line back."""
    gray = np.asarray(img.convert("L"))
    alpha = np.where(gray > 200, 55, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([gray, alpha]), "LA")


def sixteen_bit(img: Image.Image) -> bytes:
    import cv2

    gray16 = np.asarray(img.convert("L")).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", gray16)
    assert ok
    return buf.tobytes()


def strip(img: Image.Image, long: int, short: int, *, vertical: bool,
          copies: int = 1) -> Image.Image:
    """The line scaled to ``short`` px high, ``copies`` times from the start of a white
    long x short strip (a banner)."""
    line = img.resize((img.width * short // img.height, short))
    canvas = Image.new("L", (long, short), 255)
    for i in range(copies):
        canvas.paste(line, (i * (line.width + 50), 0))
    return canvas.transpose(Image.Transpose.ROTATE_90) if vertical else canvas


MINIMAL_PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
               b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="200" '
       b'height="40"><text x="0" y="30">of file format.</text></svg>\n')
HTML = b"<!DOCTYPE html>\n<html><body><img src=x onerror=alert(1)></body></html>\n"


def bad_cases(src: Sources, rng: random.Random) -> list[tuple[Case, bytes]]:
    """Inputs the API must refuse with a 4xx and a stable code."""
    ref_png = encode(src.ref, "PNG", optimize=True)
    ref_webp = encode(src.ref.convert("RGB"), "WEBP", quality=80)
    ref_tiff = encode(src.ref, "TIFF", compression="packbits")
    ref_gif = encode(src.ref.convert("P"), "GIF")
    lossless = encode(src.ref, "WEBP", lossless=True)
    en = src.en_jpeg

    def c(file: str, status: int, code: str, why: str, data: bytes,
          source: str | None = None) -> tuple[Case, bytes]:
        return Case(file, status, code, why, source), data

    return [
        c("truncated.jpg", 400, "corrupt_image", "a real JPEG cut in the middle of its scan",
          cut(en, 0.5), EN_LINE),
        c("truncated.png", 400, "corrupt_image", "a real PNG cut inside IDAT",
          cut(ref_png, 0.6), PHOTOTEST),
        c("truncated.webp", 400, "corrupt_image", "a real lossy WebP cut inside its VP8 data",
          cut(ref_webp, 0.6), PHOTOTEST),
        c("truncated.tif", 400, "corrupt_image", "a real TIFF cut inside its strips",
          cut(ref_tiff, 0.5), PHOTOTEST),
        c("truncated.gif", 400, "corrupt_image", "a real GIF cut inside its LZW data",
          cut(ref_gif, 0.5), PHOTOTEST),
        c("png_bad_crc.png", 400, "corrupt_image",
          "IDAT's CRC is wrong (libpng refuses it; the data itself is intact)",
          with_bad_idat_crc(ref_png), PHOTOTEST),
        c("png_garbage_idat.png", 400, "corrupt_image",
          "IDAT is random bytes with a valid CRC", with_garbage_idat(ref_png, rng), PHOTOTEST),
        c("png_missing_rows.png", 400, "corrupt_image",
          "a complete zlib stream with half the rows IHDR promises (libpng: not enough image "
          "data)", png_missing_rows(src.ref), PHOTOTEST),
        c("png_50000x50000.png", 413, "too_many_pixels",
          "IHDR claims 50,000 x 50,000 over a few KB of deflate: refused from the header",
          png_huge(50_000, 50_000)),
        c("tiff_100000x100000.tif", 413, "too_many_pixels", "TIFF header claims 10^10 pixels",
          tiff_header(100_000, 100_000)),
        c("tiff_4294967295x1.tif", 413, "too_many_pixels", "TIFF width 2^32-1",
          tiff_header(2**32 - 1, 1)),
        c("bmp_100000x100000.bmp", 413, "too_many_pixels", "BMP header claims 10^10 pixels",
          bmp_header(100_000, 100_000)),
        c("bmp_top_down_100000.bmp", 413, "too_many_pixels",
          "top-down BMP (negative height) claiming 10^10 pixels", bmp_header(100_000, -100_000)),
        c("bmp_32x1048587.bmp", 400, "corrupt_image",
          "BMP header claims 32 x 1,048,587 (33.5 MP, under the pixel limit; one side over "
          "OpenCV's 2^20) over 64 bytes of pixels", bmp_header(32, 1_048_587)),
        c("tiff_32x1048587.tif", 400, "corrupt_image",
          "TIFF header claims 32 x 1,048,587 (33.5 MP, under the pixel limit; one side over "
          "OpenCV's 2^20) over 16 bytes of pixels", tiff_header(32, 1_048_587)),
        c("gif_frame_60000x60000.gif", 413, "too_many_pixels",
          "a 1x1 GIF screen holding a 60,000 x 60,000 frame", gif_big_frame(60_000, 60_000)),
        c("jpeg_sof_65535x65535.jpg", 413, "too_many_pixels",
          "a real JPEG whose SOF claims 65,535 x 65,535", jpeg_with_sof(en, 65535, 65535),
          EN_LINE),
        c("webp_16384x16384.webp", 413, "too_many_pixels",
          "a real lossless WebP whose VP8L header claims 16,384 x 16,384",
          webp_lossless_with_size(lossless, 16384, 16384), PHOTOTEST),
        c("empty.bin", 400, "empty_body", "zero bytes", b""),
        c("random.bin", 415, "unsupported_format", "4 KB of seeded random bytes",
          rng.randbytes(4096)),
        c("text.txt", 415, "unsupported_format", "plain text", b"of file format.\n"),
        c("page.html", 415, "unsupported_format", "HTML", HTML),
        c("doc.pdf", 400, "unreadable_document", "a minimal PDF with no pages", MINIMAL_PDF),
        c("image.svg", 415, "unsupported_format", "SVG: text, not a raster we read", SVG),
        c("archive.zip", 415, "unsupported_format", "a ZIP holding a real PNG",
          zip_of("line.png", ref_png), PHOTOTEST),
        c("jpeg_soi_only.jpg", 400, "corrupt_image", "JPEG magic and nothing else",
          b"\xff\xd8\xff"),
        c("png_signature_only.png", 400, "corrupt_image", "the PNG signature alone",
          b"\x89PNG\r\n\x1a\n"),
        c("webp_riff_only.webp", 400, "corrupt_image", "a RIFF/WEBP header with no image",
          b"RIFF\x0c\0\0\0WEBPVP8 \0\0\0\0"),
        c("gif_no_image.gif", 400, "corrupt_image", "a GIF screen descriptor, then the trailer",
          b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b";"),
        c("polyglot_gif_js.gif", 400, "corrupt_image",
          "GIFAR-style: GIF magic opening a JavaScript comment",
          b"GIF89a/*" + bytes(20) + b"*/=alert(document.domain);"),
        c("polyglot_html_png.html", 415, "unsupported_format",
          "HTML first, a real PNG inside", b"<html><!--" + ref_png + b"--></html>", PHOTOTEST),
        c("polyglot_bm_text.bmp", 400, "corrupt_image", "text that happens to start with BM",
          b"BMW 320d, 2009, low mileage\n"),
        c("polyglot_tiff_text.tif", 400, "corrupt_image", "TIFF magic followed by text",
          b"II*\x00this is not an IFD\n"),
        c("polyglot_jpeg_pdf.jpg", 400, "corrupt_image", "JPEG magic followed by a PDF",
          b"\xff\xd8\xff" + MINIMAL_PDF),
    ]


def good_cases(src: Sources) -> list[tuple[Case, bytes]]:
    """Odd but valid images the API must answer with 200 (and no crash)."""
    ref_png = encode(src.ref, "PNG", optimize=True)
    en = src.en_jpeg
    same = {"same_text_as": REFERENCE}

    def c(file: str, why: str, data: bytes, source: str | None = PHOTOTEST,
          **checks: object) -> tuple[Case, bytes]:
        return Case(file, 200, None, why, source, dict(checks)), data

    huge_exif = Image.Exif()
    huge_exif[0x010E] = "A" * 60_000  # ImageDescription
    return [
        c(REFERENCE, "the clean line the other cases are compared with", ref_png,
          width=src.ref.width, height=src.ref.height, text="of file format."),
        c("ok_animated.gif", "animated GIF: the first frame is read (the others are blank "
          "and another line)", animated_gif(src.ref, Image.new("L", (8, 8), 255), src.line2),
          **same),
        c("ok_multipage.tif", "two-page TIFF: both pages are read, the first as the "
          "reference image", multipage_tiff(src.ref, src.line2),
          checks={"first_page_as": "ok_reference.png", "pages": 2}),
        c("ok_cmyk.jpg", "CMYK JPEG", encode(src.ref.convert("CMYK"), "JPEG", quality=90),
          **same),
        c("ok_cmyk_line.jpg", "CMYK JPEG of a real photo-ish line",
          encode(Image.open(io.BytesIO(en)).convert("CMYK"), "JPEG", quality=85), EN_LINE,
          text_contains="facilitate"),
        c("ok_1x1.png", "a single pixel: no lines, no crash",
          encode(Image.new("RGB", (1, 1), "white"), "PNG"), None, width=1, height=1, lines=0),
        c("ok_20000x20.png", "extreme aspect ratio, wide",
          encode(strip(src.ref, 20_000, 20, vertical=False), "PNG", optimize=True),
          width=20_000, height=20),
        c("ok_20x20000.png", "extreme aspect ratio, tall",
          encode(strip(src.ref, 20_000, 20, vertical=True), "PNG", optimize=True),
          width=20, height=20_000),
        c("ok_33000x44_text.png", "a 33,000 px banner with three copies of a real line: "
          "within the pixel limit, one side over OpenCV's SHRT_MAX",
          encode(strip(src.ref, 33_000, 44, vertical=False, copies=3), "PNG", optimize=True),
          width=33_000, height=44),
        c("ok_16bit.png", "16-bit grayscale PNG", sixteen_bit(src.ref), **same),
        c("ok_gray_alpha.png", "grayscale + alpha PNG, paper mostly transparent",
          encode(gray_alpha(src.ref), "PNG"), **same),
        c("ok_lossless.webp", "lossless WebP", encode(src.ref, "WEBP", lossless=True), **same),
        c("ok_5_samples.tif", "RGB TIFF with two extra samples (OpenCV reads at most 4)",
          tiff_extra_samples(40, 12, 5), None, width=40, height=12, lines=0),
        c("ok_jpeg_huge_exif.jpg", "a 60 KB EXIF ImageDescription ahead of a real line",
          encode(Image.open(io.BytesIO(en)), "JPEG", quality=85, exif=huge_exif), EN_LINE,
          width=700, height=30, text_contains="facilitate"),
        c("ok_jpeg_exif_loop.jpg", "an EXIF IFD pointing at itself",
          jpeg_with_app1(en, exif_ifd_loop()), EN_LINE, width=700, height=30),
        c("ok_animated.webp", "animated WebP: the first frame is read",
          animated_webp(src.ref, src.line2), **same),
        c("ok_apng.png", "animated PNG: the default image (first frame) is read",
          encode(src.ref.convert("RGB"), "PNG", save_all=True,
                 append_images=[src.line2.resize(src.ref.size).convert("RGB")], duration=100),
          **same),
        c("ok_jpeg_sof_enlarged.jpg",
          "SOF claims 1600x1000 over the scan of a 700x30 line: libjpeg (like browsers) only "
          "warns 'premature end of data segment' and fills the rest; accepted on purpose, "
          "bounded by the pixel limit", jpeg_with_sof(en, 1000, 1600), EN_LINE,
          width=1600, height=1000),
        c("ok_png_then_html.png", "polyglot: a valid PNG with HTML appended after IEND",
          ref_png + HTML, **same),
        c("ok_jpeg_then_zip.jpg", "polyglot: a valid JPEG with a ZIP appended after EOI",
          en + zip_of("x.txt", b"hello"), EN_LINE, width=700, height=30),
    ]


def write(out: Path, cases: list[tuple[Case, bytes]], sources: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    for case, data in cases:
        (out / case.file).write_bytes(data)
    manifest = {
        "about": "Known-bad uploads and edge cases; made by scripts/make_bad_corpus.py. "
                 "status/code: what POST /ocr must answer for every body form.",
        "sources": sources,
        "cases": [{k: v for k, v in asdict(case).items() if v not in (None, {})}
                  for case, _ in cases],
    }
    (out / "expected.json").write_text(json.dumps(manifest, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    src = Sources(args.eval_dir)
    cases = bad_cases(src, random.Random(20240505)) + good_cases(src)
    names = [case.file for case, _ in cases]
    assert len(set(names)) == len(names), "duplicate file names"
    write(args.out, cases, SOURCES)
    total = sum(len(data) for _, data in cases)
    print(f"{len(cases)} files, {total / 1024:.0f} KB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
