"""The AWS shape on a moto server over real HTTP: presigned PUT → S3 "object created" →
the real S3 → SQS notification → the Lambda handler (via the loopback poller) → results.

Only AWS itself is stood in for (moto). moto checks neither presigned signatures nor
``x-amz-checksum-sha256``, so what the URL signs is read from the URL, and the worker's own
re-hash is what refuses other bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from aws_stack import OnePageContext, Stack
from edgeocr.keys import status_key
from helpers import ZH_PAGES

PAGES = ZH_PAGES



@pytest.fixture
def stack(s3_env, moto_endpoint, monkeypatch, engine):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    return Stack(s3_env, moto_endpoint, engine)


def test_presigned_put_signs_type_length_and_checksum(stack, document):
    offer = stack.client.post("/uploads", json={
        "sha256": hashlib.sha256(document).hexdigest(), "bytes": len(document),
        "content_type": "application/pdf"}).json()
    url = offer["upload"]["url"]
    query = parse_qs(urlsplit(url).query)
    signed = query["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-length", "content-type", "host", "x-amz-checksum-sha256"} <= set(signed)
    assert urlsplit(url).path.endswith(f"/uploads/{hashlib.sha256(document).hexdigest()}")
    assert 0 < int(query["X-Amz-Expires"][0]) <= 3600
    headers = offer["upload"]["headers"]
    assert headers["x-amz-checksum-sha256"] == __import__("base64").b64encode(
        hashlib.sha256(document).digest()).decode()  # base64 of the raw digest, not hex
    assert headers["Content-Length"] == str(len(document))
    assert headers["Content-Type"] == "application/pdf"


def test_upload_event_worker_result_and_duplicates(stack, document):
    sha = hashlib.sha256(document).hexdigest()
    offer = stack.upload(document)
    assert stack.client.get(offer["status_url"]).status_code == 202
    assert stack.drain() >= 1  # the real S3 → SQS notification carried the event
    got = stack.client.get(offer["status_url"])
    assert got.status_code == 200 and got.json()["document"]["pages"] == 3
    assert stack.counting.calls == 3
    before = stack.pages(sha, 3)
    # the same S3 event delivered twice more (at-least-once): nothing is redone
    event_body = json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {
        "bucket": {"name": stack.bucket}, "object": {"key": f"uploads%2F{sha}"}}}]})
    stack.send(event_body)
    stack.send(event_body)
    assert stack.drain() == 2
    assert stack.counting.calls == 3 and stack.pages(sha, 3) == before


def test_long_document_continues_in_new_messages(stack, document):
    sha = hashlib.sha256(document).hexdigest()
    stack.upload(document)
    invocations = stack.drain(context_factory=OnePageContext)
    assert invocations == 3  # one page each: two continuations, none a redelivery
    assert stack.sent == [json.dumps({"continue": sha})] * 2
    assert stack.counting.calls == 3
    assert stack.client.get(f"/ocr/{sha}").status_code == 200
    dlq = stack.sqs.get_queue_url(QueueName=f"{stack.bucket}-uploads-dlq")["QueueUrl"]
    assert not stack.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages")


def test_poison_document_is_failed_on_the_last_receive_then_dead_lettered(stack, document):
    sha = hashlib.sha256(document).hexdigest()

    def crash(*_a, **_k):
        raise RuntimeError("this document crashes the reader every time")

    stack.counting.ocr_image = crash
    offer = stack.upload(document)
    deadline = time.monotonic() + 60
    dlq = stack.sqs.get_queue_url(QueueName=f"{stack.bucket}-uploads-dlq")["QueueUrl"]
    while time.monotonic() < deadline:
        stack.drain(rounds=3)
        moved = stack.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0,
                                          AttributeNames=["All"]).get("Messages")
        if moved:
            break
    assert moved, "the message never reached the DLQ"
    status = json.loads(stack.s3.get_object(
        Bucket=stack.bucket, Key=status_key(stack.service.pipeline, sha))["Body"].read())
    assert status["status"] == "failed"
    got = stack.client.get(offer["status_url"])
    assert got.status_code == 422 and got.json()["error"]["code"] == "processing_failed"


def test_other_bytes_under_a_hash_are_refused_then_the_right_ones_read(stack, document):
    sha = hashlib.sha256(document).hexdigest()
    offer = stack.upload(document, body=document[:-8] + b"tampered")  # moto takes it
    stack.drain()
    got = stack.client.get(offer["status_url"])
    assert got.status_code == 400 and got.json()["error"]["code"] == "checksum_mismatch"
    assert stack.client.get(f"/results/{stack.service.pipeline}/{sha}.json").status_code == 404
    assert stack.counting.calls == 0
    again = stack.client.post("/uploads", json={"sha256": sha, "bytes": len(document),
                                                "content_type": "application/pdf"})
    assert again.status_code == 201  # a mismatch is about that upload, not these bytes
    stack.upload(document)
    stack.drain()
    assert stack.client.get(offer["status_url"]).status_code == 200
