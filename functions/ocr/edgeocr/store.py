"""Write-once result storage: S3 in AWS, a local directory for `edgeocr serve`.

Both stores have the same contract: ``get`` returns the stored object or None, and
``put_if_absent`` stores an object only if nothing is there yet, returning whichever object
ends up stored (ours, or the one a concurrent writer stored first). Nothing is ever
overwritten or deleted. The store knows nothing about OCR: keys and bodies are opaque.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CONTENT_TYPE = "application/json"
CACHE_CONTROL = "public, max-age=31536000, immutable"


class StoreError(RuntimeError):
    """The store could not be reached or refused the request after retries."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    etag: str
    content_type: str = CONTENT_TYPE
    cache_control: str = CACHE_CONTROL


@dataclass(frozen=True)
class PutOutcome:
    obj: StoredObject
    created: bool  # False: another writer stored this key first and ``obj`` is theirs


class ResultStore(Protocol):
    def get(self, key: str) -> StoredObject | None: ...

    def put_if_absent(self, key: str, body: bytes) -> PutOutcome: ...


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


class LocalStore:
    """A directory of immutable files; survives restarts. Writes are atomic and exclusive:
    the body goes to a temp file which is then hard-linked into place, and linking fails if
    the name exists, so readers never see a partial object and the first writer wins."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key escapes the store: {key!r}")
        return path

    def get(self, key: str) -> StoredObject | None:
        try:
            body = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return StoredObject(body, _etag(body))

    def put_if_absent(self, key: str, body: bytes) -> PutOutcome:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                existing = self.get(key)
                if existing is None:  # pragma: no cover - nothing deletes objects
                    raise StoreError(f"{key} vanished while being read") from None
                return PutOutcome(existing, created=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return PutOutcome(StoredObject(body, _etag(body)), created=True)


class S3Store:
    """Results in S3, written with ``If-None-Match: *`` (conditional write).

    botocore's standard retry mode retries throttling, 5xx and connection errors with
    backoff; the endpoint comes from boto3's own ``AWS_ENDPOINT_URL_S3`` when set.
    """

    def __init__(self, bucket: str, client=None, *, max_attempts: int = 4,
                 connect_timeout: float = 2.0, read_timeout: float = 5.0) -> None:
        self.bucket = bucket
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": max_attempts},
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                ),
            )
        self.client = client

    def get(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            body = resp["Body"].read()
        except ClientError as exc:
            # Without s3:ListBucket (least privilege: Get/Put on results/* only) S3 answers
            # a missing key with 403 instead of 404, so both mean "not stored yet". A real
            # permission fault then shows up where it matters: the put fails loudly.
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied",
                                                              "403"):
                return None
            raise StoreError(f"S3 get {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 get {key}: {exc}") from exc
        return StoredObject(
            body,
            resp.get("ETag", _etag(body)),
            resp.get("ContentType", CONTENT_TYPE),
            resp.get("CacheControl", CACHE_CONTROL),
        )

    def put_if_absent(self, key: str, body: bytes) -> PutOutcome:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                ContentType=CONTENT_TYPE, CacheControl=CACHE_CONTROL,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: someone stored it first; 409: a concurrent conditional write is in flight
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409, 412,
            ):
                existing = self.get(key)
                if existing is not None:
                    return PutOutcome(existing, created=False)
            raise StoreError(f"S3 put {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 put {key}: {exc}") from exc
        return PutOutcome(StoredObject(body, resp.get("ETag", _etag(body))), created=True)
