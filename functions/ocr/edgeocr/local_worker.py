"""The in-process worker of `edgeocr serve`: the local stand-in for S3 → SQS → Lambda.

The directory store tells it of every ``uploads/`` object created (as S3's notification
would tell the queue); one thread reads them in turn with the same ``Worker`` the SQS handler
calls. A failure is retried like a redelivered message, and recorded as failed on the last
attempt. At start it queues every upload whose result is not stored yet, so a restart resumes
unfinished documents where they stopped.
"""

from __future__ import annotations

import queue
import threading

from .keys import upload_key
from .observability import logger
from .store import LocalStore
from .worker import Worker

log = logger
MAX_ATTEMPTS = 3  # as the queue's maxReceiveCount in AWS
_PREFIX = upload_key("")


class LocalWorker:
    def __init__(self, worker: Worker, store: LocalStore) -> None:
        self.worker, self.store = worker, store
        # (sha256, attempt); an Event is a marker that join_idle waits on; None stops
        self._queue: queue.Queue[tuple[str, int] | threading.Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="edgeocr-worker", daemon=True)
        store.subscribe(self._on_created)

    def start(self) -> None:
        self._thread.start()
        uploads = self.store.root / _PREFIX
        pending = sorted(uploads.iterdir(), key=lambda p: p.stat().st_mtime) \
            if uploads.is_dir() else []
        for path in pending:
            if not path.name.startswith(".") and path.is_file():
                self._queue.put((path.name, 1))

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def join_idle(self, timeout: float = 60.0) -> bool:
        """Wait until everything queued so far is read (for tests)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _on_created(self, key: str) -> None:
        if key.startswith(_PREFIX):
            self._queue.put((key.removeprefix(_PREFIX), 1))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            sha256, attempt = item
            try:
                self.worker.process(sha256)
            except Exception:  # a redelivery, as SQS would make it
                log.exception("worker attempt failed", extra={"sha256": sha256,
                                                              "attempt": attempt})
                if attempt < MAX_ATTEMPTS:
                    self._queue.put((sha256, attempt + 1))
                else:
                    self.worker.give_up(sha256, attempt)
