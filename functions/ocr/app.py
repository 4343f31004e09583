"""AWS Lambda entry points, the composition root in AWS (SAM ``Handler: app.handler`` for
HTTP, ``app.worker`` for the uploads queue).

Both are built at import (cold start) without loading any model: the first page to OCR loads
the ONNX sessions, and later invocations of this execution environment reuse them.
"""

from functools import cache

from mangum import Mangum

from edgeocr import snapstart, sqs
from edgeocr.http.app import create_app
from edgeocr.settings import Settings
from edgeocr.wiring import build_service
from edgeocr.worker import Worker

settings = Settings.from_env()
service = build_service(settings)
app = create_app(settings, service=service)
handler = Mangum(app, lifespan="off")
# SnapStart: warm the hit path and the sessions before the snapshot, re-seed after restore
# (a no-op without snapshot-restore-py, as locally)
snapstart.register(service)


@cache
def _queue():
    import boto3  # the worker's continuation only; the HTTP path never needs SQS

    return boto3.client("sqs")


def _send(body: str) -> None:
    if not settings.uploads_queue_url:
        raise RuntimeError("UPLOADS_QUEUE_URL is not set: cannot continue a long document")
    _queue().send_message(QueueUrl=settings.uploads_queue_url, MessageBody=body)


def worker(event, context):
    return sqs.handle(event, context, Worker(service), _send)
