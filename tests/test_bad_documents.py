"""Bad documents through the HTTP API (DESIGN §2): every body form of ``POST /ocr`` and
``POST /uploads`` + the local ``PUT`` + the in-process worker, polled on ``GET /ocr/{hash}``.

A document that cannot be opened is one 4xx, the same whichever way it came: the documented
status and code, the JSON error shape, no model loaded and no inference, nothing stored (an
upload leaves only its own bytes and its status object, which holds the failure, so that a
later ``GET`` or ``POST /uploads`` of the hash answers the same error). A document that opens
but has one page that cannot be read is a 200 whose other pages are read.

What the damaged pages give, and why:
- a TIFF whose page 2 lost half its data (its IFD intact): page 2's entry has
  ``"error": {"code": "unreadable_page"}`` and no lines, pages 1 and 3 are read as in the
  intact file. The page count and every header were valid at open; only decoding that one
  page failed, which is what the page ``error`` entry is for.
- a TIFF cut off inside page 2 (Pillow writes a page's data before its IFD, so page 2's IFD
  and all later ones are gone, and page 1 links to an IFD past the end of the file): a 400.
  How many pages the file had cannot be known, so there is no document to report pages of;
  reading it as a one-page TIFF would silently drop pages.
- a TIFF cut inside page 1 (so no IFD at all): a 400, with the same error JSON every time
  (the same bytes give the same error, its message included).
- a TIFF whose page 2 names a compression no reader knows (0): a 400 too, as a page bomb on
  page 2 is a 413: every page's header is checked at open, before anything is read.
- a PDF whose page 2 content stream does not inflate: a 200 with every page read, page 2
  blank (no lines) and *no* error. PDFium loads and renders the page (its parser drops a
  stream it cannot decode, and rendering reports nothing), so the page did render: it is the
  blank page every viewer shows. Only a page that cannot be loaded or rendered gets an error
  (a page-tree entry pointing at a missing object, the third case).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import docs
import edgeocr.ocr.decode
import edgeocr.ocr.pages
import edgeocr.ocr.pdf
from edgeocr.http.app import create_app
from edgeocr.keys import result_key, status_key, upload_key
from edgeocr.settings import Settings
from helpers import (
    CountingApp,
    RecordingStore,
    assert_answer_is,
    assert_error_shape,
    record_worker_errors,
)

FORMS = ("raw", "octet_stream", "multipart_file", "base64_json")
FAST_S = 1.0  # a refusal from headers, page count or page sizes: far under this, any form
LINE_IMAGES = ("images/peer_rapidocr_lines/text_cls.jpg",
               "images/peer_rapidocr_lines/test_without_det.jpg",
               "images/peer_rapidocr_lines/text_rec.jpg")


@dataclass(frozen=True)
class Refused:
    status: int
    code: str
    ctype: str  # what the raw form and POST /uploads declare


REFUSED = {
    "encrypted": Refused(422, "encrypted_document", "application/pdf"),
    "truncated": Refused(400, "unreadable_document", "application/pdf"),
    "truncated_image_pdf": Refused(400, "unreadable_document", "application/pdf"),
    "header_only": Refused(400, "unreadable_document", "application/pdf"),
    "no_pages": Refused(400, "unreadable_document", "application/pdf"),
    "5000_pages": Refused(413, "too_many_pages", "application/pdf"),
    "200_inch_page": Refused(413, "too_many_pixels", "application/pdf"),
    "tiff_bomb": Refused(413, "too_many_pixels", "image/tiff"),
    "tiff_bomb_page_2": Refused(413, "too_many_pixels", "image/tiff"),
    "tiff_cut_in_page_1": Refused(400, "corrupt_image", "image/tiff"),
    "tiff_cut_in_page_2": Refused(400, "corrupt_image", "image/tiff"),
    "tiff_unknown_compression_page_2": Refused(400, "corrupt_image", "image/tiff"),
}
# the codes a TIFF that cannot be opened may carry (decode.py and pages.py say corrupt_image)
SAME_KIND = {"corrupt_image": {"corrupt_image", "unreadable_document"}}


@dataclass(frozen=True)
class Damaged:
    """A document that opens, with one page that cannot be read (or reads blank)."""

    ctype: str
    page_error: bool  # page 2's entry carries an error (else it is read, blank)
    intact: str  # the undamaged document whose pages 1 and 3 it must read the same


DAMAGED = {
    "tiff_truncated_page_2": Damaged("image/tiff", True, "tiff"),
    "pdf_broken_content_page_2": Damaged("application/pdf", False, "pdf"),
    "pdf_dangling_page_2": Damaged("application/pdf", True, ""),
}


@pytest.fixture(scope="module")
def documents(eval_dir, tmp_path_factory) -> dict[str, bytes]:
    lines = [(eval_dir / f).read_bytes() for f in LINE_IMAGES]
    image_pdf = docs.image_pdf(lines)
    tiff = docs.multipage_tiff([Image.open(io.BytesIO(b)) for b in lines])
    shipped = docs.SHIPPED_PDFS[docs.REQUIRED_PDF]
    if not shipped.is_file():
        pytest.fail(f"{shipped} is missing: run `make doc-tools`")
    shipped_pdf = shipped.read_bytes()
    first = docs.multipage_tiff([Image.open(io.BytesIO(lines[0]))])
    return {
        "pdf": image_pdf,
        "tiff": tiff,
        "encrypted": docs.qpdf_encrypt(image_pdf, tmp_path_factory.mktemp("qpdf")),
        "truncated": shipped_pdf[: len(shipped_pdf) // 2],
        "truncated_image_pdf": image_pdf[: len(image_pdf) // 2],
        "header_only": b"%PDF-1.7\n",
        "no_pages": docs.blank_pdf(0),
        "5000_pages": docs.blank_pdf(5000),
        "200_inch_page": docs.blank_pdf(1, (14400, 14400)),
        "tiff_bomb": docs.tiff_bomb(),
        "tiff_bomb_page_2": docs.tiff_bomb(first=first),
        "tiff_cut_in_page_1": docs.tiff_cut_in_page(tiff, 1),
        "tiff_cut_in_page_2": docs.tiff_cut_in_page(tiff, 2),
        "tiff_unknown_compression_page_2": docs.tiff_set_tag(tiff, 2, 259, 0),
        "tiff_truncated_page_2": docs.tiff_with_truncated_page(tiff, 2),
        "pdf_broken_content_page_2": docs.broken_content_pdf(image_pdf, 2),
        "pdf_dangling_page_2": docs.dangling_page_pdf(),
    }


class Api(CountingApp):
    """A fresh counting app with its in-process worker, whose exceptions are kept."""

    def __init__(self, root: Path, engine) -> None:
        super().__init__(root, engine)
        self.worker_errors = record_worker_errors(self.app.state.local_worker.worker)

    @property
    def engine_loaded(self) -> bool:
        return self.app.state.engine.loaded

    def key(self, data: bytes) -> str:
        return result_key(self.pipeline, hashlib.sha256(data).hexdigest())

    def status_key(self, data: bytes) -> str:
        return status_key(self.pipeline, hashlib.sha256(data).hexdigest())

    def stored_result(self, data: bytes) -> dict | None:
        obj = self.store.get(self.key(data))
        return json.loads(obj.body) if obj is not None else None


@pytest.fixture
def api(tmp_path, engine):
    made: list[Api] = []

    def make(name: str = "a") -> Api:
        app = Api(tmp_path / name, engine)
        app.client.__enter__()
        made.append(app)
        return app

    yield make
    for app in made:
        app.client.__exit__(None, None, None)


def post_form(client: TestClient, form: str, data: bytes, ctype: str) -> httpx.Response:
    if form == "raw":
        return client.post("/ocr", content=data, headers={"Content-Type": ctype})
    if form == "octet_stream":
        return client.post("/ocr", content=data,
                           headers={"Content-Type": "application/octet-stream"})
    if form == "multipart_file":
        return client.post("/ocr", files={"file": ("document", data, ctype)})
    if form == "base64_json":
        return client.post("/ocr", json={"image_base64": base64.b64encode(data).decode()})
    raise ValueError(form)


def declare(data: bytes, ctype: str) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "content_type": ctype}


def poll(client: TestClient, status_url: str, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = client.get(status_url)
        if resp.status_code != 202:
            return resp
        assert resp.json()["status"] in ("queued", "running"), resp.text
        time.sleep(0.02)
    raise AssertionError(f"{status_url} still 202 after {timeout_s} s")


def upload(api: Api, data: bytes, ctype: str) -> tuple[httpx.Response, float]:
    """POST /uploads, the PUT it asks for, then GET status_url until it is not 202: the final
    answer and the seconds from the PUT to it."""
    offer = api.client.post("/uploads", json=declare(data, ctype))
    assert offer.status_code == 201, offer.text
    body = offer.json()
    sha = hashlib.sha256(data).hexdigest()
    assert body["status_url"] == f"/ocr/{sha}"
    start = time.perf_counter()
    put = api.client.put(body["upload"]["url"], content=data, headers=body["upload"]["headers"])
    assert put.status_code == 200, put.text
    final = poll(api.client, body["status_url"])
    return final, time.perf_counter() - start


def assert_refused(resp: httpx.Response, expected: Refused, where: str) -> dict[str, str]:
    assert resp.status_code < 500, (where, resp.text[:300])
    assert resp.status_code == expected.status, (where, resp.text[:300])
    error = assert_error_shape(resp)
    assert error["code"] in SAME_KIND.get(expected.code, {expected.code}), (where, error)
    return error


# --- documents that cannot be opened --------------------------------------------------------


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_in_every_body_form(api, documents, name):
    """Each form: the documented 4xx, fast, no model loaded, no inference, nothing stored."""
    data, expected, app = documents[name], REFUSED[name], api()
    answers = []
    for form in FORMS:
        start = time.perf_counter()
        resp = post_form(app.client, form, data, expected.ctype)
        elapsed = time.perf_counter() - start
        assert_refused(resp, expected, form)
        assert elapsed < FAST_S, (form, f"refused after {elapsed:.2f} s")
        assert app.store.puts == [], (form, app.store.puts)
        answers.append(resp.json())
    assert all(a == answers[0] for a in answers), answers  # the form does not matter
    assert app.counting.calls == 0 and not app.engine_loaded
    assert app.client.get(f"/ocr/{hashlib.sha256(data).hexdigest()}").status_code == 404


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_through_uploads(api, documents, name):
    """The worker refuses the upload with the very error JSON a synchronous POST gives; its
    status object holds it, so GET and POST /uploads answer it again; nothing is read and
    nothing but the upload's own bytes and status is stored."""
    data, expected = documents[name], REFUSED[name]
    app = api("uploads")
    final, elapsed = upload(app, data, expected.ctype)
    assert app.worker_errors == [], f"the worker crashed: {app.worker_errors[0]!r}"
    error = assert_refused(final, expected, "GET status_url")
    assert elapsed < 5 * FAST_S, f"the worker refused it after {elapsed:.2f} s"
    assert app.counting.calls == 0 and not app.engine_loaded
    sha = hashlib.sha256(data).hexdigest()
    assert set(app.store.puts) <= {app.status_key(data), upload_key(sha)}, app.store.puts
    assert not any(k.startswith("results/") for k in app.store.puts)
    status = json.loads(app.store.get(app.status_key(data)).body)
    assert status["status"] == "failed" and status["error"] == error, status
    # final for this hash: asked again, nothing to upload, the same error
    for again in (app.client.post("/uploads", json=declare(data, expected.ctype)),
                  app.client.get(f"/ocr/{sha}"),
                  app.client.post("/ocr", content=data, headers={
                      "Content-Type": "application/octet-stream"})):
        assert again.status_code == final.status_code and again.json() == final.json(), (
            again.text)
    assert app.counting.calls == 0
    # the same error JSON as the synchronous POST (another store: nothing to remember)
    sync = api("sync").client.post("/ocr", content=data, headers={
        "Content-Type": expected.ctype})
    assert (sync.status_code, sync.json()) == (final.status_code, final.json())


def test_5000_pages_are_refused_by_their_count(api, documents):
    """By the page count itself, before any page is looked at: a page limit one above the
    count lets the same bytes through to the page checks (and a 202: far too many to read
    now)."""
    data = documents["5000_pages"]
    app = api()
    resp = app.client.post("/ocr", content=data, headers={"Content-Type": "application/pdf"})
    assert_refused(resp, REFUSED["5000_pages"], "raw")
    assert "5000 pages" in resp.json()["error"]["message"]
    roomy = create_app(Settings(results_dir=app.store.root / "roomy", max_pages=5000,
                                local_worker=False),
                       store=RecordingStore(app.store.root / "roomy"),
                       engine_factory=lambda: app.counting)
    with TestClient(roomy) as client:
        resp = client.post("/ocr", content=data, headers={"Content-Type": "application/pdf"})
    assert resp.status_code == 202 and resp.json()["pages"] == 5000, resp.text
    assert app.counting.calls == 0


BOMBS = ("tiff_bomb", "tiff_bomb_page_2", "200_inch_page")


@pytest.mark.parametrize("name", BOMBS)
def test_page_bombs_are_refused_from_their_headers(api, documents, monkeypatch, name):
    """Nothing is decoded or rendered, nothing large allocated: the 10^10-pixel TIFF page and
    the 200-inch page are refused from their headers, by POST and by the worker alike."""
    def trap(*args, **kwargs):
        raise AssertionError(f"{name}: a page was decoded or rendered")

    for module, attr in ((cv2, "imdecode"), (cv2, "imdecodemulti"),
                         (edgeocr.ocr.decode, "_decode_with_pillow"),
                         (edgeocr.ocr.pages, "_pillow_page"), (edgeocr.ocr.pdf, "_render")):
        monkeypatch.setattr(module, attr, trap)
    data, expected = documents[name], REFUSED[name]
    app = api()
    tracemalloc.start()
    try:
        resp = app.client.post("/ocr", content=data, headers={"Content-Type": expected.ctype})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_refused(resp, expected, "raw")
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing {name}"
    uploads = api("uploads")
    final, _ = upload(uploads, data, expected.ctype)
    assert uploads.worker_errors == [], f"the worker crashed: {uploads.worker_errors[0]!r}"
    assert_refused(final, expected, "uploads")
    assert final.json() == resp.json()


# --- documents with one bad page ------------------------------------------------------------


def check_damaged(app: Api, documents: dict[str, bytes], name: str, body: dict) -> None:
    """Three page entries in order; page 2 as ``DAMAGED`` says; the others read, with their
    thumbnails stored; the document's text their texts joined by form feeds."""
    case = DAMAGED[name]
    pages = body["pages"]
    assert body["document"]["pages"] == len(pages) == (3 if case.intact else 2), body["document"]
    assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
    assert body["text"] == "\f".join(p["text"] for p in pages)
    bad = pages[1]
    assert bad["lines"] == [] and bad["text"] == ""
    if case.page_error:
        assert set(bad["error"]) == {"code", "message"}, bad
        assert bad["error"]["code"] == "unreadable_page" and bad["error"]["message"]
        assert bad["thumbnail"] is None and bad["thumbnail_url"] is None
    else:
        assert "error" not in bad, bad
        assert bad["width"] > 0 and bad["height"] > 0
    for page in pages:
        if page is not bad or not case.page_error:
            assert "error" not in page, page
            assert app.store.get(page["thumbnail"]) is not None, page["thumbnail"]
    if case.intact:
        intact = app.client.post("/ocr", content=documents[case.intact],
                                 headers={"Content-Type": case.ctype})
        assert intact.status_code == 200, intact.text
        want = intact.json()["pages"]
        for n in (0, 2):
            assert pages[n]["text"] and pages[n]["text"] == want[n]["text"], (n, pages[n])
            assert pages[n]["lines"] == want[n]["lines"]


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_bad_page_is_reported_in_its_entry_in_every_body_form(api, documents, name):
    data, case = documents[name], DAMAGED[name]
    app = api()
    answers = []
    for form in FORMS:
        resp = post_form(app.client, form, data, case.ctype)
        assert resp.status_code == 200, (form, resp.text[:300])
        body = resp.json()
        assert body["stored"] is True and body["cached"] is (form != FORMS[0]), (form, body)
        stored = app.stored_result(data)
        assert stored is not None
        assert_answer_is(stored, body)
        answers.append(body)
    pages = answers[0]["document"]["pages"]
    # one read per page that rendered, all in the first request; the others are hits
    assert app.counting.calls == pages - case.page_error
    check_damaged(app, documents, name, answers[0])


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_bad_page_is_reported_in_its_entry_through_uploads(api, documents, name):
    """The worker stores every page (the bad one with its error) and the same result a
    synchronous POST stores."""
    data, case = documents[name], DAMAGED[name]
    app = api("uploads")
    final, _ = upload(app, data, case.ctype)
    assert app.worker_errors == [], f"the worker crashed: {app.worker_errors[0]!r}"
    assert final.status_code == 200, final.text
    body = final.json()
    stored = app.stored_result(data)
    assert stored is not None
    assert_answer_is(stored, body)
    pages = body["document"]["pages"]
    for n in range(1, pages + 1):
        page = app.store.get(f"{app.key(data).removesuffix('.json')}/pages/{n}.json")
        assert page is not None and json.loads(page.body) == stored["pages"][n - 1]
    assert app.counting.calls == pages - case.page_error
    check_damaged(app, documents, name, body)
    sync = api("sync")
    resp = sync.client.post("/ocr", content=data, headers={"Content-Type": case.ctype})
    assert resp.status_code == 200, resp.text
    assert sync.stored_result(data) == stored
