"""Regenerate tests/events/: API Gateway HTTP API (v2) events for the Mangum handler, and
the SQS event (carrying an S3 "object created" notification) for the worker.

Each event starts as ``sam local generate-event apigateway http-api-proxy`` prints it (SAM
CLI from .venv-sam, `make sam-venv`), then gets a real request: method, path, headers and a
base64 body built from real images in ../shared/eval, exactly as API Gateway encodes binary
bodies. Run: ``python scripts/make_events.py`` (needs the SAM venv; the output is committed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = (ROOT / ".." / "shared" / "eval").resolve()
SAM = ROOT / ".venv-sam" / "bin" / "sam"
OUT = ROOT / "tests" / "events"

RECEIPT = EVAL / "images/receipts_sroie/X51008123476.jpg"
LINE_EN = EVAL / "images/peer_rapidocr_lines/en_rec.jpg"
LINE_ZH = EVAL / "images/peer_rapidocr_lines/text_rec.jpg"
BOUNDARY = "edgeocr-boundary-7d1f"


def sam_event(method: str, path: str) -> dict:
    raw = subprocess.run(
        [str(SAM), "local", "generate-event", "apigateway", "http-api-proxy",
         "--method", method, "--path", path.lstrip("/"), "--body", ""],
        check=True, capture_output=True, text=True,
    ).stdout
    event = json.loads(raw)
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["rawQueryString"] = ""
    for key in ("queryStringParameters", "pathParameters", "stageVariables", "cookies"):
        event.pop(key, None)
    event["requestContext"].pop("authentication", None)
    event["requestContext"].pop("authorizer", None)
    event["headers"] = {"host": event["requestContext"]["domainName"], "user-agent": "agent"}
    return event


def with_body(event: dict, content_type: str, body: bytes) -> dict:
    event["headers"]["content-type"] = content_type
    event["headers"]["content-length"] = str(len(body))
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    return event


def multipart(field: str, filename: str, data: bytes, mime: str) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def s3_put_event(key: str) -> dict:
    """What S3 sends the uploads queue when a presigned PUT lands (`sam local generate-event
    s3 put`); S3 URL-encodes the key, as here."""
    raw = subprocess.run([str(SAM), "local", "generate-event", "s3", "put", "--bucket",
                          "edgeocr-results", "--key", key],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(raw)


def sqs_event(body: dict) -> dict:
    """The worker's SQS event carrying ``body`` (`sam local generate-event sqs
    receive-message`; its template does not escape a JSON body, so the body goes in after)."""
    raw = subprocess.run([str(SAM), "local", "generate-event", "sqs", "receive-message",
                          "--body", "placeholder"],
                         check=True, capture_output=True, text=True).stdout
    event = json.loads(raw)
    event["Records"][0]["body"] = json.dumps(body)
    return event


def main() -> int:
    if not SAM.exists():
        sys.exit(f"{SAM} is missing: run `make sam-venv` first")
    OUT.mkdir(parents=True, exist_ok=True)
    receipt = RECEIPT.read_bytes()
    events = {
        "post_raw_jpeg.json": with_body(sam_event("POST", "/ocr"), "image/jpeg", receipt),
        "post_multipart.json": with_body(
            sam_event("POST", "/ocr"), f"multipart/form-data; boundary={BOUNDARY}",
            multipart("image", LINE_EN.name, LINE_EN.read_bytes(), "image/jpeg")),
        "post_base64_json.json": with_body(
            sam_event("POST", "/ocr"), "application/json",
            json.dumps({"image_base64": base64.b64encode(LINE_ZH.read_bytes()).decode()})
            .encode()),
        "get_by_hash.json": sam_event("GET", f"/ocr/{hashlib.sha256(receipt).hexdigest()}"),
    }
    events["sqs_s3_upload.json"] = sqs_event(s3_put_event(
        f"uploads/{hashlib.sha256(receipt).hexdigest()}"))
    get = events["get_by_hash.json"]
    get["body"], get["isBase64Encoded"] = "", False
    for name, event in events.items():
        (OUT / name).write_text(json.dumps(event, indent=2) + "\n")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
