"""The write-once store contract, shared by the S3 and local stores.

Both stores have the same contract: ``get`` returns the stored object or None, and
``put_if_absent`` stores an object only if nothing is there yet, returning whichever object
ends up stored (ours, or the one a concurrent writer stored first). Write-once objects are
never overwritten or deleted; ``put`` (overwrite) exists for the one kind of object that is
mutable by design (progress). The store knows nothing about OCR: keys and bodies are opaque.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

CONTENT_TYPE = "application/json"
CACHE_CONTROL = "public, max-age=31536000, immutable"
NO_STORE = "no-store"


class StoreError(RuntimeError):
    """The store could not be reached or refused the request after retries."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    etag: str
    content_type: str = CONTENT_TYPE
    cache_control: str = CACHE_CONTROL
    last_modified: str | None = None  # HTTP date, as S3 gives it


@dataclass(frozen=True)
class PutOutcome:
    obj: StoredObject
    created: bool  # False: another writer stored this key first and ``obj`` is theirs


class ResultStore(Protocol):
    def get(self, key: str) -> StoredObject | None: ...

    def put_if_absent(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
                      cache_control: str = CACHE_CONTROL) -> PutOutcome: ...

    def put(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
            cache_control: str = NO_STORE) -> StoredObject: ...


def winner(store: ResultStore, key: str) -> PutOutcome:
    """The one conflict policy: another writer stored the key first, so read and return
    theirs. Nothing deletes objects, so a conflict with no object to read is a store fault."""
    existing = store.get(key)
    if existing is None:
        raise StoreError(f"{key}: the write conflicted but no object can be read")
    return PutOutcome(existing, created=False)


def md5_etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'
