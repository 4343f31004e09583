"""A fault-injecting HTTP proxy for S3 tests: sits on 127.0.0.1 in front of a moto server.

Why a proxy and not botocore's Stubber: the faults must reach botocore as real HTTP (status
codes, XML error bodies, a response that never comes in time) so that its *real* retry
mode, timeouts and error parsing run, exactly as against S3. Stubber bypasses all of that.

A schedule of rules says what to do with the next N requests of an operation (``PutObject``,
``GetObject``, ...): answer an S3 error without forwarding, or hold the request past the
client's read timeout (forwarding it first, as S3 may have stored an object whose response
was lost, or not). Every request is recorded, injected or not, so tests count attempts.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

S3_ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    403: ("AccessDenied", "Access Denied"),
}


@dataclass
class Rule:
    """Apply to the next ``times`` requests of ``op``: an error status, or a delay."""

    op: str
    times: int
    status: int | None = None  # answer this S3 error instead of forwarding
    delay: float = 0.0  # hold the response this long (seconds)
    forward: bool = True  # with a delay: forward to moto first (the write may happen)
    until: str | None = None  # the rule ends early when a request of this op arrives
    path: str | None = None  # only requests whose path matches this regex (e.g. one key kind)


@dataclass
class Seen:
    op: str
    method: str
    path: str
    injected: str | None  # what the proxy did instead of a plain forward, if anything


@dataclass
class Schedule:
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, op: str, path: str = "") -> Rule | None:
        """The first live rule for ``op`` (and ``path``), with one use consumed."""
        with self.lock:
            for rule in self.rules:
                if rule.until == op:
                    rule.times = 0
            for rule in self.rules:
                if rule.op == op and rule.times > 0 and (
                        rule.path is None or re.search(rule.path, path)):
                    rule.times -= 1
                    return rule
        return None


def operation(method: str, path: str, query: str) -> str:
    """The S3 operation a path-style request is (enough for the calls the store makes)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2:  # /bucket/key...
        return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject",
                "DELETE": "DeleteObject"}.get(method, method)
    return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(
        method, method)


class FaultProxy:
    """``with FaultProxy(moto_url) as proxy:`` then point boto3 at ``proxy.url``."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port
        self.schedule = Schedule()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ programming faults
    def fail(self, op: str, times: int, status: int = 503, *, until: str | None = None,
             path: str | None = None) -> None:
        """Answer the next ``times`` requests of ``op`` with an S3 error (or fewer: until
        the first request of ``until``, e.g. fail reads until the app writes)."""
        self.schedule.rules.append(Rule(op, times, status=status, until=until, path=path))

    def delay(self, op: str, times: int, seconds: float, *, forward: bool = True,
              until: str | None = None, path: str | None = None) -> None:
        self.schedule.rules.append(Rule(op, times, delay=seconds, forward=forward,
                                        until=until, path=path))

    def clear(self) -> None:
        with self.schedule.lock:
            self.schedule.rules.clear()

    def count(self, op: str, *, injected: bool | None = None, path: str | None = None) -> int:
        """Requests of ``op`` seen (all, or only those injected / passed through), of paths
        matching ``path`` if given."""
        return sum(1 for s in self.schedule.seen if s.op == op and (
            injected is None or (s.injected is not None) == injected) and (
            path is None or re.search(path, s.path)))

    def reset_counts(self) -> None:
        with self.schedule.lock:
            self.schedule.seen.clear()

    # ---------------------------------------------------------------------- the handler
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:  # keep test output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                split = urlsplit(self.path)
                op = operation(self.command, split.path, split.query)
                body = self._body()
                rule = proxy.schedule.take(op, split.path)
                injected = None
                if rule is not None:
                    injected = (f"status {rule.status}" if rule.status
                                else f"delay {rule.delay}s forward={rule.forward}")
                with proxy.schedule.lock:
                    proxy.schedule.seen.append(Seen(op, self.command, split.path, injected))
                try:
                    if rule is not None and rule.status:
                        self._s3_error(rule.status)
                        return
                    if rule is not None and not rule.forward:
                        time.sleep(rule.delay)
                        self._s3_error(503)  # too late: the client has given up
                        return
                    status, headers, payload = self._forward(body)
                    if rule is not None:
                        time.sleep(rule.delay)
                    self._reply(status, headers, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: exactly the point

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                  timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("transfer-encoding", "connection")}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    return resp.status, resp.getheaders(), payload
                finally:
                    conn.close()

            def _reply(self, status: int, headers: list[tuple[str, str]],
                       payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "connection",
                                           "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _s3_error(self, status: int) -> None:
                code, message = S3_ERRORS.get(status, ("InternalError", "injected"))
                xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                       f"<Message>{message}</Message><RequestId>faultproxy</RequestId>"
                       "</Error>").encode()
                headers = [("Content-Type", "application/xml")]
                self._reply(status, headers, xml)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

        return Handler
