"""Test doubles and builders shared by several test modules (no test module imports another)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import httpx

from edgeocr.store import CACHE_CONTROL, CONTENT_TYPE, LocalStore, PutOutcome

ZH_PAGES = [f"images/zh_pages_synth/zhsyn_dev_page_0{i}.jpg" for i in range(3)]


class CountingEngine:
    """Delegates to the real engine and counts page reads: proves when inference did not run."""

    def __init__(self, engine) -> None:
        self.engine, self.calls = engine, 0

    def ocr_image(self, img, *args, **kwargs):
        self.calls += 1
        return self.engine.ocr_image(img, *args, **kwargs)


class RecordingStore(LocalStore):
    """A LocalStore that remembers every write attempt: proves a failed request stored
    nothing, rather than inferring it from a directory listing."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    def put_if_absent(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
                      cache_control: str = CACHE_CONTROL) -> PutOutcome:
        self.puts.append(key)
        return super().put_if_absent(key, body, content_type, cache_control)

    def put(self, key: str, body: bytes, *args, **kwargs):
        self.puts.append(key)
        return super().put(key, body, *args, **kwargs)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_error_shape(resp: httpx.Response) -> dict[str, str]:
    """Exactly ``{"error": {"code", "message"}}`` with non-empty strings, as JSON."""
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    return error


def pdf_of(*images: Path) -> bytes:
    """A scanned-document PDF: each image one page, embedded losslessly (img2pdf)."""
    import img2pdf

    return img2pdf.convert([str(p) for p in images])


class Clock:
    """A stand-in for Lambda's remaining time: ``remaining_s`` ticks down one page at a time."""

    def __init__(self, pages_allowed: int, per_page_s: float = 100.0) -> None:
        self.left = (pages_allowed - 1) * per_page_s + 50.0  # the worker keeps 20 s back
        self.per_page_s = per_page_s

    def __call__(self) -> float:
        left, self.left = self.left, self.left - self.per_page_s
        return left


def assert_answer_is(stored: dict, body: dict) -> None:
    """An API answer is the stored result plus its URLs: every stored field as stored, each
    page only gaining ``thumbnail_url``."""
    assert {k: v for k, v in stored.items() if k != "pages"} == {
        k: body[k] for k in stored if k != "pages"}
    assert [{k: v for k, v in p.items() if k != "thumbnail_url"} for p in body["pages"]] == (
        stored["pages"])


class FakeEngine:
    """Stands in for the ONNX engine where a test is about HTTP, not OCR (404s, validation,
    headers): no model is loaded, each page reads as one line of ``text`` covering the page,
    and ``calls`` counts the pages read."""

    def __init__(self, text: str = "fake text") -> None:
        self.text, self.calls = text, 0

    def ocr_image(self, img, *args, **kwargs):
        from types import SimpleNamespace

        self.calls += 1
        h, w = img.shape[:2]
        from edgeocr.ocr.engine import Line, Word

        box = [[0, 0], [w, 0], [w, h], [0, h]]
        words = tuple(Word(t, 0.99, box) for t in self.text.split())
        line = Line(self.text, 0.99, box, words)
        return SimpleNamespace(lines=[line], rotation=0, timings_ms={})


def fuzz_profile():
    """The hypothesis profiles of the fuzz tests, registered once here: ``ci`` (the default:
    derandomized, 150 examples per test, for ``make test``) and ``long`` (5,000 per test,
    fresh randomness, failures kept in .hypothesis/, for ``make fuzz``); returns the one
    ``HYPOTHESIS_PROFILE`` names."""
    import os

    from hypothesis import HealthCheck, settings

    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
               HealthCheck.filter_too_much]
    settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                              database=None, suppress_health_check=slow_ok, print_blob=True)
    settings.register_profile("long", max_examples=5_000, deadline=None,
                              suppress_health_check=slow_ok, print_blob=True)
    return settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def record_worker_errors(worker) -> list[BaseException]:
    """Keep the exceptions of ``worker.process`` (still raising them): the local worker would
    log and retry them, and a crash on bad input must fail the test, not become a
    "processing_failed". Returns the list they are appended to."""
    errors: list[BaseException] = []
    process = worker.process

    def recording(sha256: str, *args, **kwargs):
        try:
            return process(sha256, *args, **kwargs)
        except Exception as exc:
            errors.append(exc)
            raise

    worker.process = recording
    return errors


class CountingApp:
    """A fresh app on a recording directory store whose engine counts page reads."""

    def __init__(self, root: Path, engine) -> None:
        from fastapi.testclient import TestClient

        from edgeocr.http.app import create_app
        from edgeocr.settings import Settings

        self.store = RecordingStore(root)
        self.counting = CountingEngine(engine)
        self.app = create_app(Settings(results_dir=root), store=self.store,
                              engine_factory=lambda: self.counting)
        self.client = TestClient(self.app, raise_server_exceptions=True)
        self.pipeline: str = self.app.state.pipeline
