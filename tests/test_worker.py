"""The worker on real documents and the real engine: page by page, resumable, idempotent,
deadline-aware, and final about client errors (DESIGN §1-2, issue 8 part 5)."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgeocr.keys import page_key, result_key, status_key, upload_key
from edgeocr.settings import Settings
from edgeocr.store import LocalStore
from edgeocr.wiring import build_service
from edgeocr.worker import Worker
from helpers import ZH_PAGES, Clock

PAGES = ZH_PAGES




@pytest.fixture
def setup(tmp_path, counting):
    store = LocalStore(tmp_path)
    service = build_service(Settings(results_dir=tmp_path), store=store,
                            engine_factory=lambda: counting)
    return store, service, Worker(service)


def upload(store, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    store.put_if_absent(upload_key(sha), data)
    return sha


def stored_pages(store, pipeline, sha, n):
    return [store.get(page_key(pipeline, sha, i)) for i in range(1, n + 1)]


def test_reads_every_page_then_writes_the_result_last(setup, document, counting, eval_dir,
                                                      engine):
    store, service, worker = setup
    sha = upload(store, document)
    outcome = worker.process(sha)
    assert (outcome.state, outcome.pages_done, outcome.pages) == ("done", 3, 3)
    result = json.loads(store.get(result_key(service.pipeline, sha)).body)
    assert result["document"] == {"format": "pdf", "bytes": len(document), "pages": 3}
    assert [p["page"] for p in result["pages"]] == [1, 2, 3]
    assert result["text"] == "\f".join(p["text"] for p in result["pages"])
    for page, obj in zip(result["pages"], stored_pages(store, service.pipeline, sha, 3),
                         strict=True):
        assert json.loads(obj.body) == page  # the result is assembled from the stored pages
        assert page["source"] == "ocr" and page["dpi"] and len(page["points"]) == 2
        assert store.get(page["thumbnail"]).content_type == "image/jpeg"
        assert page["text"]
    status = json.loads(store.get(status_key(service.pipeline, sha)).body)
    assert (status["status"], status["pages_done"], status["pages"]) == ("done", 3, 3)
    assert counting.calls == 3


def test_duplicate_event_redoes_nothing(setup, document, counting):
    store, service, worker = setup
    sha = upload(store, document)
    worker.process(sha)
    before = [(o.etag, o.last_modified) for o in stored_pages(store, service.pipeline, sha, 3)]
    assert worker.process(sha).state == "skipped"
    assert counting.calls == 3
    after = [(o.etag, o.last_modified) for o in stored_pages(store, service.pipeline, sha, 3)]
    assert after == before


def test_deadline_hands_the_rest_on_and_resumes_at_the_first_missing_page(setup, document,
                                                                          counting):
    store, service, worker = setup
    sha = upload(store, document)
    first = worker.process(sha, remaining_s=Clock(pages_allowed=1))
    assert (first.state, first.pages_done, first.pages) == ("continue", 1, 3)
    assert store.get(result_key(service.pipeline, sha)) is None
    page1 = store.get(page_key(service.pipeline, sha, 1))
    assert store.get(page_key(service.pipeline, sha, 2)) is None
    status = json.loads(store.get(status_key(service.pipeline, sha)).body)
    assert (status["status"], status["pages_done"]) == ("running", 1)

    second = worker.process(sha, remaining_s=Clock(pages_allowed=1))
    assert (second.state, second.pages_done) == ("continue", 2)
    third = worker.process(sha, remaining_s=Clock(pages_allowed=5))
    assert third.state == "done"
    assert counting.calls == 3  # each page read once over three invocations
    again = store.get(page_key(service.pipeline, sha, 1))
    assert (again.etag, again.last_modified) == (page1.etag, page1.last_modified)


def test_a_crash_mid_document_loses_no_page(setup, document, counting):
    store, service, worker = setup
    sha = upload(store, document)
    calls = {"n": 0}
    real = counting.ocr_image

    def crash_on_second(img, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("the process died here")
        return real(img, *a, **k)

    counting.ocr_image = crash_on_second
    with pytest.raises(RuntimeError):
        worker.process(sha)
    assert store.get(page_key(service.pipeline, sha, 1)) is not None
    assert store.get(page_key(service.pipeline, sha, 2)) is None
    counting.ocr_image = real
    counting.calls = 0
    assert worker.process(sha).state == "done"
    assert counting.calls == 2  # pages 2 and 3; page 1 came from the store


def test_checksum_mismatch_is_recorded_and_a_correct_upload_still_reads(setup, document):
    store, service, worker = setup
    sha = hashlib.sha256(document).hexdigest()
    store.put_if_absent(upload_key(sha), document[:-10] + b"tampered!!")
    assert worker.process(sha).state == "failed"
    assert store.get(result_key(service.pipeline, sha)) is None
    status = json.loads(store.get(status_key(service.pipeline, sha)).body)
    assert status["status"] == "failed" and status["error"]["code"] == "checksum_mismatch"
    # the right bytes, uploaded again under that hash (a new S3 PUT replaces the object and
    # sends a new event), are read
    store.put(upload_key(sha), document)
    assert worker.process(sha).state == "done"
    assert json.loads(store.get(result_key(service.pipeline, sha)).body)["hash"] == sha


def test_unreadable_document_ends_with_its_client_error(setup, counting):
    store, service, worker = setup
    sha = upload(store, b"%PDF-1.7\n")  # a header and nothing else
    assert worker.process(sha).state == "failed"
    status = json.loads(store.get(status_key(service.pipeline, sha)).body)
    assert status["error"]["code"] == "unreadable_document"
    assert counting.calls == 0


def test_missing_upload_is_not_an_error(setup):
    _, _, worker = setup
    assert worker.process("0" * 64).state == "missing"
