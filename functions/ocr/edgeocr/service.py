"""The use case, once, for every entry point (HTTP app, worker, CLI): bytes → hash → stored
result, or read now and store.

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
from typing import Any

from .keys import content_hash, result_key
from .observability import logger
from .store import ResultStore, StoredObject, StoreError

log = logger


@dataclass
class Answer:
    """What a read produced: the result, where it is stored (None: storing failed) and how."""

    result: dict[str, Any]
    obj: StoredObject | None
    cached: bool
    key: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int


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
    def __init__(self, store: ResultStore, pipeline: str, engine: EngineHolder, limits: Limits,
                 hash_secret: str | None = None) -> None:
        self.store, self.pipeline, self.engine = store, pipeline, engine
        self.limits, self.hash_secret = limits, hash_secret
        self._ocr_lock = threading.Semaphore(1)  # one inference at a time: ORT uses every core
        self._inflight = KeyedLocks()  # identical concurrent reads compute once

    def digest(self, data: bytes) -> str:
        return content_hash(data, self.hash_secret)

    def key(self, digest: str) -> str:
        return result_key(self.pipeline, digest)

    def stored(self, digest: str) -> StoredObject | None:
        """The stored result for a hash, or None; a store fault raises ``StoreError``."""
        return self.store.get(self.key(digest))

    def read(self, data: bytes, t0: float | None = None) -> Answer:
        """The result for these bytes: stored already, or read now and stored once."""
        t0 = time.perf_counter() if t0 is None else t0
        key = self.key(self.digest(data))
        timings: dict[str, float] = {}
        hit = self._lookup(key, timings)
        if hit is None:
            with self._inflight.hold(key) as waited:
                # whoever held the key before us may have just stored this very result
                hit = self._lookup(key, timings) if waited else None
                if hit is None:
                    return self._compute(data, key, timings, t0)
        timings["total"] = _ms(t0)
        return Answer(json.loads(hit.body), hit, True, key, timings)

    def _lookup(self, key: str, timings: dict[str, float]) -> StoredObject | None:
        t1 = time.perf_counter()
        try:
            return self.store.get(key)
        except StoreError as exc:
            log.warning("store get failed, computing anyway", extra={"key": key,
                                                                      "error": str(exc)})
            return None
        finally:
            timings["store_get"] = timings.get("store_get", 0.0) + _ms(t1)

    def _compute(self, data: bytes, key: str, timings: dict[str, float], t0: float) -> Answer:
        # imported on the first miss: a Lambda whose requests are hits never loads OpenCV
        from .ocr.decode import decode
        from .result import build_result

        t2 = time.perf_counter()
        decoded = decode(data, max_bytes=self.limits.max_bytes,
                         max_pixels=self.limits.max_pixels)
        timings["decode"] = _ms(t2)
        t3 = time.perf_counter()
        engine = self.engine.get()  # only now: bad input never pays for loading the models
        timings["engine_load"] = _ms(t3)
        with self._ocr_lock:
            output = engine.ocr_decoded(decoded)
        result = build_result(output, self.digest(data), self.pipeline)
        timings.update(output.timings_ms)
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
        t4 = time.perf_counter()
        obj: StoredObject | None
        try:
            outcome = self.store.put_if_absent(key, body)
            obj = outcome.obj
            if not outcome.created:
                result = json.loads(outcome.obj.body)  # someone stored it first: theirs wins
        except StoreError as exc:
            log.error("store put failed, answering unstored", extra={"key": key,
                                                                     "error": str(exc)})
            obj = None
        timings["store_put"] = _ms(t4)
        timings["total"] = _ms(t0)
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


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
