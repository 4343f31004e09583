"""Raw HTTP over a socket against a real ``edgeocr serve`` (uvicorn + h11): bytes no client
library would send.

Every request here is bad input of some kind: non-UTF-8 header bytes, odd methods, broken
multipart, absurd Content-Length values and sizes, HTTP/1.0, a missing Host. DESIGN §2: never
a 5xx, and wherever the app answers a 4xx it is our JSON error. Who answered is told apart by
``X-Request-Id``, which the app's middleware adds to every answer it gives: uvicorn's own
``400 Invalid HTTP request received.`` (text/plain, no request id) is accepted only for the
requests listed as ``SERVER`` below, which h11 refuses before the app ever sees them, and a
request listed as ``APP`` must reach the app. After the battery ``/healthz`` still answers and
the server's log holds no 5xx and no traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from edgeocr.http.app import create_app
from edgeocr.settings import Settings
from servers import edgeocr_serve

MAX_BYTES = 200_000  # the battery server's OCR_MAX_BYTES: "too large" stays cheap to send
ALLOWED_ORIGIN = "http://allowed.example"
SMALL_IMAGE = "images/peer_rapidocr_lines/text_rec.jpg"
UPLOADED_IMAGE = "images/peer_rapidocr_lines/en_rec.jpg"
RESULT = "/results/0123456789abcdef/" + "0" * 64 + ".json"
APP, SERVER = "app", "server"  # who must answer
UVICORN_400 = b"Invalid HTTP request received."


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def from_app(self) -> bool:
        return self.headers.get("x-request-id") is not None


@dataclass
class Served:
    url: str
    port: int
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("raw")
    log = tmp / "server.log"
    with edgeocr_serve(tmp / "results", log, OCR_MAX_BYTES=str(MAX_BYTES),
                       OCR_CORS_ORIGINS=ALLOWED_ORIGIN) as url:
        yield Served(url, urlsplit(url).port or 80, log)


def send_raw(port: int, request: bytes, method: str | None = None,
             timeout: float = 30.0) -> Reply | None:
    """``request`` byte for byte on a fresh connection; the reply, or None when the server
    reset the connection before answering (it refused what it had read so far)."""
    method = method or request.split(b" ", 1)[0].decode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # sent from a thread: a server that answers early (413, 400) stops reading, and a
        # blocked sendall must not keep us from reading that answer
        sender = threading.Thread(target=_send_quietly, args=(sock, request), daemon=True)
        sender.start()
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            body = response.read()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            return None
        finally:
            sender.join(timeout)
        return Reply(response.status, response.headers, body)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed or reset: its answer says why
        sock.sendall(data)


def request(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None,
            body: bytes | None = None, version: bytes = b"HTTP/1.1",
            host: bytes | None = b"127.0.0.1") -> bytes:
    """A request with exactly these header bytes (Content-Length from ``body`` unless a
    header sets it; ``Connection: close`` unless one is given)."""
    lines = [method.encode("latin-1") + b" " + path.encode("latin-1") + b" " + version]
    names = {name.lower() for name, _ in headers or []}
    if host is not None and b"host" not in names:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers or []]
    if body is not None and not names & {b"content-length", b"transfer-encoding"}:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if b"connection" not in names:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def multipart(boundary: bytes, *parts: bytes, close: bool = True) -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + (
        b"--" + boundary + b"--\r\n" if close else b"")


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    return b"".join(b"%x\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n"
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


MP = b"multipart/form-data; boundary=xyz"
IMAGE_PART = b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n' \
             b'Content-Type: image/png\r\n\r\n'
CT = b"Content-Type"


@dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    by: str = APP  # APP: the app must answer; SERVER: uvicorn refuses it before the app
    status: int | None = None  # the exact status, when it is ours to promise
    code: str | None = None  # our error code, when it is ours to promise
    allow: str | None = None  # the Allow header a 405 must carry


CASES = [
    # ---- non-UTF-8 header bytes (Latin-1 0x80-0xFF, as HTTP allows) ----------------------
    Case("user-agent-latin1", request("GET", "/healthz", [(b"User-Agent", b"caf\xe9")]),
         status=200),
    Case("every-high-byte", request("GET", "/healthz", [(b"X-Bytes", bytes(range(0x80, 0x100)))]),
         status=200),
    Case("forwarded-latin1", request("GET", "/healthz", [
        (b"X-Forwarded-For", b"\xe9\xff, 10.0.0.1"), (b"X-Forwarded-Proto", b"htt\xf0"),
        (b"X-Forwarded-Host", b"\xe9.example"), (b"Forwarded", b"for=\xff")]), status=200),
    Case("origin-latin1", request("GET", "/healthz", [(b"Origin", b"http://caf\xe9.example")]),
         status=200),
    Case("referer-cookie-latin1", request("GET", "/", [(b"Referer", b"http://\xff/"),
                                                       (b"Cookie", b"a=\xe9; b=\xff")]),
         status=200),
    Case("host-latin1", request("GET", "/healthz", host=b"caf\xe9.example"), status=200),
    Case("host-bracket", request("GET", "/healthz", host=b"["), status=200),
    Case("accept-latin1-on-404", request("GET", "/nope", [(b"Accept", b"\xe9/\xff")]),
         status=404, code="not_found"),
    Case("content-type-latin1", request("POST", "/ocr", [(CT, b"\xe9\xff/\xfe")], b"abc"),
         status=415, code="unsupported_media_type"),
    Case("content-type-param-latin1",
         request("POST", "/ocr", [(CT, b"image/png; name=caf\xe9; charset=\xff")], b"abc"),
         status=415, code="unsupported_format"),
    Case("uploads-charset-latin1", request("POST", "/uploads", [
        (CT, b"application/json; charset=\xff")], json.dumps({
            "sha256": "a" * 64, "bytes": 10, "content_type": "image/png"}).encode()),
        status=201),
    Case("uploads-content-type-latin1", request("POST", "/uploads", [(CT, b"\xe9/json")],
                                                b"{}"), status=422),
    Case("control-byte-in-value", request("GET", "/healthz", [(b"X-A", b"a\x01b\x7fc")]),
         status=200),  # h11 lets these through: the app must cope
    Case("obsolete-line-folding", request("GET", "/healthz", [(b"X-A", b"a\r\n b")]),
         status=200),
    Case("bare-lf-line-endings", b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n",
         status=200),
    Case("header-name-latin1", request("GET", "/healthz", [(b"X-Caf\xe9", b"1")]), by=SERVER),
    Case("space-before-colon", request("GET", "/healthz", [(b"X-A ", b"1")]), by=SERVER),
    # ---- request ids: echoed only when visible ASCII and short --------------------------
    Case("request-id-bytes", request("GET", "/healthz", [(b"X-Request-Id", b"\xff\xfe\x80")]),
         status=200),
    Case("request-id-65-chars", request("GET", "/healthz", [(b"X-Request-Id", b"r" * 65)]),
         status=200),
    Case("request-id-duplicated", request("GET", "/healthz", [
        (b"X-Request-Id", b"first-id"), (b"X-Request-Id", b"second-id")]), status=200),
    # ---- many, long and duplicated headers ---------------------------------------------
    Case("500-headers", request("GET", "/healthz", [(b"X-H-%d" % i, b"v" * 8)
                                                    for i in range(500)]), status=200),
    Case("500-duplicates", request("GET", "/healthz", [(b"X-Dup", b"\xe9%d" % i)
                                                       for i in range(500)]), status=200),
    Case("header-12k", request("GET", "/healthz", [(b"X-Long", b"\xe9" * 12_000)]),
         status=200),
    Case("header-1mb", request("GET", "/healthz", [(b"X-Long", b"a" * 1_000_000)]),
         by=SERVER),  # h11: an unfinished head over 16 KiB
    Case("content-type-duplicated", request("POST", "/ocr", [
        (CT, b"text/plain"), (CT, b"image/png")], b"abc"), status=415,
        code="unsupported_media_type"),
    Case("two-hosts", request("GET", "/healthz", [(b"Host", b"a"), (b"Host", b"b")]),
         by=SERVER),
    # ---- methods ---------------------------------------------------------------------
    Case("patch-ocr", request("PATCH", "/ocr", body=b"x"), status=405,
         code="method_not_allowed", allow="POST"),
    Case("trace-root", request("TRACE", "/"), status=405, code="method_not_allowed",
         allow="GET, HEAD"),
    Case("propfind-result", request("PROPFIND", RESULT), status=405,
         code="method_not_allowed", allow="GET, HEAD"),
    Case("made-up-method", request("BREW", "/healthz"), status=405,
         code="method_not_allowed", allow="GET, HEAD"),
    Case("lowercase-get", request("get", "/healthz"), status=405, code="method_not_allowed",
         allow="GET, HEAD"),
    Case("5000-char-method", request("X" * 5000, "/healthz"), status=405,
         code="method_not_allowed"),
    Case("put-result", request("PUT", RESULT, [(CT, b"application/json")], b"{}"),
         status=405, code="method_not_allowed", allow="GET, HEAD"),
    Case("delete-result", request("DELETE", RESULT), status=405, code="method_not_allowed",
         allow="GET, HEAD"),
    Case("post-result", request("POST", RESULT, [(CT, b"application/json")], b"{}"),
         status=405, code="method_not_allowed", allow="GET, HEAD"),
    Case("get-uploads", request("GET", "/uploads"), status=405, code="method_not_allowed",
         allow="POST"),
    Case("delete-upload", request("DELETE", "/uploads/" + "a" * 64), status=405,
         code="method_not_allowed", allow="PUT"),
    Case("options-no-preflight", request("OPTIONS", "/ocr"), status=405,
         code="method_not_allowed", allow="POST"),
    Case("options-asterisk", request("OPTIONS", "*"), status=404, code="not_found"),
    Case("preflight-refused-origin", request("OPTIONS", "/ocr", [
        (b"Origin", b"http://evil.example"), (b"Access-Control-Request-Method", b"POST")]),
        status=400, code="cors_not_allowed"),
    Case("preflight-latin1", request("OPTIONS", "/ocr", [
        (b"Origin", b"http://caf\xe9"), (b"Access-Control-Request-Method", b"P\xd8ST"),
        (b"Access-Control-Request-Headers", b"\xff")]), status=400, code="cors_not_allowed"),
    Case("head-unknown-hash", request("HEAD", "/ocr/" + "0" * 64), status=404),
    Case("head-missing-result", request("HEAD", RESULT), status=404),
    # ---- broken multipart ------------------------------------------------------------
    Case("multipart-no-boundary", request("POST", "/ocr", [(CT, b"multipart/form-data")],
                                          b"--xyz\r\n\r\n"), status=422,
         code="invalid_multipart"),
    Case("multipart-empty-boundary", request("POST", "/ocr", [
        (CT, b"multipart/form-data; boundary=")], b"--\r\n\r\n"), status=422),
    Case("multipart-other-boundary", request("POST", "/ocr", [(CT, MP)], multipart(
        b"abc", IMAGE_PART + b"xx")), status=422, code="invalid_multipart"),
    Case("multipart-truncated", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", IMAGE_PART + b"xx", close=False)[:-2]), status=422),
    Case("multipart-no-disposition", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", b"Content-Type: image/png\r\n\r\nxx")), status=422, code="invalid_multipart"),
    Case("multipart-latin1-names", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", b'Content-Disposition: form-data; name="caf\xe9"; filename="\xff.png"'
                b"\r\n\r\nxx")), status=422, code="missing_field"),
    Case("multipart-latin1-boundary", request("POST", "/ocr", [
        (CT, b"multipart/form-data; boundary=\xe9\xff; charset=\xfe")],
        multipart(b"\xe9\xff", IMAGE_PART + b"xx")), status=415, code="unsupported_format"),
    Case("multipart-5000-char-boundary", request("POST", "/ocr", [
        (CT, b"multipart/form-data; boundary=" + b"b" * 5000)],
        multipart(b"b" * 5000, IMAGE_PART + b"xx")), status=422),
    Case("multipart-50-fields", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", *(b'Content-Disposition: form-data; name="f%d"\r\n\r\nx' % i
                  for i in range(50)))), status=422, code="invalid_multipart"),
    Case("multipart-5-files", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", *(IMAGE_PART + b"x" for _ in range(5)))), status=422,
        code="invalid_multipart"),
    Case("multipart-100k-part-header", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", b'Content-Disposition: form-data; name="image"; filename="'
                + b"a" * 100_000 + b'"\r\n\r\nxx')), status=422),
    Case("multipart-empty-file", request("POST", "/ocr", [(CT, MP)], multipart(
        b"xyz", IMAGE_PART)), status=400, code="empty_body"),
    Case("multipart-garbage", request("POST", "/ocr", [(CT, MP)], bytes(range(256)) * 4),
         status=422),
    # ---- Content-Length ------------------------------------------------------------------
    Case("content-length-negative", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"-1")], b""), by=SERVER),
    Case("content-length-non-numeric", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"abc")], b""), by=SERVER),
    Case("content-length-plus-sign", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"+5")], b"abcde"), by=SERVER),
    Case("content-length-hex", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"0x10")], b"abcde"), by=SERVER),
    Case("content-length-superscript", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"\xb2")], b"ab"), by=SERVER),
    Case("content-length-conflicting", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"3"), (b"Content-Length", b"4")], b"abcd"),
        by=SERVER),
    Case("content-length-23-digits", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"9" * 23)], b""), by=SERVER),
    Case("content-length-10^12", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"1000000000000")], b""), status=413,
        code="too_many_bytes"),
    Case("content-length-2^64", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", str(2**64).encode())], b""), status=413,
        code="too_many_bytes"),
    Case("content-length-10^12-multipart", request("POST", "/ocr", [
        (CT, MP), (b"Content-Length", b"1000000000000")], b""), status=413,
        code="too_many_bytes"),
    Case("content-length-repeated-same", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"3"), (b"Content-Length", b"3")], b"abc"),
        status=415, code="unsupported_format"),
    Case("content-length-list", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"3, 3")], b"abc"), status=415),
    Case("content-length-zero", request("POST", "/ocr", [(CT, b"image/png")], b""),
         status=400, code="empty_body"),
    Case("content-length-shorter-than-body", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"2")], b"abcdefgh"), status=415),
    Case("chunked-and-content-length", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")],
        chunked(b"abc")), status=415),
    Case("chunk-size-not-hex", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Transfer-Encoding", b"chunked")], b"zz\r\nabc\r\n0\r\n\r\n"),
        by=SERVER),
    Case("transfer-encoding-gzip", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Transfer-Encoding", b"gzip")], b"abc"), by=SERVER),
    # ---- absurd sizes ----------------------------------------------------------------
    Case("raw-body-1mb-chunked", request("POST", "/ocr", [
        (CT, b"image/png"), (b"Transfer-Encoding", b"chunked")],
        chunked(b"\x89PNG\r\n\x1a\n" + b"\0" * 1_000_000)), status=413, code="too_many_bytes"),
    Case("raw-body-over-limit", request("POST", "/ocr", [(CT, b"application/pdf")],
                                        b"%PDF-" + b"\0" * MAX_BYTES), status=413,
         code="too_many_bytes"),
    Case("multipart-file-1mb-chunked", request("POST", "/ocr", [
        (CT, MP), (b"Transfer-Encoding", b"chunked")],
        chunked(multipart(b"xyz", IMAGE_PART + b"\0" * 1_000_000))), status=413,
        code="too_many_bytes"),
    Case("base64-over-limit", request("POST", "/ocr", [(CT, b"application/json")],
                                      json.dumps({"image_base64": "A" * 300_000}).encode()),
         status=413, code="too_many_bytes"),
    Case("uploads-10^40-bytes", request("POST", "/uploads", [(CT, b"application/json")],
                                        b'{"sha256": "' + b"a" * 64 + b'", "bytes": 1'
                                        + b"0" * 40 + b', "content_type": "image/png"}'),
         status=413, code="too_many_bytes"),
    Case("uploads-2mb-json", request("POST", "/uploads", [(CT, b"application/json")],
                                     b'{"x": "' + b"a" * 2_000_000 + b'"}'), status=422),
    Case("path-20k", request("GET", "/" + "a" * 20_000), status=404, code="not_found"),
    Case("path-1mb", request("GET", "/" + "a" * 1_000_000), by=SERVER),
    Case("path-percent-ff", request("GET", "/ocr/%ff%fe"), status=422, code="invalid_hash"),
    Case("path-raw-latin1", b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
         by=SERVER),
    # ---- HTTP versions and the request line ------------------------------------------------
    Case("http-1.0-no-host", request("GET", "/healthz", version=b"HTTP/1.0", host=None),
         status=200),
    Case("http-1.0-post", request("POST", "/ocr", [(CT, b"image/png")], b"abc",
                                  version=b"HTTP/1.0", host=None), status=415),
    Case("http-1.0-head", request("HEAD", "/healthz", version=b"HTTP/1.0", host=None),
         status=200),
    Case("http-1.1-no-host", request("GET", "/healthz", host=None), by=SERVER),
    Case("http-0.9-request-line", b"GET /healthz\r\n\r\n", by=SERVER),
    Case("request-line-garbage", b"\x00\xff\xfe\r\n\r\n", by=SERVER),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_raw_request(served: Served, case: Case) -> None:
    reply = send_raw(served.port, case.raw)
    if case.by == SERVER:
        # refused by uvicorn/h11 before the app: its own plain 400, or a reset when it
        # stopped reading a request it had already refused
        if reply is not None:
            assert (reply.status, reply.from_app) == (400, False), (reply.status, reply.body)
            assert reply.body.strip().endswith(UVICORN_400), reply.body[:200]
        return
    assert reply is not None, "the connection was reset instead of answered"
    assert reply.from_app, f"the app never saw it: {reply.status} {reply.body[:200]!r}"
    assert reply.status < 500, reply.body[:500]
    if case.status is not None:
        assert reply.status == case.status, reply.body[:500]
    if 400 <= reply.status < 500:
        assert reply.headers.get("content-type", "").startswith("application/json")
    if 400 <= reply.status < 500 and case.raw.split(b" ", 1)[0] != b"HEAD":
        body = json.loads(reply.body)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert body["error"]["code"] and body["error"]["message"], body
        if case.code is not None:
            assert body["error"]["code"] == case.code, body
    if case.allow is not None:
        assert reply.headers.get("allow") == case.allow, dict(reply.headers)
    if case.raw.split(b" ", 1)[0] == b"HEAD":
        assert reply.body == b""
    _check_request_id(case, reply)


def _check_request_id(case: Case, reply: Reply) -> None:
    echoed = reply.headers.get_all("x-request-id") or []
    assert len(echoed) == 1, echoed
    [rid] = echoed
    assert re.fullmatch(r"[\x21-\x7e]{1,64}", rid), rid
    if case.id == "request-id-duplicated":
        assert rid == "first-id"
    elif case.id.startswith("request-id-"):
        assert re.fullmatch(r"[0-9a-f]{32}", rid), f"not replaced: {rid!r}"


def test_request_id_is_echoed_when_safe(served: Served) -> None:
    reply = send_raw(served.port, request("GET", "/healthz", [(b"X-Request-Id", b"abc-123_x")]))
    assert reply is not None and reply.headers["x-request-id"] == "abc-123_x"
    long = "r" * 64
    reply = send_raw(served.port, request("GET", "/healthz", [(b"X-Request-Id", long.encode())]))
    assert reply is not None and reply.headers["x-request-id"] == long


def test_preflight_for_an_allowed_origin(served: Served) -> None:
    reply = send_raw(served.port, request("OPTIONS", "/ocr", [
        (b"Origin", ALLOWED_ORIGIN.encode()), (b"Access-Control-Request-Method", b"POST"),
        (b"Access-Control-Request-Headers", b"content-type"), (b"User-Agent", b"\xe9")]))
    assert reply is not None and reply.status == 200, reply
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in reply.headers["access-control-allow-methods"]


def test_head_carries_the_get_headers(served: Served) -> None:
    get = send_raw(served.port, request("GET", "/healthz"))
    head = send_raw(served.port, request("HEAD", "/healthz"))
    assert get is not None and head is not None
    assert (get.status, head.status) == (200, 200)
    assert head.body == b"" and get.body
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.body))
    assert head.headers["content-type"] == get.headers["content-type"]


def test_body_shorter_than_content_length_then_hang_up(served: Served) -> None:
    """The client says 100 bytes, sends 3 and closes: nobody is left to answer, and the
    server's log must call it the client's error, not a 500."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request("POST", "/ocr", [(CT, b"image/png"), (b"Content-Length", b"100"),
                                              (b"X-Request-Id", b"hangs-up-early")], b"abc"))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # uvicorn closes: a half-closed client has gone
    line = _wait_for_log_line(served.log, "hangs-up-early")
    assert line["status"] == 400 and line["outcome"] == "client_error", line


def test_body_never_finished_gets_no_answer_yet(served: Served) -> None:
    """Content-Length promises more than comes and the client waits: the server waits too
    (no answer, no 5xx) until the client gives up."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=1) as sock:
        sock.sendall(request("POST", "/ocr", [(CT, b"image/png"), (b"Content-Length", b"100")],
                             b"abc"))
        with pytest.raises(TimeoutError):
            sock.recv(65536)


def test_real_image_with_latin1_headers(served: Served, eval_dir: Path) -> None:
    """A good image whose every optional header is Latin-1 is read and stored; the absolute
    URLs in the answer are ASCII (an unusable Host is not copied into them)."""
    data = (eval_dir / SMALL_IMAGE).read_bytes()
    reply = send_raw(served.port, request("POST", "/ocr", [
        (CT, b"image/jpeg; name=caf\xe9"), (b"User-Agent", b"caf\xe9/1.0"),
        (b"X-Request-Id", b"\xe9t\xe9"), (b"Accept-Language", b"fr-\xff"),
        (b"Origin", b"http://\xe9")], data, host=b"caf\xe9.example"), timeout=180)
    assert reply is not None and reply.from_app
    assert reply.status == 200, reply.body[:500]
    body = json.loads(reply.body)
    assert body["hash"] == hashlib.sha256(data).hexdigest() and body["stored"] is True
    assert reply.headers["location"] == body["result_url"]
    assert body["result_url"].isascii() and body["result_url"].startswith("http://127.0.0.1:")


def test_upload_put_with_latin1_headers(served: Served, eval_dir: Path) -> None:
    """The local upload PUT (POST /uploads, then PUT ?token) with Latin-1 headers: a
    content type that differs from the signed one is refused as JSON, the right one lands
    and the document gets read."""
    data = (eval_dir / UPLOADED_IMAGE).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    offer = httpx.post(f"{served.url}/uploads", json={
        "sha256": sha, "bytes": len(data), "content_type": "image/jpeg"}, timeout=30)
    assert offer.status_code == 201, offer.text
    target = urlsplit(offer.json()["upload"]["url"])
    path = f"{target.path}?{target.query}"
    odd = [(b"User-Agent", b"\xe9"), (b"X-Request-Id", b"\xff"), (b"Cookie", b"\xfe=\xfd")]
    refused = send_raw(served.port, request("PUT", path, [(CT, b"image/jpe\xe9"), *odd], data))
    assert refused is not None and refused.status == 403, refused
    assert json.loads(refused.body)["error"]["code"] == "invalid_upload_token"
    mismatch = send_raw(served.port, request("PUT", path, [(CT, b"image/jpeg"), *odd],
                                             data[:-1] + b"\x00"))
    assert mismatch is not None and mismatch.status == 400, mismatch
    assert json.loads(mismatch.body)["error"]["code"] == "checksum_mismatch"
    put = send_raw(served.port, request("PUT", path, [(CT, b"image/jpeg"), *odd], data))
    assert put is not None and put.status == 200, put
    deadline = time.monotonic() + 180
    while (got := httpx.get(f"{served.url}/ocr/{sha}", timeout=30)).status_code == 202:
        assert time.monotonic() < deadline, got.text
        time.sleep(0.2)
    assert got.status_code == 200, got.text


def test_upload_token_with_non_ascii_mac(tmp_path: Path) -> None:
    """In-process (a 500 in the battery server's log would hide every other one)."""
    app = create_app(Settings(results_dir=tmp_path, local_worker=False),
                     engine_factory=_no_engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.put("/uploads/" + "a" * 64 + "?token=1.2.%C3%A9", content=b"xx",
                           headers={"Content-Type": "image/png"})
    assert reply.status_code == 403, reply.status_code


def _no_engine() -> None:
    raise AssertionError("no request here needs the engine")


def test_healthz_after_the_battery_and_no_5xx_logged(served: Served) -> None:
    """Runs last in this module: the server is still up and logged no 5xx, no traceback."""
    reply = send_raw(served.port, request("GET", "/healthz"))
    assert reply is not None and reply.status == 200
    assert json.loads(reply.body)["status"] == "ok"
    text = served.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert not re.search(r'"status": ?5\d\d', text), text[-3000:]
    assert not re.search(r'HTTP/1\.[01]" 5\d\d', text), text[-3000:]


def _wait_for_log_line(log: Path, request_id: str, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if request_id in line and line.startswith("{"):
                record = json.loads(line)
                if record.get("message") == "request":
                    return record
        time.sleep(0.1)
    raise AssertionError(f"no access log line for {request_id}:\n{log.read_text()[-2000:]}")
