"""Read an uploaded document page by page: resumable, idempotent, deadline-aware.

What the SQS handler (AWS) and the in-process local worker both call. Each finished page is
stored under ``pages/{n}.json`` before the next is read, so a retry, a duplicate event or a
crash redoes no stored page and loses none; the result object is written last. A document
that cannot be read ends with its client error in the status (final for that hash); any other
failure propagates, so that the message is retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from .domain import DocumentInfo, PageResult
from .errors import InputError
from .keys import sha256_hex, upload_key
from .observability import logger
from .service import OcrService

log = logger
_MIN_MARGIN_S = 20.0  # never start a page with less than this left before the deadline


@dataclass(frozen=True)
class Outcome:
    state: str  # "done", "skipped" (already read), "failed", "continue", "missing"
    pages_done: int = 0
    pages: int | None = None


class ChecksumMismatch(InputError):
    code = "checksum_mismatch"


class Worker:
    def __init__(self, service: OcrService) -> None:
        self.service = service

    def process(self, sha256: str, remaining_s: Callable[[], float] | None = None) -> Outcome:
        """Read ``uploads/{sha256}`` to its result. ``remaining_s`` tells the time left in
        this invocation: near the end the worker stops after a page and answers "continue",
        so the caller can hand the rest on in a new message."""
        svc = self.service
        digest = svc.digest_of(sha256)
        if svc.stored(digest) is not None:
            return Outcome("skipped")
        upload = svc.store.get(upload_key(sha256))
        if upload is None:
            log.warning("upload not found", extra={"sha256": sha256})
            return Outcome("missing")
        if sha256_hex(upload.body) != sha256:
            # S3 refuses such a PUT itself; moto and other stand-ins do not, so check here
            svc.fail(digest, ChecksumMismatch(
                "the uploaded bytes do not match their declared SHA-256; upload them again"))
            return Outcome("failed")
        from .ocr.pages import open_document

        limits = svc.config.page_limits(svc.config.max_upload_bytes)
        try:
            doc = open_document(upload.body, limits)
        except InputError as exc:
            svc.fail(digest, exc)
            return Outcome("failed")
        with doc:
            return self._read(doc, digest, remaining_s)

    def give_up(self, sha256: str, attempts: int) -> None:
        """Record a document that failed every attempt as failed (a 4xx for its hash), so
        that its status does not say 202 forever once its message is dead-lettered."""
        svc = self.service
        log.error("document failed on its last attempt", extra={"sha256": sha256,
                                                                "attempts": attempts})
        try:
            svc.fail(svc.digest_of(sha256), InputError(
                f"the document could not be read after {attempts} attempts",
                code="processing_failed"))
        except Exception:
            log.exception("could not record the failure", extra={"sha256": sha256})

    def _read(self, doc, digest: str, remaining_s: Callable[[], float] | None) -> Outcome:
        svc = self.service
        total = doc.page_count
        pages: list[PageResult] = []
        slowest, announced = 0.0, False
        for number in range(1, total + 1):
            stored = svc.store.get(svc.page_key(digest, number))
            if stored is not None:  # read by an earlier attempt: resume after it
                pages.append(PageResult.from_json(json.loads(stored.body)))
                continue
            if remaining_s is not None and remaining_s() < max(_MIN_MARGIN_S, 2 * slowest):
                return Outcome("continue", len(pages), total)
            if not announced:
                if pages:
                    log.info("resuming a document", extra={"digest": digest,
                                                           "pages_done": len(pages),
                                                           "pages": total})
                svc.set_status(digest, "running", pages_done=len(pages), pages=total)
                announced = True
            t0 = time.perf_counter()
            page = svc.read_page(doc, digest, number, {})
            body = json.dumps(page.to_json(), ensure_ascii=False, separators=(",", ":"))
            outcome = svc.store.put_if_absent(svc.page_key(digest, number), body.encode())
            if not outcome.created:  # a concurrent reader stored it first: keep theirs
                page = PageResult.from_json(json.loads(outcome.obj.body))
            pages.append(page)
            slowest = max(slowest, time.perf_counter() - t0)
            svc.set_status(digest, "running", pages_done=len(pages), pages=total)
        answer = svc.store_result(digest, DocumentInfo(doc.format, doc.bytes, total), pages)
        if answer.obj is None:
            raise RuntimeError("the result could not be stored; retrying the message")
        svc.set_status(digest, "done", pages_done=total, pages=total)
        return Outcome("done", total, total)
