"""S3 faults through the whole app: a fault-injecting proxy (tests/faultproxy.py) in front of
a moto server, with the real ``S3Store`` (botocore standard retries, real timeouts).

What must hold (DESIGN §2): throttling (503 SlowDown), 500 InternalError and timeouts are
retried; when S3 stays down after OCR succeeded the result is still answered with
``stored: false`` / ``result_url: null`` / ``X-Edgeocr-Stored: false``; the next identical
request once S3 is back stores it; a failing GET on the hit path recomputes instead of
failing; a stored object is complete and is never overwritten, whatever the retries do. And
every 200 either has its object stored or says ``stored: false``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient

from edgeocr.http.app import create_app
from edgeocr.keys import content_hash, result_key
from edgeocr.settings import Settings
from edgeocr.store import S3Store
from faultproxy import FaultProxy
from helpers import CountingEngine, assert_answer_is, assert_error_shape
from s3fixtures import FAKE_CREDENTIALS

WORD = "images/en_words_ic15/word_139.png"
RESULT_FIELDS = {"schema", "hash", "pipeline", "models", "document", "text", "pages"}
RESULT = r"/results/[0-9a-f]{16}/[0-9a-f]{64}\.json$"  # the result object, not thumbnails
FAST = {"connect_timeout": 0.5, "read_timeout": 0.5}


def total_attempts(store: S3Store) -> int:
    """Attempts botocore will make (``total_max_attempts``; plain ``max_attempts`` counts
    retries, so it means one more)."""
    retries = store.client.meta.config.retries
    return retries.get("total_max_attempts") or retries["max_attempts"] + 1


class Rig:
    """A bucket behind the proxy, a direct client to moto for checking, and an app factory."""

    def __init__(self, proxy: FaultProxy, moto: str, engine) -> None:
        self.proxy = proxy
        self.bucket = f"edgeocr-faults-{uuid.uuid4().hex[:12]}"
        self.direct = boto3.client("s3", endpoint_url=moto,
                                   config=Config(retries={"total_max_attempts": 1}))
        self.direct.create_bucket(Bucket=self.bucket)
        self.counting = CountingEngine(engine)

    def store(self, **kw: Any) -> S3Store:
        """The store exactly as the app builds it, endpoint from AWS_ENDPOINT_URL_S3."""
        return S3Store(self.bucket, **{**FAST, **kw})

    def client(self, store: S3Store) -> TestClient:
        app = create_app(Settings(results_bucket=self.bucket), store=store,
                         engine_factory=lambda: self.counting)
        self.pipeline = app.state.pipeline
        return TestClient(app, raise_server_exceptions=True)

    def key(self, data: bytes) -> str:
        return result_key(self.pipeline, content_hash(data, None))

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            head = self.direct.head_object(Bucket=self.bucket, Key=key)
        except self.direct.exceptions.ClientError:
            return None
        return {"etag": head["ETag"], "modified": head["LastModified"]}

    def body(self, key: str) -> bytes:
        return self.direct.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def check_200(self, resp: httpx.Response, data: bytes) -> dict[str, Any]:
        """Every 200 has its object stored, complete, or says ``stored: false``."""
        assert resp.status_code == 200, resp.text[:300]
        body = resp.json()
        key = self.key(data)
        if body["stored"]:
            assert body["result_url"] and body["result_url"].endswith(key)
            assert resp.headers["x-edgeocr-stored"] == "true"
            assert resp.headers["location"] == body["result_url"]
            raw = self.body(key)
            stored = json.loads(raw)
            assert set(stored) == RESULT_FIELDS, "a partial result object"
            # byte-exact: the object is the whole canonical JSON of one complete result
            assert raw == json.dumps(stored, ensure_ascii=False, separators=(",", ":")).encode()
            assert_answer_is(stored, body)
        else:
            assert body["result_url"] is None
            assert resp.headers["x-edgeocr-stored"] == "false"
            assert "location" not in resp.headers
        assert body["hash"] == content_hash(data, None)
        return body


@pytest.fixture
def rig(moto_endpoint: str, engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with FaultProxy(moto_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield Rig(proxy, moto_endpoint, engine)


@pytest.fixture(scope="module")
def word(eval_dir: Path) -> bytes:
    return (eval_dir / WORD).read_bytes()


def post(client: TestClient, data: bytes) -> httpx.Response:
    return client.post("/ocr", content=data, headers={"Content-Type": "image/png"})


def test_throttled_put_is_retried_then_stored(rig: Rig, word: bytes):
    store = rig.store(max_attempts=2)
    rig.proxy.fail("PutObject", times=total_attempts(store) - 1, status=503, path=RESULT)
    with rig.client(store) as client:
        body = rig.check_200(post(client, word), word)
    assert body["stored"] is True
    assert rig.proxy.count("PutObject", path=RESULT) == total_attempts(store)
    assert rig.proxy.count("PutObject", injected=True) == total_attempts(store) - 1


@pytest.mark.parametrize("status", [503, 500], ids=["503-SlowDown", "500-InternalError"])
def test_s3_down_degrades_then_stores_once_back(rig: Rig, word: bytes, status: int):
    store = rig.store(max_attempts=1)
    attempts = total_attempts(store)
    rig.proxy.fail("PutObject", times=100, status=status)
    with rig.client(store) as client:
        degraded = post(client, word)
        body = rig.check_200(degraded, word)
        assert body["stored"] is False and body["cached"] is False
        # retried, then gave up (the thumbnail's put too)
        assert rig.proxy.count("PutObject", path=RESULT) == attempts
        assert rig.head(rig.key(word)) is None

        rig.proxy.clear()
        again = rig.check_200(post(client, word), word)
    assert again["stored"] is True and again["cached"] is False
    assert again["text"] == body["text"]
    assert rig.head(rig.key(word)) is not None
    assert rig.counting.calls == 2  # nothing was stored, so the second request recomputed


def test_put_timeouts_degrade(rig: Rig, word: bytes):
    """Every PutObject is held past the read timeout and never reaches S3."""
    store = rig.store(max_attempts=1)
    rig.proxy.delay("PutObject", times=100, seconds=1.5, forward=False, path=RESULT)
    with rig.client(store) as client:
        started = time.monotonic()
        body = rig.check_200(post(client, word), word)
        elapsed = time.monotonic() - started
    assert body["stored"] is False
    assert rig.proxy.count("PutObject", path=RESULT) == total_attempts(store)
    assert rig.head(rig.key(word)) is None
    assert elapsed < 10, f"the degrade path took {elapsed:.1f} s"


def test_timed_out_put_that_landed_is_read_back_not_rewritten(rig: Rig, word: bytes):
    """The first PUT reaches S3 but its answer is lost (read timeout); the retry gets 412
    from the conditional write and the app answers the object that is there."""
    store = rig.store(max_attempts=2)
    rig.proxy.delay("PutObject", times=1, seconds=1.5, forward=True, path=RESULT)
    with rig.client(store) as client:
        body = rig.check_200(post(client, word), word)
    assert body["stored"] is True
    puts = [s for s in rig.proxy.schedule.seen
            if s.op == "PutObject" and re.search(RESULT, s.path)]
    assert len(puts) == 2 and puts[0].injected and not puts[1].injected
    head = rig.head(rig.key(word))
    time.sleep(1.1)  # LastModified has 1 s resolution: a rewrite now would show
    store.put_if_absent(rig.key(word), b'{"not": "the result"}')
    assert rig.head(rig.key(word)) == head


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_get_failing_on_hit_path_recomputes_without_rewriting(rig: Rig, word: bytes,
                                                              fault: str):
    store = rig.store(max_attempts=1)
    attempts = total_attempts(store)
    with rig.client(store) as client:
        first = rig.check_200(post(client, word), word)
        head = rig.head(rig.key(word))
        time.sleep(1.1)

        # every lookup fails, every try, until the app writes (then S3 reads work again)
        rig.proxy.reset_counts()
        if fault == "500":
            rig.proxy.fail("GetObject", times=100, status=500, until="PutObject")
        else:
            rig.proxy.delay("GetObject", times=100, seconds=1.0, until="PutObject")
        second = rig.check_200(post(client, word), word)
        assert second["stored"] is True and second["cached"] is False  # recomputed
        assert second["text"] == first["text"]
        assert rig.proxy.count("GetObject", injected=True) >= attempts  # retried, gave up
        # one conditional write: 412, read theirs
        assert rig.proxy.count("PutObject", path=RESULT) == 1

        # S3 reads fail throughout: the 412's read-back fails too, so the answer says so
        rig.proxy.fail("GetObject", times=100, status=503)
        third = rig.check_200(post(client, word), word)
        assert third["stored"] is False and third["text"] == first["text"]
    assert rig.head(rig.key(word)) == head  # never overwritten
    assert rig.counting.calls == 3


def test_get_by_hash_with_s3_down_is_503_json(rig: Rig, word: bytes):
    """Not bad input, so a 5xx is right here; it must still be the JSON error shape."""
    store = rig.store(max_attempts=1)
    with rig.client(store) as client:
        body = rig.check_200(post(client, word), word)
        rig.proxy.fail("GetObject", times=100, status=503)
        for path in (f"/ocr/{body['hash']}", f"/results/{body['pipeline']}/{body['hash']}.json"):
            resp = client.get(path)
            assert resp.status_code == 503
            assert assert_error_shape(resp)["code"] == "store_unavailable"


def test_second_put_never_changes_the_object(rig: Rig):
    store = rig.store(max_attempts=2)
    key = "results/0123456789abcdef/" + "ab" * 32 + ".json"
    first = store.put_if_absent(key, b'{"v": 1}')
    head = rig.head(key)
    time.sleep(1.1)
    rig.proxy.fail("PutObject", times=1, status=503)  # and a retry in the middle
    second = store.put_if_absent(key, b'{"v": 2}')
    assert first.created and not second.created
    assert second.obj.body == b'{"v": 1}'
    assert rig.body(key) == b'{"v": 1}' and rig.head(key) == head


def test_missing_key_as_access_denied_is_a_miss(rig: Rig):
    """The template grants no s3:ListBucket, so S3 answers a missing key with 403."""
    store = rig.store(max_attempts=1)
    rig.proxy.fail("GetObject", times=100, status=403)
    with rig.client(store) as client:
        resp = client.get("/ocr/" + "0" * 64)
    assert resp.status_code == 404, resp.text


def test_max_attempts_means_attempts(rig: Rig):
    """botocore's ``retries['max_attempts']`` counts retries; the store's counts attempts."""
    store = rig.store(max_attempts=2)
    rig.proxy.fail("PutObject", times=100, status=503)
    with pytest.raises(Exception, match="max retries"):
        store.put_if_absent("results/0123456789abcdef/" + "cd" * 32 + ".json", b"{}")
    assert rig.proxy.count("PutObject") == 2
