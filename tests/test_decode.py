"""Decode and validation cases: each one built from a real eval image or a real encoder."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from edgeocr.errors import TooLarge, UnreadableImage, UnsupportedFormat
from edgeocr.ocr.decode import decode, sniff_format
from helpers import png_header_only

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def marker_image() -> Image.Image:
    """60x40 white image with a red block in the top-left corner: shows orientation."""
    img = Image.new("RGB", (60, 40), "white")
    img.paste((255, 0, 0), (0, 0, 15, 10))
    return img


def red_corner(bgr: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero((bgr[:, :, 2] > 200) & (bgr[:, :, 0] < 80))
    h, w = bgr.shape[:2]
    return int(ys.mean() > h / 2), int(xs.mean() > w / 2)  # (bottom?, right?)


@pytest.mark.parametrize(
    ("orientation", "shape", "corner"),
    [(1, (40, 60), (0, 0)), (3, (40, 60), (1, 1)), (6, (60, 40), (0, 1)), (8, (60, 40), (1, 0)),
     (2, (40, 60), (0, 1))],
)
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_exif_orientation_is_applied(orientation, shape, corner, fmt):
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(marker_image(), "JPEG", exif=exif, quality=95)
    else:  # TIFF decoders turn the page themselves: it must be turned once, not twice
        data = encode(marker_image(), "TIFF", tiffinfo={0x0112: orientation})
    out = decode(data, **LIMITS)
    assert out.pixels.shape[:2] == shape
    assert (out.info.height, out.info.width) == shape
    assert red_corner(out.pixels) == corner


def test_exif_rotated_real_image(eval_dir):
    """RapidOCR's EXIF test image is stored upside down with orientation tag 3."""
    data = (eval_dir / "images/peer_rapidocr_lines/img_exif_orientation.jpg").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        tag = im.getexif().get(0x0112)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    out = decode(data, **LIMITS)
    assert tag == 3
    assert np.array_equal(out.pixels, cv2.rotate(raw, cv2.ROTATE_180))


@pytest.mark.parametrize(("ink", "background"), [(0, 255), (255, 0)])
def test_transparency_is_flattened_for_contrast(ink, background):
    img = Image.new("RGBA", (50, 20), (0, 0, 0, 0))
    img.paste((ink, ink, ink, 255), (10, 5, 40, 15))
    out = decode(encode(img, "PNG"), **LIMITS).pixels
    assert out.shape == (20, 50, 3)
    assert out[0, 0].tolist() == [background] * 3
    assert out[10, 20].tolist() == [ink] * 3


def test_sixteen_bit_png_keeps_its_contrast():
    gray = np.zeros((20, 30), np.uint16)
    gray[:, 15:] = 65535
    _ok, buf = cv2.imencode(".png", gray)
    out = decode(buf.tobytes(), **LIMITS).pixels
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 29].tolist() == [255, 255, 255]


def test_grayscale_becomes_three_channels():
    out = decode(encode(Image.new("L", (30, 10), 77), "PNG"), **LIMITS)
    assert out.pixels.shape == (10, 30, 3) and out.pixels[0, 0].tolist() == [77, 77, 77]


def test_cmyk_jpeg_is_converted():
    img = Image.new("CMYK", (30, 10), (0, 255, 255, 0))  # pure red in CMYK
    out = decode(encode(img, "JPEG", quality=95), **LIMITS).pixels
    b, g, r = out[5, 15].tolist()
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"),
                                           ("BMP", "bmp"), ("TIFF", "tiff"), ("GIF", "gif")])
def test_every_supported_format_decodes(fmt, name):
    """Each format is sniffed by its bytes and named as the result's ``document.format``
    says (DESIGN §2: ``"jpeg"``, not ``"jpg"``), and decodes to the right pixels."""
    data = encode(marker_image(), fmt)
    out = decode(data, **LIMITS)
    assert sniff_format(data) == name
    assert (out.info.format, out.info.width, out.info.height, out.info.bytes) == (
        name, 60, 40, len(data))
    assert out.pixels.shape == (40, 60, 3)
    assert red_corner(out.pixels) == (0, 0)
    b, g, r = out.pixels[35, 50].tolist()  # the rest is white
    assert min(b, g, r) > 200


def test_first_frame_of_animated_gif_and_first_page_of_tiff():
    frames = [Image.new("RGB", (20, 10), c) for c in ("white", "black")]
    for fmt in ("GIF", "TIFF"):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
        out = decode(buf.getvalue(), **LIMITS).pixels
        assert out.mean() > 250, fmt


def test_real_eval_images_decode(eval_dir):
    for rel in ("images/en_pages_tesseract/phototest.tif",
                "images/en_doclines_uw3/0028_010012.bin.png",
                "images/receipts_sroie/X51006329399.jpg"):
        out = decode((eval_dir / rel).read_bytes(), **LIMITS)
        assert out.pixels.ndim == 3 and out.pixels.shape[2] == 3 and out.pixels.dtype == np.uint8


def test_pixel_bomb_is_refused_from_the_header():
    data = png_header_only(50_000, 50_000)
    assert len(data) < 5_000
    with pytest.raises(TooLarge) as err:
        decode(data, **LIMITS)
    assert err.value.code == "too_many_pixels"


def test_too_many_bytes():
    with pytest.raises(TooLarge) as err:
        decode(b"\xff\xd8\xff" + b"\0" * 100, max_bytes=50, max_pixels=10**6)
    assert err.value.code == "too_many_bytes"


def test_empty_and_unknown_and_broken(eval_dir):
    with pytest.raises(UnreadableImage):
        decode(b"", **LIMITS)
    with pytest.raises(UnsupportedFormat):
        decode(b"%PDF-1.7 not an image", **LIMITS)
    png = (eval_dir / "images/en_doclines_uw3/0028_010012.bin.png").read_bytes()
    with pytest.raises(UnreadableImage):
        decode(png[:40], **LIMITS)
    with pytest.raises(UnreadableImage):
        decode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, **LIMITS)


def test_truncated_jpeg_is_refused_or_decoded_whole(eval_dir):
    """A cut JPEG either decodes (libjpeg pads the missing rows) or fails with a clear error;
    it never crashes or returns a wrong-sized image."""
    data = (eval_dir / "images/receipts_sroie/X51006329399.jpg").read_bytes()
    for cut in (20, 200, len(data) // 2):
        try:
            out = decode(data[:cut], **LIMITS)
        except UnreadableImage as exc:
            assert exc.code == "corrupt_image"
        else:
            assert out.pixels.shape[:2] == (out.info.height, out.info.width)


def test_sniff_format():
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_format(b"II*\x00rest") == "tiff"
    assert sniff_format(b"<svg") is None
