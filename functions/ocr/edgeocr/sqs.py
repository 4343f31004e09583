"""The worker behind SQS: S3 "object created" events and our own continuation messages in,
partial batch failures out (Powertools batch processing).

A message is either an S3 event notification (keys URL-encoded, at-least-once, possibly a
``s3:TestEvent``) for ``uploads/{sha256}``, or ``{"continue": sha256}``, which the worker
sends itself near the Lambda deadline so that a long document goes on in a fresh message:
it never counts as repeated receives of one message, so never lands in the DLQ for being long.
On a message's last receive a document that still fails is recorded as failed, before SQS
moves the message to the DLQ, so that its status never says 202 forever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from .keys import upload_key
from .observability import logger
from .worker import Worker

log = logger
MAX_RECEIVES = 3  # the queue's maxReceiveCount (infra/template.yaml)
_MARGIN_MS = 1000  # time kept back for the continuation message and the answer
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = upload_key("")
Sender = Callable[[str], None]  # sends a message body to the uploads queue


def uploads_in(body: str) -> list[str]:
    """The SHA-256s a message asks to read (none for a test event or a foreign key)."""
    try:
        msg = json.loads(body)
    except ValueError:
        log.warning("ignoring a message that is not JSON")
        return []
    if not isinstance(msg, dict):
        return []
    if isinstance(msg.get("continue"), str):
        names = [msg["continue"]]
    else:
        names = []
        for rec in msg.get("Records") or ():
            key = unquote_plus(((rec.get("s3") or {}).get("object") or {}).get("key", ""))
            if key.startswith(_PREFIX):
                names.append(key.removeprefix(_PREFIX))
    return [n for n in names if _SHA256.match(n)]


def continuation(sha256: str) -> str:
    return json.dumps({"continue": sha256})


def handle(event: dict[str, Any], context: Any, worker: Worker, send: Sender) -> dict:
    """The Lambda handler's body: each record on its own; failures reported per record."""
    processor = BatchProcessor(event_type=EventType.SQS)

    def remaining_s() -> float:
        return (context.get_remaining_time_in_millis() - _MARGIN_MS) / 1000

    def record_handler(record: SQSRecord) -> None:
        receives = int(record.attributes.approximate_receive_count or 1)
        for sha256 in uploads_in(record.body):
            try:
                outcome = worker.process(sha256, remaining_s)
            except Exception:
                if receives >= MAX_RECEIVES:
                    worker.give_up(sha256, receives)
                raise
            log.info("upload read", extra={"sha256": sha256, "state": outcome.state,
                                           "pages_done": outcome.pages_done,
                                           "pages": outcome.pages, "receives": receives})
            if outcome.state == "continue":
                send(continuation(sha256))

    return process_partial_response(event=event, record_handler=record_handler,
                                    processor=processor, context=context)
