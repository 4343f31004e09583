"""A directory of write-once objects: the store of `edgeocr serve`."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import stat
import tempfile
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

from .base import CACHE_CONTROL, CONTENT_TYPE, NO_STORE, PutOutcome, StoredObject, md5_etag, winner

Listener = Callable[[str], None]


class LocalStore:
    """A directory of immutable files; survives restarts. Writes are atomic and exclusive:
    the body goes to a temp file which is then hard-linked into place, and linking fails if
    the name exists, so readers never see a partial object and the first writer wins.

    Write-once files are read-only (0444): that is how ``get`` tells them from the mutable
    objects ``put`` writes, and so which Cache-Control S3 would have given. Listeners hear
    of every object created, as S3's "object created" notifications would tell a queue."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _created(self, key: str) -> None:
        for listener in self._listeners:
            listener(key)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key escapes the store: {key!r}")
        return path

    def get(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            with path.open("rb") as f:
                info = os.fstat(f.fileno())
                body = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return self._object(key, body, info)

    def put_if_absent(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
                      cache_control: str = CACHE_CONTROL) -> PutOutcome:
        path = self._path(key)
        tmp = self._write_temp(path, body, mode=0o444)
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return winner(self, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._created(key)
        return PutOutcome(self._object(key, body, path.stat()), created=True)

    def put(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
            cache_control: str = NO_STORE) -> StoredObject:
        path = self._path(key)
        os.replace(self._write_temp(path, body, mode=0o644), path)
        self._created(key)
        return self._object(key, body, path.stat())

    @staticmethod
    def _write_temp(path: Path, body: bytes, mode: int) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        return tmp

    @staticmethod
    def _object(key: str, body: bytes, info: os.stat_result) -> StoredObject:
        mutable = bool(info.st_mode & stat.S_IWUSR)
        ctype = mimetypes.guess_type(key)[0] or (CONTENT_TYPE if key.endswith(".json")
                                                 else "application/octet-stream")
        return StoredObject(body, md5_etag(body), ctype, NO_STORE if mutable else CACHE_CONTROL,
                            formatdate(info.st_mtime, usegmt=True))
