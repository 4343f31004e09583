"""Limits that hold in AWS, not only locally (issue 9 part 3): the request body limit is what
Lambda's payload carries after base64, and the S3 client's timeouts and retries fit in the
API function's timeout together with the OCR of the pages one request may read."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from fastapi.testclient import TestClient

from edgeocr.http.app import create_app
from edgeocr.settings import LAMBDA_PAYLOAD_BYTES, Settings
from invoke import load_cfn_yaml  # scripts/invoke.py: CloudFormation YAML with its tags

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "template.yaml"
# Warm receipt, wall time, median of `make bench` on 2 cores (README): what one page costs.
PAGE_SECONDS = 3.0
# The S3 calls a synchronous miss can make when S3 fails: the result lookup, the progress
# lookup, one thumbnail (the service stops trying thumbnails after a failure), the result.
MISS_PATH_CALLS = 4


def refuse():
    raise AssertionError("a refused body never loads the engine")


def test_the_body_limit_is_what_lambda_can_carry(tmp_path):
    settings = Settings(results_dir=tmp_path)
    # an HTTP API v2 event with the body base64-encoded, as Lambda receives it
    event = {"version": "2.0", "routeKey": "$default", "rawPath": "/ocr",
             "headers": {"content-type": "image/jpeg", "user-agent": "x" * 200},
             "requestContext": {"http": {"method": "POST", "path": "/ocr"}, "x": "y" * 2000},
             "body": base64.b64encode(b"\xff" * settings.max_bytes).decode(),
             "isBase64Encoded": True}
    assert len(json.dumps(event)) <= LAMBDA_PAYLOAD_BYTES
    with TestClient(create_app(settings, engine_factory=refuse)) as client:
        over = client.post("/ocr", content=b"\xff\xd8\xff" + b"\0" * settings.max_bytes,
                           headers={"Content-Type": "image/jpeg"})
    assert over.status_code == 413
    error = over.json()["error"]
    assert error["code"] == "too_many_bytes" and "POST /uploads" in error["message"]


def test_s3_worst_case_fits_the_api_timeout():
    template = load_cfn_yaml(TEMPLATE)
    timeout = template["Resources"]["OcrFunction"]["Properties"].get("Timeout") or (
        template["Globals"]["Function"]["Timeout"])
    s = Settings()
    # botocore standard mode: each retry waits at most min(2**i, 20) s (random factor ≤ 1)
    backoff = sum(min(2 ** i, 20) for i in range(s.s3_attempts - 1))
    per_call = s.s3_attempts * (s.s3_connect_timeout + s.s3_read_timeout) + backoff
    worst = MISS_PATH_CALLS * per_call + s.sync_pages * PAGE_SECONDS
    assert worst <= timeout - 1, (
        f"{MISS_PATH_CALLS} S3 calls x {per_call:.1f} s + {s.sync_pages} pages x "
        f"{PAGE_SECONDS} s = {worst:.1f} s, over the {timeout} s timeout")


def test_the_worker_waits_longer_for_s3_but_within_its_deadline_margin():
    """The worker's S3 settings (template) leave a failing call well inside the margin it
    keeps before its deadline, so a failure surfaces as a retried message, not a timeout."""
    template = load_cfn_yaml(TEMPLATE)
    worker = template["Resources"]["WorkerFunction"]["Properties"]
    env = worker["Environment"]["Variables"]
    attempts = int(env["OCR_S3_ATTEMPTS"])
    per_call = attempts * (float(env["OCR_S3_CONNECT_TIMEOUT"]) + float(
        env["OCR_S3_READ_TIMEOUT"])) + sum(min(2 ** i, 20) for i in range(attempts - 1))
    assert attempts > Settings().s3_attempts
    assert per_call * 2 < worker["Timeout"] / 4, per_call  # a page's get + put, with room
