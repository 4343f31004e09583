"""POST /uploads, the local signed PUT, the in-process worker and GET /ocr/{hash} polling, on
the embedded defaults (a directory store), with real documents and the real engine."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from fastapi.testclient import TestClient

from edgeocr.http.app import create_app
from edgeocr.settings import Settings
from helpers import ZH_PAGES, assert_error_shape, pdf_of

PAGES = ZH_PAGES




def make_client(tmp_path, counting, **settings):
    app = create_app(Settings(results_dir=tmp_path, **settings), engine_factory=lambda: counting)
    return TestClient(app)


def declare(data: bytes, ctype: str = "application/pdf") -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "content_type": ctype}


def poll(client, status_url: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        resp = client.get(status_url)
        if resp.status_code != 202:
            return {"final": resp, "seen": seen}
        body = resp.json()
        assert resp.headers["retry-after"] and resp.headers["cache-control"] == "no-store"
        assert body["status"] in ("queued", "running")
        seen.append(body)
        time.sleep(0.1)
    raise AssertionError(f"still 202 after {timeout_s} s: {seen[-1:]}")


def test_upload_put_poll_then_repeat_needs_no_upload(tmp_path, counting, document):
    with make_client(tmp_path, counting) as client:
        assert client.get(f"/ocr/{hashlib.sha256(document).hexdigest()}").status_code == 404
        offer = client.post("/uploads", json=declare(document))
        assert offer.status_code == 201, offer.text
        body = offer.json()
        sha = hashlib.sha256(document).hexdigest()
        assert body["status_url"] == f"/ocr/{sha}"
        assert body["result_url"].endswith(f"/{sha}.json")
        up = body["upload"]
        assert up["method"] == "PUT" and up["expires_at"].endswith("Z")
        # queued from the moment the upload is accepted
        assert client.get(body["status_url"]).status_code == 202
        put = client.put(up["url"], content=document, headers=up["headers"])
        assert put.status_code == 200, put.text
        polled = poll(client, body["status_url"])
        final = polled["final"]
        assert final.status_code == 200, final.text
        result = final.json()
        assert result["document"]["pages"] == 3 and len(result["pages"]) == 3
        assert all(p["thumbnail_url"] for p in result["pages"])
        for page in result["pages"]:
            thumb = client.get(page["thumbnail_url"].removeprefix("http://testserver"))
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        done = [s["pages_done"] for s in polled["seen"]]
        assert done == sorted(done)  # progress only goes forward
        calls = counting.calls
        assert calls == 3

        again = client.post("/uploads", json=declare(document))
        assert again.status_code == 200 and again.json()["text"] == result["text"]
        assert "upload" not in again.json()
        assert counting.calls == calls


def test_put_refuses_other_bytes_and_stores_nothing(tmp_path, counting, document):
    with make_client(tmp_path, counting) as client:
        up = client.post("/uploads", json=declare(document)).json()["upload"]
        wrong = document[:-1] + b"X"
        resp = client.put(up["url"], content=wrong, headers=up["headers"])
        assert resp.status_code == 400 and assert_error_shape(resp)["code"] == "checksum_mismatch"
        short = client.put(up["url"], content=document[:100], headers=up["headers"])
        assert short.status_code == 400
        assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())
        forged = up["url"].split("?")[0] + "?token=1.2.3"
        resp = client.put(forged, content=document, headers=up["headers"])
        assert resp.status_code == 403 and assert_error_shape(resp)["code"] == (
            "invalid_upload_token")
        other_type = client.put(up["url"], content=document,
                                headers={"Content-Type": "image/png"})
        assert other_type.status_code == 403
        assert counting.calls == 0


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"sha256": "abc", "bytes": 10, "content_type": "application/pdf"}, 422, "invalid_request"),
    ({"sha256": "0" * 64, "bytes": 0, "content_type": "application/pdf"}, 422,
     "invalid_request"),
    ({"sha256": "0" * 64, "bytes": 10}, 422, "invalid_request"),
    ({"sha256": "0" * 64, "bytes": 10, "content_type": "text/plain"}, 415,
     "unsupported_media_type"),
    ({"sha256": "0" * 64, "bytes": 501 * 1024 * 1024, "content_type": "application/pdf"}, 413,
     "too_many_bytes"),
])
def test_upload_requests_are_validated(tmp_path, counting, body, status, code):
    with make_client(tmp_path, counting) as client:
        resp = client.post("/uploads", json=body)
        assert resp.status_code == status, resp.text
        assert assert_error_shape(resp)["code"] == code
        assert client.post("/uploads", content=b"{", headers={
            "Content-Type": "application/json"}).status_code == 422


def test_post_ocr_hands_a_long_document_to_the_worker(tmp_path, counting, document):
    with make_client(tmp_path, counting, sync_pages=2) as client:
        resp = client.post("/ocr", content=document, headers={"Content-Type": "application/pdf"})
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["status"] in ("queued", "running") and body["pages"] == 3
        assert resp.headers["cache-control"] == "no-store"
        final = poll(client, body["status_url"])["final"]
        assert final.status_code == 200 and final.json()["document"]["pages"] == 3


def test_short_document_is_answered_in_the_request(tmp_path, counting, eval_dir):
    two = pdf_of(*(eval_dir / p for p in PAGES[:2]))
    with make_client(tmp_path, counting, sync_pages=2) as client:
        resp = client.post("/ocr", content=two, headers={"Content-Type": "application/pdf"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert [p["page"] for p in body["pages"]] == [1, 2]
        assert body["text"] == "\f".join(p["text"] for p in body["pages"])


def test_a_failed_document_answers_its_error_on_get_and_on_uploads(tmp_path, counting):
    broken = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"  # no xref, no trailer: not a document
    with make_client(tmp_path, counting) as client:
        up = client.post("/uploads", json=declare(broken)).json()
        assert client.put(up["upload"]["url"], content=broken,
                          headers=up["upload"]["headers"]).status_code == 200
        final = poll(client, up["status_url"])["final"]
        assert final.status_code == 400, final.text
        assert assert_error_shape(final)["code"] == "unreadable_document"
        again = client.post("/uploads", json=declare(broken))
        assert again.status_code == 400 and again.json()["error"]["code"] == "unreadable_document"
    assert counting.calls == 0


def test_hmac_mode_never_tells_whether_a_file_was_read(tmp_path, counting, document):
    secret = "s3cret"
    sha = hashlib.sha256(document).hexdigest()
    key = hmac.new(secret.encode(), sha.encode(), hashlib.sha256).hexdigest()
    with make_client(tmp_path, counting, hash_secret=secret) as client:
        offer = client.post("/uploads", json=declare(document)).json()
        assert offer["status_url"] == f"/ocr/{key}" and key in offer["result_url"]
        up = offer["upload"]
        assert client.put(up["url"], content=document, headers=up["headers"]).status_code == 200
        assert poll(client, offer["status_url"])["final"].status_code == 200
        assert client.get(f"/ocr/{sha}").status_code == 404  # the SHA-256 is no capability
        calls = counting.calls
        repeat = client.post("/uploads", json=declare(document))
        assert repeat.status_code == 201  # always an upload URL
        up = repeat.json()["upload"]
        assert client.put(up["url"], content=document, headers=up["headers"]).status_code == 200
        assert poll(client, offer["status_url"])["final"].status_code == 200
        assert counting.calls == calls  # the worker skipped a file already read
