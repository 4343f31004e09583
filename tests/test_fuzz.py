"""Fuzzing POST /ocr with hypothesis: mutated real images and random bodies, every body form.

What must hold for any input (DESIGN §2): never a 5xx, never an unhandled exception (the
TestClient re-raises server exceptions), every non-200 is ``{"error": {"code", "message"}}``
with a 4xx we document, nothing is written to the store for a failed request, and every 200
is stored (this store never fails) and matches what was stored.

Seeds are *small* real images (IC15 word crops, RapidOCR's line crops, UW-III lines, and
the same crops re-encoded as WebP/TIFF/GIF/BMP, since the eval set has no small ones), so a
mutant that still decodes costs one cheap OCR and most budget goes on decoding paths.

Budget: the ``ci`` profile (default) is derandomized and bounded (~150 examples per test,
well under a minute); ``HYPOTHESIS_PROFILE=long`` (``make fuzz``) runs 3 x 5,000 = 15,000
cases with fresh randomness and keeps failures in ``.hypothesis/`` for replay. Open bugs it
found are tolerated by signature (``KNOWN_BUGS`` below) so long runs look for new ones.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeocr.http.app import create_app
from edgeocr.keys import content_hash, result_key
from edgeocr.settings import Settings
from helpers import RecordingStore, assert_answer_is, assert_error_shape

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
            HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("long", max_examples=5_000, deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


def units_of(data: bytes) -> list[tuple[int, int]]:
    """Structural units to drop, repeat or swap: chunks, segments, or 64-byte blocks."""
    if data.startswith(b"\x89PNG"):
        units = png_units(data)
    elif data.startswith(b"\xff\xd8"):
        units = jpeg_units(data)
    elif data.startswith(b"RIFF"):
        units = riff_units(data)
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


def splice(draw: Draw, data: bytes) -> bytes:
    """Crossover with another seed: our head, their tail (or a slice of theirs inserted)."""
    other = SEEDS[draw(st.sampled_from(SEED_NAMES))]
    pos = draw(st.integers(0, len(data)))
    start = draw(st.integers(0, len(other) - 1))
    if draw(st.booleans()):
        return data[:pos] + other[start:]
    return data[:pos] + other[start:start + draw(st.integers(1, 512))] + data[pos:]


def unit_op(draw: Draw, data: bytes) -> bytes:
    """Drop, repeat, swap or transplant a chunk / segment / block."""
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
    other = SEEDS[draw(st.sampled_from(SEED_NAMES))]
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


MAGICS = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"II*\x00",
          b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"RIFF\xff\xff\xff\x7fWEBPVP8X"]
random_images = st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS),
                          st.binary(max_size=2048))

# ------------------------------------------------------------------------ body forms

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/tiff",
               "application/octet-stream", "image/x-anything", "image/png; charset=binary",
               "IMAGE/PNG", "image/"]


@st.composite
def requests_for(draw: Draw, data: bytes) -> dict[str, Any]:
    """``client.post`` kwargs carrying ``data`` in one of the forms (or a broken one)."""
    # weighted towards forms that reach the decoder: that is where the bugs were
    form = draw(st.sampled_from(["raw"] * 4 + ["multipart"] * 2 + ["base64"] * 2
                                + ["raw_any_type", "base64_odd"]))
    if form == "raw":
        return {"content": data, "headers": {"Content-Type": draw(st.sampled_from(IMAGE_TYPES))}}
    if form == "raw_any_type":
        return {"content": data, "headers": {"Content-Type": draw(printable)}}
    if form == "multipart":
        field = draw(st.sampled_from(["image", "file", "other"]))
        part = (draw(printable) or "x", data, draw(st.sampled_from([*IMAGE_TYPES, "text/plain"])))
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

# Open app bugs this fuzzer found, each pinned by a strict xfail in test_corpus.py. They are
# tolerated here (and counted in the statistics' events) so that a long run keeps looking
# for *other* bugs instead of stopping at the first known one. Delete an entry once fixed.
KNOWN_BUGS: tuple[tuple[type[BaseException], str, str], ...] = ()


def known_bug(exc: BaseException) -> str | None:
    for kind, needle, what in KNOWN_BUGS:
        if isinstance(exc, kind) and needle in str(exc):
            return what
    return None



class FuzzApp:
    """The app with the real engine and a recording local store, built once per module."""

    def __init__(self, root: Path, engine) -> None:
        self.store = RecordingStore(root)
        self.app = create_app(Settings(results_dir=root), store=self.store,
                              engine_factory=lambda: engine)
        self.client = TestClient(self.app, raise_server_exceptions=True)
        self.pipeline: str = self.app.state.pipeline
        self.cases = 0

    def check(self, kwargs: dict[str, Any]) -> httpx.Response | None:
        """POST and assert the invariants; the response, or None for a known open bug."""
        self.cases += 1
        before = len(self.store.puts)
        try:
            resp = self.client.post("/ocr", **kwargs)
        except Exception as exc:
            known = known_bug(exc)
            if known is None:
                raise
            event(f"KNOWN BUG (a 500 today): {known}")
            return None
        assert resp.status_code < 500, resp.text[:500]
        if resp.status_code != 200:
            assert resp.status_code in DOCUMENTED_4XX, resp.text[:500]
            event(f"{resp.status_code} {assert_error_shape(resp)['code']}")
            assert len(self.store.puts) == before, "a failed request wrote to the store"
            return resp
        body = resp.json()
        event(f"200 {'hit' if body['cached'] else 'miss'}")
        assert body["stored"] is True and body["result_url"], body
        key = result_key(self.pipeline, body["hash"])
        stored = self.store.get(key)
        assert stored is not None, "a 200 said stored: true but nothing is there"
        result = json.loads(stored.body)
        assert_answer_is(result, body)
        return resp


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, engine):
    app = FuzzApp(tmp_path_factory.mktemp("fuzz-store"), engine)
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
