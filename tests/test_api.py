"""The HTTP API in-process (FastAPI TestClient) over a real store: the real engine where the
OCR is what is checked (golden answers), a fake one for 404s, validation, methods and headers
(no model loaded for those)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from edgeocr.http.app import create_app
from edgeocr.keys import content_hash
from edgeocr.settings import Settings
from edgeocr.store import CACHE_CONTROL, LocalStore, StoreError
from helpers import (
    CountingEngine,
    FakeEngine,
    assert_answer_is,
    assert_error_shape,
    png_header_only,
)

RECEIPT = "images/receipts_sroie/X51006329399.jpg"


@pytest.fixture
def counting(engine):
    return CountingEngine(engine)


@pytest.fixture
def client(tmp_path, counting):
    app = create_app(Settings(results_dir=tmp_path), engine_factory=lambda: counting)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_client(tmp_path, fake):
    """The app over a fake engine: for requests whose answer never depends on the OCR."""
    app = create_app(Settings(results_dir=tmp_path), engine_factory=lambda: fake)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def receipt(eval_dir) -> bytes:
    return (eval_dir / RECEIPT).read_bytes()


def test_raw_post_then_hit_without_inference(client, counting, receipt, tmp_path):
    first = client.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"})
    assert first.status_code == 200
    body = first.json()
    digest = hashlib.sha256(receipt).hexdigest()
    assert body["hash"] == digest and body["cached"] is False and body["stored"] is True
    assert "TAX INVOICE" in body["text"]
    assert first.headers["x-edgeocr-cache"] == "miss"
    assert "etag" not in first.headers  # the answer varies (timings): no validator fits it
    assert first.headers["location"] == body["result_url"]
    key = f"results/{body['pipeline']}/{digest}.json"
    assert body["result_url"].endswith(key)
    stored = json.loads((tmp_path / key).read_bytes())
    assert_answer_is(stored, body)
    assert set(stored) == {"schema", "hash", "pipeline", "models", "document", "text", "pages"}
    assert stored["schema"] == "edgeocr.result/2"
    assert stored["document"] == {"format": "jpeg", "bytes": len(receipt), "pages": 1}
    [page] = stored["pages"]
    assert page["text"] == stored["text"] and page["source"] == "ocr"
    assert "dpi" not in page and "points" not in page  # PDF pages only
    thumb = page["thumbnail"]
    assert thumb == f"results/{body['pipeline']}/{digest}/thumbs/1.jpg"
    assert body["pages"][0]["thumbnail_url"] == body["result_url"].replace(key, thumb)
    jpeg = client.get("/" + thumb)
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.headers["cache-control"] == CACHE_CONTROL
    assert max(Image.open(io.BytesIO(jpeg.content)).size) == 320

    second = client.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"})
    assert second.headers["x-edgeocr-cache"] == "hit" and second.json()["cached"] is True
    assert second.json()["text"] == body["text"]
    assert counting.calls == 1


def test_three_body_forms_agree(client, counting, receipt):
    raw = client.post("/ocr", content=receipt, headers={"Content-Type": "application/octet-stream"})
    multipart = client.post("/ocr", files={"image": ("r.jpg", receipt, "image/jpeg")})
    file_field = client.post("/ocr", files={"file": ("r.jpg", receipt, "image/jpeg")})
    b64 = client.post("/ocr", json={"image_base64": base64.b64encode(receipt).decode()})
    bodies = [r.json() for r in (raw, multipart, file_field, b64)]
    assert all(r.status_code == 200 for r in (raw, multipart, file_field, b64))
    assert len({b["hash"] for b in bodies}) == 1
    assert len({b["text"] for b in bodies}) == 1
    assert counting.calls == 1


def test_get_by_hash_and_result_object(client, receipt):
    posted = client.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"}).json()
    got = client.get(f"/ocr/{posted['hash']}")
    assert got.status_code == 200 and got.json()["text"] == posted["text"]
    path = posted["result_url"].removeprefix("http://testserver")
    obj = client.get(path)
    assert obj.status_code == 200
    assert obj.headers["content-type"] == "application/json"
    assert obj.headers["cache-control"] == CACHE_CONTROL
    assert json.loads(obj.content)["hash"] == posted["hash"]
    again = client.get(path, headers={"If-None-Match": obj.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"content": b"%PDF-1.7\n", "headers": {"Content-Type": "image/png"}}, 400,
         "unreadable_document"),
        ({"content": b"GIF88a" + b"\0" * 40, "headers": {"Content-Type": "image/gif"}}, 415,
         "unsupported_format"),
        ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "empty_body"),
        ({"content": b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "headers": {"Content-Type": "image/png"}},
         400, "corrupt_image"),
        ({"content": png_header_only(50_000, 50_000), "headers": {"Content-Type": "image/png"}},
         413, "too_many_pixels"),
        ({"json": {"image_base64": "not base64!"}}, 422, "bad_base64"),
        ({"json": {"image": "x"}}, 422, "invalid_json"),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 422, "invalid_json"),
        ({"files": {"other": ("a.png", b"x", "image/png")}}, 422, "missing_field"),
    ],
)
def test_bad_requests_get_json_4xx_and_store_nothing(fake_client, tmp_path, fake, kwargs,
                                                     status, code):
    resp = fake_client.post("/ocr", **kwargs)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]
    assert not list(tmp_path.rglob("*.json"))
    assert fake.calls == 0


def test_too_many_bytes(tmp_path, fake, receipt):
    app = create_app(Settings(results_dir=tmp_path, max_bytes=1000),
                     engine_factory=lambda: fake)
    with TestClient(app) as c:
        for kwargs in ({"content": receipt, "headers": {"Content-Type": "image/jpeg"}},
                       {"files": {"image": ("r.jpg", receipt, "image/jpeg")}},
                       {"json": {"image_base64": base64.b64encode(receipt).decode()}}):
            resp = c.post("/ocr", **kwargs)
            assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_many_bytes"
    assert fake.calls == 0


def test_unknown_and_malformed_hash(fake_client):
    client = fake_client
    assert client.get("/ocr/" + "0" * 64).status_code == 404
    assert client.get("/ocr/" + "0" * 64).json()["error"]["code"] == "not_found"
    assert client.get("/ocr/XYZ").status_code == 422
    assert client.get("/results/0123456789abcdef/" + "0" * 64 + ".json").status_code == 404
    assert client.get("/nope").json()["error"]["code"] == "not_found"


def test_hit_path_never_builds_the_engine(tmp_path, engine, receipt):
    """Seed the store through one app, then a fresh app whose engine cannot even be built
    answers the same image: the hit path loads no model."""
    seeded = create_app(Settings(results_dir=tmp_path), engine_factory=lambda: engine)
    with TestClient(seeded) as c:
        c.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"})

    def refuse():
        raise AssertionError("the engine must not be built on a cache hit")

    fresh = create_app(Settings(results_dir=tmp_path), engine_factory=refuse)
    with TestClient(fresh) as c:
        resp = c.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"})
        assert resp.status_code == 200 and resp.json()["cached"] is True
        assert c.get("/healthz").json()["models_loaded"] is False


def test_hmac_keys(tmp_path, fake, receipt):
    app = create_app(Settings(results_dir=tmp_path, hash_secret="s3cret"),
                     engine_factory=lambda: fake)
    with TestClient(app) as c:
        body = c.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"}).json()
        assert c.get("/healthz").json()["hmac"] is True
    sha = hashlib.sha256(receipt).hexdigest()
    # DESIGN §2: HMAC(secret, SHA-256 hex), computed here independently of keys.py
    assert body["hash"] == hmac.new(b"s3cret", sha.encode(), hashlib.sha256).hexdigest()
    assert body["hash"] != sha
    assert content_hash(receipt, "other") != body["hash"]


class BrokenPutStore(LocalStore):
    def put_if_absent(self, key, body, *args, **kwargs):
        raise StoreError("S3 is down")


def test_store_failure_still_answers_the_result(tmp_path, counting, receipt):
    app = create_app(Settings(), store=BrokenPutStore(tmp_path), engine_factory=lambda: counting)
    with TestClient(app) as c:
        resp = c.post("/ocr", content=receipt, headers={"Content-Type": "image/jpeg"})
    body = resp.json()
    assert resp.status_code == 200
    assert body["stored"] is False and body["result_url"] is None
    assert "TAX INVOICE" in body["text"]
    assert "location" not in resp.headers


def test_healthz_and_docs(fake_client):
    health = fake_client.get("/healthz").json()
    assert health["status"] == "ok" and len(health["pipeline"]) == 16
    assert fake_client.get("/openapi.json").json()["paths"]["/ocr"]["post"]


# ---- methods and headers (issue 10) --------------------------------------------------------

def test_head_wherever_get(fake_client, receipt):
    """Every GET route answers HEAD: the GET's status and headers, no body."""
    posted = fake_client.post("/ocr", content=receipt,
                              headers={"Content-Type": "image/jpeg"}).json()
    result = posted["result_url"].removeprefix("http://testserver")
    gets = [route.path for route in fake_client.app.routes
            if "GET" in getattr(route, "methods", ()) and "{" not in route.path]
    assert {"/", "/healthz", "/openapi.json", "/docs"} <= set(gets)
    for path in [*gets, f"/ocr/{posted['hash']}", "/ocr/" + "0" * 64, result,
                 posted["pages"][0]["thumbnail_url"].removeprefix("http://testserver")]:
        get, head = fake_client.get(path), fake_client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        for name in ("content-type", "content-length", "cache-control", "etag"):
            assert head.headers.get(name) == get.headers.get(name), (path, name)


def test_openapi_has_distinct_operation_ids_for_head(fake_client):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns on a duplicate operation id
        spec = fake_client.app.openapi()
    paths = spec["paths"]
    assert {"get", "head"} <= set(paths["/ocr/{digest}"]) and {"get", "head"} <= set(
        paths["/healthz"])
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/results/0123456789abcdef/" + "0" * 64 + ".json", "GET, HEAD"),
    ("DELETE", "/results/0123456789abcdef/" + "0" * 64 + ".json", "GET, HEAD"),
    ("POST", "/results/anything", "GET, HEAD"),
    ("PATCH", "/results/0123456789abcdef/" + "0" * 64 + "/thumbs/1.jpg", "GET, HEAD"),
    ("OPTIONS", "/ocr", "POST"),
    ("OPTIONS", "/healthz", "GET, HEAD"),
    ("DELETE", "/ocr/" + "0" * 64, "GET, HEAD"),
    ("GET", "/uploads", "POST"),
    ("PROPFIND", "/", "GET, HEAD"),
])
def test_other_methods_get_405_json_with_allow(fake_client, method, path, allow):
    resp = fake_client.request(method, path, content=b"{}")
    assert resp.status_code == 405, resp.text
    assert assert_error_shape(resp)["code"] == "method_not_allowed"
    assert resp.headers["allow"] == allow


def test_cors_preflight_when_origins_are_set(tmp_path, fake):
    app = create_app(Settings(results_dir=tmp_path, cors_origins=("https://page.example",)),
                     engine_factory=lambda: fake)
    with TestClient(app) as c:
        ok = c.options("/ocr", headers={"Origin": "https://page.example",
                                        "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "content-type"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://page.example"
        assert {"GET", "HEAD", "POST", "PUT"} <= {
            m.strip() for m in ok.headers["access-control-allow-methods"].split(",")}
        refused = c.options("/ocr", headers={"Origin": "https://elsewhere.example",
                                             "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400
        assert assert_error_shape(refused)["code"] == "cors_not_allowed"
        plain = c.options("/ocr")  # not a preflight: no method here answers OPTIONS
        assert plain.status_code == 405 and plain.headers["allow"] == "POST"
        assert assert_error_shape(plain)["code"] == "method_not_allowed"
        simple = c.get("/healthz", headers={"Origin": "https://page.example"})
        assert simple.headers["access-control-allow-origin"] == "https://page.example"


def test_no_cors_means_options_is_405(fake_client):
    resp = fake_client.options("/ocr", headers={"Origin": "https://page.example",
                                               "Access-Control-Request-Method": "POST"})
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert "access-control-allow-origin" not in resp.headers
    assert assert_error_shape(resp)["code"] == "method_not_allowed"


@pytest.mark.parametrize(("sent", "echoed"), [
    (b"req-42", "req-42"),
    (b"r" * 64, "r" * 64),
    (b"r" * 65, None),
    (b"caf\xe9", None),
    (b"two words", None),
    (b"tab\there", None),
    (b"", None),
])
def test_request_id_is_echoed_only_when_safe(fake_client, sent, echoed):
    """X-Request-Id goes into a response header and every log line: visible ASCII, 64 at
    most, else a fresh id."""
    resp = raw_asgi(fake_client.app, "GET", "/healthz", [(b"X-Request-Id", sent)])
    assert resp.status_code == 200
    got = resp.headers.get_list("x-request-id")
    assert len(got) == 1
    if echoed is not None:
        assert got[0] == echoed
    else:
        assert len(got[0]) == 32 and int(got[0], 16) >= 0


@pytest.mark.parametrize("header", [b"User-Agent", b"X-Request-Id", b"X-Forwarded-For",
                                    b"Origin", b"Cookie", b"If-None-Match", b"Host"])
def test_latin1_header_bytes_are_not_a_500(fake_client, receipt, header):
    """Bytes 0x80-0xFF in any header (HTTP allows them; uvicorn passes them on)."""
    value = b"caf\xe9 \xff\xfe"
    upload = json.dumps({"sha256": "a" * 64, "bytes": 5, "content_type": "image/png"}).encode()
    for method, path, ctype, body in (
            ("GET", "/healthz", None, b""),
            ("POST", "/ocr", b"image/jpeg; name=\xe9", receipt),
            ("POST", "/uploads", b"application/json", upload)):
        headers = [(header, value)] + ([(b"Content-Type", ctype)] if ctype else [])
        resp = raw_asgi(fake_client.app, method, path, headers, body)
        assert resp.status_code in (200, 201), (method, path, resp.status_code, resp.text)
        assert len(resp.headers.get_list("x-request-id")) == 1


def raw_asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]],
             body: bytes = b"") -> httpx.Response:
    """One request with exactly these header bytes (httpx's ASGI transport hands them over
    raw; the TestClient would re-encode them as UTF-8)."""
    import asyncio

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, path, headers=headers, content=body)

    return asyncio.run(call())
