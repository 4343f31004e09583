"""A loopback SQS poller: the local stand-in for Lambda's SQS event source mapping.

    scripts/sqs_poller.py --queue-url URL [--timeout-s 300] [--max-messages N] [--idle-exit S]

It receives from the queue (on moto, via ``AWS_ENDPOINT_URL_SQS``), hands each batch to
``app.worker`` exactly as Lambda would (the same event shape, a context whose
``get_remaining_time_in_millis`` counts down from the function timeout), deletes the records
the handler did not report in ``batchItemFailures`` and leaves the others to come back after
the visibility timeout, so that receive counts and the DLQ redrive behave as in AWS.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class LambdaContext:
    """What the worker reads of Lambda's context object."""

    def __init__(self, timeout_s: float, name: str = "edgeocr-worker") -> None:
        self._deadline = time.monotonic() + timeout_s
        self.function_name = name
        self.aws_request_id = uuid.uuid4().hex
        self.memory_limit_in_mb = 3008
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Received messages as Lambda's SQS event (the shape `sam local generate-event sqs
    receive-message` makes)."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {k: str(v) for k, v in (m.get("Attributes") or {}).items()},
        "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
    } for m in messages]}


def poll_once(sqs: Any, queue_url: str, queue_arn: str, handler: Callable, timeout_s: float,
              batch: int = 1, wait_s: int = 1) -> int:
    """One receive → invoke → delete round; returns how many messages it received."""
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=batch,
                              WaitTimeSeconds=wait_s, AttributeNames=["All"])
    messages = got.get("Messages") or []
    if not messages:
        return 0
    try:
        answer = handler(sqs_event(messages, queue_arn), LambdaContext(timeout_s)) or {}
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", ())}
    except Exception as exc:  # the whole invocation failed: every record comes back
        print(f"sqs_poller: invocation failed: {exc!r}", file=sys.stderr, flush=True)
        failed = {m["MessageId"] for m in messages}
    for m in messages:
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return len(messages)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queue-url", required=True)
    p.add_argument("--timeout-s", type=float, default=300, help="the worker function's timeout")
    p.add_argument("--idle-exit", type=float, default=0,
                   help="exit after this many seconds with no message (0: never)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    import boto3

    sys.path.insert(0, str(ROOT / "functions" / "ocr"))
    import app  # the Lambda module itself: the same handler SAM deploys

    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=args.queue_url,
                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    print(f"sqs_poller: polling {args.queue_url}", flush=True)
    idle_since = time.monotonic()
    while True:
        try:
            if poll_once(sqs, args.queue_url, arn, app.worker, args.timeout_s):
                idle_since = time.monotonic()
        except KeyboardInterrupt:
            return 0
        except Exception as exc:  # the queue itself failed: back off, as the mapping does
            print(f"sqs_poller: receive failed: {exc!r}", file=sys.stderr, flush=True)
            time.sleep(1)
        if args.idle_exit and time.monotonic() - idle_since > args.idle_exit:
            return 0


if __name__ == "__main__":
    sys.exit(main())
