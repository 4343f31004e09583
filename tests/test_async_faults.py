"""The asynchronous path under faults (issue 10 part 2), on a moto server over real HTTP:
S3 errors injected by the fault proxy while the worker reads an upload, writes a page or
writes the result; the same event three times; 16 racing uploads; a worker process killed
with SIGKILL between pages. After each, the document is complete (or reported failed),
with no page lost, duplicated or changed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest

from aws_stack import Stack
from edgeocr.keys import page_key, result_key, status_key, upload_key
from edgeocr.store import S3Store
from faultproxy import FaultProxy
from helpers import ZH_PAGES, pdf_of
from s3fixtures import FAKE_CREDENTIALS

ROOT = Path(__file__).resolve().parents[1]
PAGES = ZH_PAGES
UPLOAD = r"/uploads/[0-9a-f]{64}$"
PAGE = r"/pages/[0-9]+\.json$"
RESULT = r"/results/[0-9a-f]{16}/[0-9a-f]{64}\.json$"



@pytest.fixture
def faulty(moto_endpoint, monkeypatch, engine):
    """A stack whose service reaches S3 only through the fault proxy (one attempt per call,
    so that each injected fault fails the invocation and the message comes back)."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    bucket = f"edgeocr-async-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    with FaultProxy(moto_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        store = S3Store(bucket, max_attempts=1, connect_timeout=0.5, read_timeout=2)
        stack = Stack(bucket, moto_endpoint, engine, store=store)
        stack.proxy = proxy
        yield stack


def put_upload(stack: Stack, data: bytes) -> str:
    """The bytes arrive in uploads/ as a presigned PUT would put them (S3 → SQS follows)."""
    sha = hashlib.sha256(data).hexdigest()
    stack.s3.put_object(Bucket=stack.bucket, Key=upload_key(sha), Body=data)
    return sha


def finish(stack: Stack, sha: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.drain(rounds=5)
        got = stack.client.get(f"/ocr/{sha}")
        if got.status_code != 202:
            assert got.status_code == 200, got.text
            return got.json()
    raise AssertionError("the document never completed")


def assert_complete_once(stack: Stack, sha: str, result: dict) -> None:
    assert result["document"]["pages"] == len(PAGES) and all(p["text"] for p in result["pages"])
    stored = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=result_key(
        stack.service.pipeline, sha))["Body"].read())
    for i, page in enumerate(stored["pages"], start=1):
        obj = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=page_key(
            stack.service.pipeline, sha, i))["Body"].read())
        assert obj == page  # the result is exactly its stored pages
    status = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=status_key(
        stack.service.pipeline, sha))["Body"].read())
    assert (status["status"], status["pages_done"]) == ("done", len(PAGES))


@pytest.mark.parametrize(("op", "path", "times"), [
    ("GetObject", UPLOAD, 2),   # reading the upload
    ("PutObject", PAGE, 2),     # writing a page
    ("PutObject", RESULT, 2),   # writing the result
])
@pytest.mark.parametrize("status", [503, 500])
def test_s3_faults_in_the_worker_are_retried_to_a_complete_document(faulty, document, op,
                                                                   path, times, status):
    faulty.proxy.fail(op, times=times, status=status, path=path)
    sha = put_upload(faulty, document)
    result = finish(faulty, sha)
    assert faulty.proxy.count(op, injected=True, path=path) == times  # each fault was met
    assert_complete_once(faulty, sha, result)
    # retries resume: only a page whose own write failed is read again
    assert faulty.counting.calls == len(PAGES) + (times if path == PAGE else 0)
    # stored pages were never rewritten by the retries
    assert faulty.proxy.count("PutObject", injected=False, path=PAGE) == len(PAGES)


def test_same_event_three_times_and_16_racing_uploads(s3_env, moto_endpoint, monkeypatch,
                                                      engine, document):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    stack = Stack(s3_env, moto_endpoint, engine)
    sha = hashlib.sha256(document).hexdigest()
    declared = {"sha256": sha, "bytes": len(document), "content_type": "application/pdf"}

    def race() -> None:
        offer = stack.client.post("/uploads", json=declared).json()
        if "upload" in offer:  # 201; a 200/202 has nothing to upload
            up = offer["upload"]
            assert httpx.put(up["url"], content=document, headers=up["headers"]).is_success

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    event = json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {
        "bucket": {"name": s3_env}, "object": {"key": f"uploads/{sha}"}}}]})
    for _ in range(3):
        stack.send(event)
    # four workers at once, as Lambda scales out on a burst of messages
    workers = [threading.Thread(target=stack.drain) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    got = stack.client.get(f"/ocr/{sha}")
    assert got.status_code == 200, got.text
    listing = stack.s3.list_objects_v2(Bucket=s3_env, Prefix="results/")["Contents"]
    keys = sorted(o["Key"] for o in listing)
    assert keys.count(result_key(stack.service.pipeline, sha)) == 1
    pages = [k for k in keys if "/pages/" in k]
    assert sorted(pages) == sorted(page_key(stack.service.pipeline, sha, i)
                                   for i in range(1, len(PAGES) + 1))
    before = stack.pages(sha, len(PAGES))
    stack.send(event)
    stack.drain()
    assert stack.pages(sha, len(PAGES)) == before


def test_worker_killed_between_pages_resumes_at_the_first_missing_page(
        s3_env, moto_endpoint, monkeypatch, engine, eval_dir, tmp_path):
    """A real poller process running app.worker, SIGKILLed mid-document; the message comes
    back after its visibility timeout and a new process resumes where the first stopped."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    stack = Stack(s3_env, moto_endpoint, engine, visibility_s=2)
    doc = pdf_of(*(eval_dir / f"images/zh_pages_synth/zhsyn_dev_page_{i:02d}.jpg"
                   for i in range(8)))
    sha = put_upload(stack, doc)
    env = {**os.environ, "RESULTS_BUCKET": s3_env, "UPLOADS_QUEUE_URL": stack.queue_url,
           "POWERTOOLS_METRICS_DISABLED": "true"}
    cmd = [sys.executable, str(ROOT / "scripts" / "sqs_poller.py"), "--queue-url",
           stack.queue_url]
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with first_log.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 120
        prefix = f"results/{stack.service.pipeline}/{sha}/pages/"
        while len(stack.s3.list_objects_v2(Bucket=s3_env, Prefix=prefix).get(
                "Contents", [])) < 2:
            assert proc.poll() is None, first_log.read_text()[-3000:]
            assert time.monotonic() < deadline, first_log.read_text()[-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    stored = stack.s3.list_objects_v2(Bucket=s3_env, Prefix=prefix)["Contents"]
    done = len(stored)
    assert 2 <= done < 8
    before = stack.pages(sha, done)
    with second_log.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 180
            while stack.client.get(f"/ocr/{sha}").status_code == 202:
                assert proc.poll() is None, second_log.read_text()[-3000:]
                assert time.monotonic() < deadline, second_log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    got = stack.client.get(f"/ocr/{sha}")
    assert got.status_code == 200 and got.json()["document"]["pages"] == 8
    assert stack.pages(sha, done) == before  # no stored page changed
    resumed = [json.loads(line) for line in second_log.read_text().splitlines()
               if line.startswith("{") and "resuming a document" in line]
    assert resumed and resumed[0]["pages_done"] >= done  # it started at the first missing one
