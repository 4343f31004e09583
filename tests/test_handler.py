"""The Lambda entry point end to end: API Gateway HTTP API v2 events (tests/events/, made by
`sam local generate-event`) through Mangum into the app, with S3 on a moto server over real
HTTP (AWS itself cannot run here; moto stands in for S3 only)."""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib
import json
import sys
from pathlib import Path

import boto3
import pytest
from mangum import Mangum

from edgeocr.http.app import create_app
from edgeocr.settings import Settings
from edgeocr.store import CACHE_CONTROL
from helpers import CountingEngine
from scoring import bow_count

EVENTS = Path(__file__).parent / "events"
ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def body_bytes(event: dict) -> bytes:
    return base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()


class Context:
    """The bits of a Lambda context object that Mangum and loggers read."""

    function_name = "edgeocr-test"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:edgeocr-test"
    aws_request_id = "test-request"


@pytest.fixture
def lambda_env(s3_env, monkeypatch):
    monkeypatch.setenv("RESULTS_BUCKET", s3_env)
    monkeypatch.delenv("CDN_BASE_URL", raising=False)
    return s3_env


@pytest.fixture
def handler(lambda_env, engine):
    counting = CountingEngine(engine)
    app = create_app(Settings.from_env(), engine_factory=lambda: counting)
    h = Mangum(app, lifespan="off")
    h.counting = counting
    return h


def invoke(handler, event: dict) -> tuple[int, dict, dict]:
    resp = handler(event, Context())
    assert not resp.get("isBase64Encoded")
    return resp["statusCode"], resp["headers"], json.loads(resp["body"])


def test_raw_jpeg_event_miss_then_hit(handler, lambda_env, manifest):
    event = load("post_raw_jpeg.json")
    data = body_bytes(event)
    digest = hashlib.sha256(data).hexdigest()

    status, headers, body = invoke(handler, event)
    assert status == 200, body
    assert body["hash"] == digest  # the bytes arrived exact
    assert headers["x-edgeocr-cache"] == "miss" and body["stored"] is True
    gt = manifest["sroie_X51008123476"]["text"]
    assert bow_count(body["text"], gt).f1 >= 0.85

    key = f"results/{body['pipeline']}/{digest}.json"
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=lambda_env, Key=key)
    assert head["ContentType"] == "application/json"
    assert head["CacheControl"] == CACHE_CONTROL
    stored = json.loads(s3.get_object(Bucket=lambda_env, Key=key)["Body"].read())
    assert stored["text"] == body["text"] and stored["hash"] == digest

    status, headers, again = invoke(handler, event)
    assert status == 200 and headers["x-edgeocr-cache"] == "hit" and again["cached"] is True
    assert again["text"] == body["text"]
    assert handler.counting.calls == 1  # the hit ran no inference
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=lambda_env)["Contents"])
    assert keys == [key, stored["pages"][0]["thumbnail"]]  # the result and its thumbnail


def test_get_by_hash_event(handler):
    status, _, body = invoke(handler, load("get_by_hash.json"))
    assert status == 404 and body["error"]["code"] == "not_found"
    invoke(handler, load("post_raw_jpeg.json"))
    status, headers, body = invoke(handler, load("get_by_hash.json"))
    assert status == 200 and body["cached"] is True
    assert load("get_by_hash.json")["rawPath"].endswith(body["hash"])
    assert headers["location"] == body["result_url"]


@pytest.mark.parametrize(
    ("name", "filename", "expected"),
    [
        ("post_multipart.json", "en_rec.jpg",
         "To facilitate the shot type analysis in videos, we collect MovieShots, a large-scale"),
        ("post_base64_json.json", "text_rec.jpg", "韩国小馆"),
    ],
)
def test_multipart_and_base64_events(handler, eval_dir, name, filename, expected):
    original = (eval_dir / "images/peer_rapidocr_lines" / filename).read_bytes()
    status, _, body = invoke(handler, load(name))
    assert status == 200, body
    assert body["hash"] == hashlib.sha256(original).hexdigest()
    assert body["text"] == expected


def variant(name: str, content_type: str | None = None, body: bytes | None = None,
            path: str | None = None, method: str | None = None) -> dict:
    event = copy.deepcopy(load(name))
    if content_type is not None:
        event["headers"]["content-type"] = content_type
    if body is not None:
        event["body"] = base64.b64encode(body).decode()
        event["headers"]["content-length"] = str(len(body))
    if path is not None:
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
    if method is not None:
        event["requestContext"]["http"]["method"] = method
    return event


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (variant("post_raw_jpeg.json", content_type="text/plain"), 415, "unsupported_media_type"),
        (variant("post_raw_jpeg.json", body=b"GIF89a\x01\x00broken"), 400, "corrupt_image"),
        (variant("post_raw_jpeg.json", body=b"just text"), 415, "unsupported_format"),
        (variant("post_raw_jpeg.json", body=b""), 400, "empty_body"),
        (variant("post_base64_json.json", body=b'{"image_base64": "@@@"}'), 422, "bad_base64"),
        (variant("post_base64_json.json", body=b'{"wrong": 1}'), 422, "invalid_json"),
        (variant("post_multipart.json", content_type="multipart/form-data; boundary=zzz"), 422,
         "invalid_multipart"),
        (variant("post_multipart.json", body=b"--b\r\nContent-Disposition: form-data; "
                 b'name="other"\r\n\r\nx\r\n--b--\r\n',
                 content_type="multipart/form-data; boundary=b"), 422, "missing_field"),
        (variant("get_by_hash.json", path="/ocr/not-a-hash"), 422, "invalid_hash"),
        (variant("get_by_hash.json", path="/nowhere"), 404, "not_found"),
        (variant("get_by_hash.json", method="DELETE"), 405, "method_not_allowed"),
    ],
)
def test_error_events(handler, lambda_env, event, status, code):
    got, _, body = invoke(handler, event)
    assert got == status, body
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=lambda_env)
    assert handler.counting.calls == 0


def test_app_module_is_the_sam_entry_point(lambda_env):
    """functions/ocr/app.py, as SAM's `Handler: app.handler` loads it."""
    sys.path.insert(0, str(ROOT / "functions" / "ocr"))
    try:
        sys.modules.pop("app", None)
        app = importlib.import_module("app")
        status, _, body = invoke(app.handler, load("get_by_hash.json"))
        assert status == 404 and body["error"]["code"] == "not_found"
        assert app.app.state.engine.loaded is False
    finally:
        sys.path.remove(str(ROOT / "functions" / "ocr"))
        sys.modules.pop("app", None)


def test_hit_path_imports_no_inference_stack(lambda_env, tmp_path):
    """A fresh process that imports the entry point and answers a request never imports
    OpenCV, numpy or ONNX Runtime: a Lambda serving hits pays for none of them."""
    import os
    import subprocess

    code = (
        "import json, sys; sys.path.insert(0, 'functions/ocr'); import app\n"
        f"event = json.load(open({str(EVENTS / 'get_by_hash.json')!r}))\n"
        "resp = app.handler(event, None)\n"
        "assert resp['statusCode'] == 404, resp\n"
        "print(json.dumps(sorted(m for m in ('cv2', 'numpy', 'onnxruntime') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


class WorkerContext(Context):
    """Lambda's context for the worker: the time left in this invocation."""

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_worker_entry_point_reads_the_upload_an_sqs_event_names(lambda_env, engine, eval_dir,
                                                                 monkeypatch):
    """`app.worker` as SAM's `Handler: app.worker` loads it, fed the SQS event that `sam local
    generate-event` made (an S3 put of uploads/{sha256} inside an SQS receive): the result is
    stored, a duplicate delivery redoes nothing, and a record that fails is reported in
    batchItemFailures (partial batch response) while the others succeed."""
    event = load("sqs_s3_upload.json")
    receipt = (eval_dir / "images/receipts_sroie/X51008123476.jpg").read_bytes()
    sha = hashlib.sha256(receipt).hexdigest()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=lambda_env, Key=f"uploads/{sha}", Body=receipt)  # what the PUT did
    sys.path.insert(0, str(ROOT / "functions" / "ocr"))
    try:
        sys.modules.pop("app", None)
        app = importlib.import_module("app")
        counting = CountingEngine(engine)
        monkeypatch.setattr(app.service.engine, "_factory", lambda: counting)
        assert app.worker(event, WorkerContext()) == {"batchItemFailures": []}
        key = f"results/{app.service.pipeline}/{sha}.json"
        stored = json.loads(s3.get_object(Bucket=lambda_env, Key=key)["Body"].read())
        assert stored["document"] == {"format": "jpeg", "bytes": len(receipt), "pages": 1}
        assert "TAX INVOICE" in stored["text"] and counting.calls == 1
        head = s3.head_object(Bucket=lambda_env, Key=key)

        twice = copy.deepcopy(event)
        twice["Records"].append({**event["Records"][0], "messageId": "second"})
        broken = {**event["Records"][0], "messageId": "broken", "body": json.dumps(
            {"continue": "ab" * 32})}  # names an upload that does not exist: nothing to do
        twice["Records"].append(broken)
        assert app.worker(twice, WorkerContext()) == {"batchItemFailures": []}
        assert counting.calls == 1  # duplicates skipped
        assert s3.head_object(Bucket=lambda_env, Key=key)["ETag"] == head["ETag"]

        def crash(*_a, **_k):
            raise RuntimeError("boom")

        other = (eval_dir / "images/receipts_sroie/X51006329399.jpg").read_bytes()
        other_sha = hashlib.sha256(other).hexdigest()
        s3.put_object(Bucket=lambda_env, Key=f"uploads/{other_sha}", Body=other)
        counting.ocr_image = crash
        failing = copy.deepcopy(event)
        failing["Records"][0]["messageId"] = "will-fail"
        failing["Records"][0]["body"] = json.dumps({"continue": other_sha})
        failing["Records"].append({**event["Records"][0], "messageId": "fine"})
        answer = app.worker(failing, WorkerContext())
        assert answer == {"batchItemFailures": [{"itemIdentifier": "will-fail"}]}
    finally:
        sys.path.remove(str(ROOT / "functions" / "ocr"))
        sys.modules.pop("app", None)
