"""A directory of write-once objects: the store of `edgeocr serve`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .base import PutOutcome, StoredObject, md5_etag, winner


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
        return StoredObject(body, md5_etag(body))

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
                return winner(self, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return PutOutcome(StoredObject(body, md5_etag(body)), created=True)
