"""The known-bad corpus (tests/corpus/bad/, made by scripts/make_bad_corpus.py) through the app.

Every file goes through every body form (raw with a neutral and with a wrong image type,
multipart ``image`` and ``file``, base64 JSON) and must get exactly the status and code in
``expected.json``: the service sniffs bytes, so the form and the declared type must not
matter. Failures must have the JSON error shape, run no inference and store nothing; the edge
cases that must succeed must be stored and read as ``expected.json`` says.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from fastapi.testclient import TestClient

from edgeocr.keys import content_hash, result_key
from helpers import CountingApp, assert_answer_is, assert_error_shape

CORPUS = Path(__file__).parent / "corpus" / "bad"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text())
CASES: list[dict[str, Any]] = MANIFEST["cases"]
BY_FILE = {case["file"]: case for case in CASES}
FORMS = ("raw_octet", "raw_wrong_type", "multipart_image", "multipart_file", "base64_json")


def post_form(client: TestClient, form: str, name: str, data: bytes) -> httpx.Response:
    """POST ``data`` to /ocr in one of the body forms DESIGN §2 accepts."""
    if form == "raw_octet":
        return client.post("/ocr", content=data,
                           headers={"Content-Type": "application/octet-stream"})
    if form == "raw_wrong_type":  # the declared type is a lie on purpose: bytes decide
        return client.post("/ocr", content=data, headers={"Content-Type": "image/jpeg"})
    if form in ("multipart_image", "multipart_file"):
        field = form.removeprefix("multipart_")
        return client.post("/ocr", files={field: (name, data, "application/octet-stream")})
    if form == "base64_json":
        return client.post("/ocr", json={"image_base64": base64.b64encode(data).decode()})
    raise ValueError(form)


class CorpusApp(CountingApp):
    """One app for the whole module: identical bytes in later forms are cache hits, so each
    good case pays for OCR once."""

    def key(self, data: bytes) -> str:
        return result_key(self.pipeline, content_hash(data, None))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, engine):
    app = CorpusApp(tmp_path_factory.mktemp("corpus-store"), engine)
    with app.client:
        yield app


def test_manifest_lists_every_file():
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "expected.json"}
    assert on_disk == set(BY_FILE)
    assert all(case["status"] in (200, 400, 413, 415) for case in CASES)
    assert all((case["status"] == 200) == (case.get("code") is None) for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_corpus_case(corpus: CorpusApp, case: dict[str, Any]):
    """Every body form in turn, one test per file."""
    data = (CORPUS / case["file"]).read_bytes()
    for form in FORMS:
        calls_before, puts_before = corpus.counting.calls, len(corpus.store.puts)
        resp = post_form(corpus.client, form, case["file"], data)
        assert resp.status_code == case["status"], (form, case["why"], resp.text[:300])
        if case["status"] == 200:
            check_success(corpus, case, data, resp)
            continue
        error = assert_error_shape(resp)
        assert error["code"] == case["code"], (form, error)
        assert corpus.counting.calls == calls_before, f"{form}: a refused input ran inference"
        assert len(corpus.store.puts) == puts_before, f"{form}: a refused input was stored"
        assert corpus.store.get(corpus.key(data)) is None, form


def check_success(corpus: CorpusApp, case: dict[str, Any], data: bytes,
                  resp: httpx.Response) -> None:
    body = resp.json()
    assert body["stored"] is True and body["result_url"]
    stored = corpus.store.get(corpus.key(data))
    assert stored is not None, "a 200 must be stored (or say stored: false)"
    result = json.loads(stored.body)
    assert_answer_is(result, body)
    checks = case.get("checks", {})
    if "width" in checks:
        assert (body["pages"][0]["width"], body["pages"][0]["height"]) == (
            checks["width"], checks["height"])
    if "lines" in checks:
        assert len(body["pages"][0]["lines"]) == checks["lines"] and body["text"] == ""
    if "text" in checks:
        assert body["text"] == checks["text"]
    if "text_contains" in checks:
        assert checks["text_contains"] in body["text"]
    if "pages" in checks:
        assert body["document"]["pages"] == len(body["pages"]) == checks["pages"]
    if "first_page_as" in checks:
        reference = BY_FILE[checks["first_page_as"]]["checks"]
        first = body["pages"][0]
        assert first["text"] == reference["text"]
        assert (first["width"], first["height"]) == (reference["width"], reference["height"])
        assert all(p["text"] for p in body["pages"]), "every page has text"
    if "same_text_as" in checks:
        reference = BY_FILE[checks["same_text_as"]]["checks"]
        assert body["text"] == reference["text"]
        assert (body["pages"][0]["width"], body["pages"][0]["height"]) == (
            reference["width"], reference["height"])


HEADER_BOMBS = [case for case in CASES if case.get("code") == "too_many_pixels"]


@pytest.mark.parametrize("case", HEADER_BOMBS, ids=[c["file"] for c in HEADER_BOMBS])
def test_pixel_bombs_are_refused_from_the_header(corpus: CorpusApp, case, monkeypatch):
    """No full decode may even start: both decoders are booby-trapped, and the request's
    Python-side allocations stay tiny (50,000² 8-bit pixels would be 2.5 GB)."""
    import edgeocr.ocr.decode

    def trap(*_a: object, **_k: object) -> None:
        raise AssertionError("a full decode ran for an image refused by its header")

    monkeypatch.setattr(cv2, "imdecode", trap)
    monkeypatch.setattr(edgeocr.ocr.decode, "_decode_with_pillow", trap)
    data = (CORPUS / case["file"]).read_bytes()
    tracemalloc.start()
    try:
        resp = post_form(corpus.client, "raw_octet", case["file"], data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status_code == 413 and assert_error_shape(resp)["code"] == "too_many_pixels"
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing {case['file']}"
