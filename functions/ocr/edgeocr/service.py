"""The use case, once, for every entry point (HTTP app, worker, CLI): bytes → hash → stored
result, or read now and store; a long document is handed to the worker.

No FastAPI and no boto3 here: the store and the engine come in from the composition root.
The cache-hit path touches only the store, so it never imports OpenCV, numpy or ONNX Runtime
nor builds the sessions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .domain import DocumentInfo, PageError, PageResult, result_json
from .errors import InputError
from .keys import content_hash, key_hash, page_key, result_key, status_key, thumb_key, upload_key
from .observability import logger
from .ocr.models import MODEL_NAMES
from .store import CACHE_CONTROL, NO_STORE, ResultStore, StoredObject, StoreError

if TYPE_CHECKING:
    from .ocr.pages import Document
    from .ocr.pages import Limits as PageLimits

log = logger
JPEG = "image/jpeg"
# Codes a new upload of the same hash can clear: they are about the upload, not the bytes.
RETRYABLE_FAILURES = frozenset({"checksum_mismatch", "upload_missing"})


@dataclass
class Answer:
    """A result: stored (``obj``), or computed but not stored (``obj`` None)."""

    result: dict[str, Any]
    obj: StoredObject | None
    cached: bool
    key: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Pending:
    """A document the worker is reading (or will): its progress, for a 202."""

    digest: str
    status: dict[str, Any]


@dataclass(frozen=True)
class ReadConfig:
    """The limits and choices of the use case (from ``Settings`` at the entry point)."""

    max_bytes: int
    max_upload_bytes: int
    max_pixels: int
    max_pages: int
    pdf_dpi: int
    sync_pages: int

    def page_limits(self, max_bytes: int) -> PageLimits:
        from .ocr.pages import Limits

        return Limits(max_bytes=max_bytes, max_pixels=self.max_pixels,
                      max_pages=self.max_pages, pdf_dpi=self.pdf_dpi)


class StoredFailure(InputError):
    """The document was read before and refused (a client error is final for a hash)."""


class EngineHolder:
    """Builds the engine once, on first use, from any thread."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def get(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._factory()
        return self._engine


class OcrService:
    def __init__(self, store: ResultStore, pipeline: str, engine: EngineHolder,
                 config: ReadConfig, hash_secret: str | None = None) -> None:
        self.store, self.pipeline, self.engine = store, pipeline, engine
        self.config, self.hash_secret = config, hash_secret
        self._ocr_lock = threading.Semaphore(1)  # one inference at a time: ORT uses every core
        self._inflight = KeyedLocks()  # identical concurrent reads compute once

    # -- keys and lookups ----------------------------------------------------------------------

    def digest(self, data: bytes) -> str:
        return content_hash(data, self.hash_secret)

    def digest_of(self, sha256: str) -> str:
        return key_hash(sha256, self.hash_secret)

    def key(self, digest: str) -> str:
        return result_key(self.pipeline, digest)

    def stored(self, digest: str) -> StoredObject | None:
        """The stored result for a hash, or None; a store fault raises ``StoreError``."""
        return self.store.get(self.key(digest))

    def status(self, digest: str) -> dict[str, Any] | None:
        obj = self.store.get(status_key(self.pipeline, digest))
        return json.loads(obj.body) if obj is not None else None

    def set_status(self, digest: str, state: str, **fields: Any) -> dict[str, Any]:
        status = {"status": state, "pages_done": 0, "pages": None, **fields,
                  "updated_at": _now()}
        body = json.dumps(status, separators=(",", ":")).encode()
        self.store.put(status_key(self.pipeline, digest), body, cache_control=NO_STORE)
        return status

    def fail(self, digest: str, exc: InputError, **fields: Any) -> dict[str, Any]:
        return self.set_status(digest, "failed", error={"code": exc.code, "message": exc.message},
                               **fields)

    def find(self, digest: str) -> Answer | Pending | None:
        """What is known of a hash: its result, its progress, or nothing. A recorded client
        error raises it again (the same bytes give the same error)."""
        obj = self.stored(digest)
        if obj is not None:
            return Answer(json.loads(obj.body), obj, True, self.key(digest))
        status = self.status(digest)
        if status is None or status["status"] == "done":
            return None
        if status["status"] == "failed":
            err = status.get("error") or {}
            raise StoredFailure(err.get("message", "the document could not be read"),
                                code=err.get("code", "unreadable_document"))
        return Pending(digest, status)

    # -- the synchronous read --------------------------------------------------------------------

    def read(self, data: bytes, t0: float | None = None) -> Answer | Pending:
        """The result for these bytes: stored already, or read now and stored once; a document
        longer than ``sync_pages`` is handed to the worker (``Pending``)."""
        t0 = time.perf_counter() if t0 is None else t0
        digest = self.digest(data)
        timings: dict[str, float] = {}
        known = self._lookup(digest, timings)
        if known is None:
            with self._inflight.hold(digest) as waited:
                # whoever held the key before us may have just stored this very result
                known = self._lookup(digest, timings) if waited else None
                if known is None:
                    known = self._compute(data, digest, timings)
        if isinstance(known, Answer):
            known.timings = {**timings, **known.timings, "total": _ms(t0)}
        return known

    def _lookup(self, digest: str, timings: dict[str, float]) -> Answer | Pending | None:
        t1 = time.perf_counter()
        try:
            return self.find(digest)
        except StoreError as exc:
            log.warning("store get failed, computing anyway", extra={"key": self.key(digest),
                                                                      "error": str(exc)})
            return None
        finally:
            timings["store_get"] = timings.get("store_get", 0.0) + _ms(t1)

    def _compute(self, data: bytes, digest: str, timings: dict[str, float]) -> Answer | Pending:
        # imported on the first miss: a Lambda whose requests are hits never loads OpenCV
        from .ocr.pages import open_document

        t2 = time.perf_counter()
        with open_document(data, self.config.page_limits(self.config.max_bytes)) as doc:
            timings["decode"] = _ms(t2)
            if doc.page_count > self.config.sync_pages:
                return self.hand_off(data, digest, doc.page_count)
            pages = self.read_pages(doc, digest, timings)
            return self.store_result(digest, DocumentInfo(doc.format, doc.bytes, doc.page_count),
                                     pages, timings)

    def hand_off(self, data: bytes, digest: str, pages: int) -> Pending:
        """Store the bytes as an upload: its "object created" event starts the worker, exactly
        as for a file uploaded straight to the store."""
        from .keys import sha256_hex

        status = self.set_status(digest, "queued", pages=pages)
        self.store.put_if_absent(upload_key(sha256_hex(data)), data,
                                 content_type="application/octet-stream", cache_control=NO_STORE)
        return Pending(digest, status)

    # -- pages and results (shared with the worker) ---------------------------------------------

    def read_pages(self, doc: Document, digest: str,
                   timings: dict[str, float]) -> list[PageResult]:
        """Every page, in order. Once a thumbnail cannot be stored the rest are not tried:
        the store is failing, and the request's time is better left for the result."""
        pages: list[PageResult] = []
        thumbnails = True
        for number in range(1, doc.page_count + 1):
            page = self.read_page(doc, digest, number, timings, thumbnail=thumbnails)
            thumbnails = thumbnails and (page.thumbnail is not None or page.error is not None)
            pages.append(page)
        return pages

    def read_file(self, data: bytes,
                  on_page: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Every page of a local file read now, nothing stored (the CLI): the same result
        object, without thumbnails. ``on_page(done, total)`` reports progress."""
        from .ocr.pages import open_document

        digest = self.digest(data)
        with open_document(data, self.config.page_limits(self.config.max_upload_bytes)) as doc:
            pages = []
            for n in range(1, doc.page_count + 1):
                pages.append(self.read_page(doc, digest, n, {}, thumbnail=False))
                if on_page is not None:
                    on_page(n, doc.page_count)
            info = DocumentInfo(doc.format, doc.bytes, doc.page_count)
        return result_json(digest, self.pipeline, MODEL_NAMES, info, pages)

    def read_page(self, doc: Document, digest: str, number: int,
                  timings: dict[str, float], thumbnail: bool = True) -> PageResult:
        """Render or decode one page, read it, store its thumbnail. A page that cannot be
        rendered gets its error and no lines; the document goes on."""
        from .reader import read_page

        t0 = time.perf_counter()
        try:
            page = doc.page(number)
        except InputError as exc:
            return PageResult(page=number, width=0, height=0,
                              error=PageError(exc.code, exc.message))
        _add(timings, "render", t0)
        engine = self.engine.get() if page.pixels is not None else None
        t1 = time.perf_counter()
        if page.pixels is not None:
            with self._ocr_lock:
                result, laps = read_page(engine, page)
        else:
            result, laps = read_page(engine, page)
        for name, ms in laps.items():
            timings[name] = round(timings.get(name, 0.0) + ms, 1)
        _add(timings, "read", t1)
        if thumbnail:
            result.thumbnail = self.store_thumbnail(digest, number, page.thumbnail)
        return result

    def store_thumbnail(self, digest: str, number: int, jpeg: bytes) -> str | None:
        key = thumb_key(self.pipeline, digest, number)
        try:
            self.store.put_if_absent(key, jpeg, content_type=JPEG, cache_control=CACHE_CONTROL)
        except StoreError as exc:
            log.error("thumbnail put failed", extra={"key": key, "error": str(exc)})
            return None
        return key

    def page_key(self, digest: str, number: int) -> str:
        return page_key(self.pipeline, digest, number)

    def store_result(self, digest: str, info: DocumentInfo, pages: list[PageResult],
                     timings: dict[str, float] | None = None) -> Answer:
        """Write the result once, last; if someone stored it first, theirs wins. A store
        fault answers the result unstored rather than losing the work."""
        timings = {} if timings is None else timings
        key = self.key(digest)
        result = result_json(digest, self.pipeline, MODEL_NAMES, info, pages)
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
        t0 = time.perf_counter()
        obj: StoredObject | None
        try:
            outcome = self.store.put_if_absent(key, body)
            obj = outcome.obj
            if not outcome.created:
                result = json.loads(outcome.obj.body)
        except StoreError as exc:
            log.error("store put failed, answering unstored", extra={"key": key,
                                                                     "error": str(exc)})
            obj = None
        timings["store_put"] = _ms(t0)
        return Answer(result, obj, False, key, timings)


class KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Hold the key's lock; yields whether another holder made us wait."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            waited = not lock.acquire(blocking=False)
            if waited:
                lock.acquire()
            try:
                yield waited
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add(timings: dict[str, float], name: str, since: float) -> None:
    timings[name] = round(timings.get(name, 0.0) + (time.perf_counter() - since) * 1000, 1)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
