"""The AWS shape on a moto server for tests: bucket, uploads queue with its DLQ and the real
S3 → SQS notification (the same setup as `make serve S3=moto`), the service over S3, the
Lambda handlers, and a poller that hands the worker SQS events as Lambda's mapping would."""

from __future__ import annotations

import hashlib
import os

import boto3
import httpx
from fastapi.testclient import TestClient

from edgeocr import sqs
from edgeocr.http.app import create_app
from edgeocr.keys import page_key
from edgeocr.settings import Settings
from edgeocr.store import S3Store
from edgeocr.wiring import build_service
from edgeocr.worker import Worker
from helpers import CountingEngine
from serve import setup_uploads_queue  # scripts/serve.py
from sqs_poller import LambdaContext, poll_once


class OnePageContext:
    """Lambda's context with time for exactly one page: the worker must hand the rest on."""

    def __init__(self) -> None:
        self.calls = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return 200_000 if self.calls == 1 else 5_000


class Stack:
    def __init__(self, bucket: str, endpoint: str, engine, visibility_s: int = 1,
                 store: S3Store | None = None) -> None:
        env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                          "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")}
        self.queue_url = setup_uploads_queue(env, endpoint, bucket, visibility_s=visibility_s)
        self.sqs = boto3.client("sqs")
        self.s3 = boto3.client("s3", endpoint_url=endpoint)  # moto itself, for checking
        self.bucket = bucket
        self.arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.counting = CountingEngine(engine)
        settings = Settings(results_bucket=bucket, uploads_queue_url=self.queue_url)
        self.service = build_service(settings, store=store or S3Store(bucket),
                                     engine_factory=lambda: self.counting)
        self.worker = Worker(self.service)
        self.client = TestClient(create_app(settings, service=self.service))
        self.sent: list[str] = []
        # S3 (and moto) sends an s3:TestEvent when the notification is set up; the handler
        # must take it in its stride, and the tests count only what comes after it
        assert self.drain() == 1 and self.counting.calls == 0

    def send(self, body: str) -> None:
        self.sent.append(body)
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def handler(self, event, context):
        return sqs.handle(event, context, self.worker, self.send)

    def drain(self, context_factory=lambda: LambdaContext(300), rounds: int = 50) -> int:
        """Poll until the queue stays empty; returns the invocations made."""
        invocations = idle = 0
        while rounds and idle < 3:
            rounds -= 1
            got = poll_once(self.sqs, self.queue_url, self.arn,
                            lambda e, _c: self.handler(e, context_factory()), 300)
            invocations += bool(got)
            idle = 0 if got else idle + 1
        return invocations

    def upload(self, data: bytes, body: bytes | None = None) -> dict:
        offer = self.client.post("/uploads", json={
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "content_type": "application/pdf"})
        assert offer.status_code == 201, offer.text
        up = offer.json()["upload"]
        put = httpx.put(up["url"], content=body if body is not None else data,
                        headers=up["headers"])
        assert put.status_code == 200, put.text
        return offer.json()

    def pages(self, sha: str, n: int) -> list[dict]:
        out = []
        for i in range(1, n + 1):
            head = self.s3.head_object(Bucket=self.bucket,
                                       Key=page_key(self.service.pipeline, sha, i))
            out.append((head["ETag"], head["LastModified"]))
        return out


