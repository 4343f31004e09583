"""Write-once objects in memory: for a process that stores nothing durable (the CLI)."""

from __future__ import annotations

import threading

from .base import CACHE_CONTROL, CONTENT_TYPE, NO_STORE, PutOutcome, StoredObject, md5_etag, winner


class MemoryStore:
    def __init__(self) -> None:
        self._objects: dict[str, StoredObject] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> StoredObject | None:
        return self._objects.get(key)

    def put_if_absent(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
                      cache_control: str = CACHE_CONTROL) -> PutOutcome:
        obj = StoredObject(body, md5_etag(body), content_type, cache_control)
        with self._lock:
            if key in self._objects:
                return winner(self, key)
            self._objects[key] = obj
        return PutOutcome(obj, created=True)

    def put(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
            cache_control: str = NO_STORE) -> StoredObject:
        obj = StoredObject(body, md5_etag(body), content_type, cache_control)
        with self._lock:
            self._objects[key] = obj
        return obj
