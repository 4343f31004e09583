"""Fuzzing the headers (and methods) of every route with hypothesis, through the ASGI scope.

tests/test_fuzz.py fuzzes bodies; this fuzzes what comes with them: header names, values and
raw bytes (0x80-0xFF, controls, very long values, hundreds of headers, duplicates, a missing
or doubled Host, absurd Content-Length and Content-Type values), on every route: POST /ocr
(each body form), GET/HEAD /ocr/{hash}, POST /uploads, PUT /uploads/{sha256}?token, GET/HEAD
/results/..., /healthz, /, /config.json, and odd methods and OPTIONS (with CORS on and off).

The requests go straight into the app as ASGI scopes: header bytes exactly as drawn, as a
server would hand them over (names lower-cased; no CR, LF or NUL, which no HTTP/1.1 parser
passes), so nothing in a client library can tidy them first. What must hold (DESIGN §2): no
exception escapes the app, never a 5xx, every 4xx is one we document and carries our JSON
error, a HEAD answer has no body, and every answer carries exactly one ``X-Request-Id`` of
visible ASCII (it is echoed from the request, so it must be sanitised).

The engine is a fake (no model: the OCR is not under test here). Profiles as in
tests/test_fuzz.py: ``ci`` (default, derandomized, 150 examples per test) for ``make test``,
``HYPOTHESIS_PROFILE=long`` (5,000 per test, fresh randomness) for ``make fuzz``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeocr.http.app import create_app
from edgeocr.settings import Settings
from helpers import FakeEngine, fuzz_profile

PROFILE = fuzz_profile()  # ci (make test) or long (make fuzz), as tests/test_fuzz.py

DOCUMENTED_4XX = {400, 403, 404, 405, 413, 415, 422}
ALLOWED_ORIGIN = "http://allowed.example"
REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 16), "white").save(buf, "PNG")
    return buf.getvalue()


PNG = small_png()
UPLOAD = PNG + b"upload"  # trailing bytes after IEND: another file, still a readable PNG
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()


# --------------------------------------------------------------------------- the apps

@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]


class Target:
    """One app (CORS on or off) over its own store, seeded so that hits, stored results and
    a genuine upload token exist, called through an anyio portal."""

    def __init__(self, root: Path, portal: anyio.from_thread.BlockingPortal,
                 cors: bool) -> None:
        self.app = create_app(
            Settings(results_dir=root, local_worker=False,
                     cors_origins=(ALLOWED_ORIGIN,) if cors else ()),
            engine_factory=FakeEngine)
        self.portal = portal
        seeded = self.call("POST", "/ocr", [(b"content-type", b"image/png")], PNG)
        assert seeded.status == 200, seeded.body
        result = json.loads(seeded.body)
        self.hash, self.pipeline = result["hash"], result["pipeline"]
        offer = self.call("POST", "/uploads", [(b"content-type", b"application/json")],
                          json.dumps({"sha256": UPLOAD_SHA, "bytes": len(UPLOAD),
                                      "content_type": "image/png"}).encode())
        assert offer.status == 201, offer.body
        url = json.loads(offer.body)["upload"]["url"]
        self.upload_query = url.split("?", 1)[1]

    def call(self, method: str, path: str, headers: list[tuple[bytes, bytes]],
             body: bytes = b"", query: str = "") -> Answer:
        return self.portal.call(self._call, method, path, headers, body, query)

    async def _call(self, method: str, path: str, headers: list[tuple[bytes, bytes]],
                    body: bytes, query: str) -> Answer:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
                 "headers": headers, "server": ("127.0.0.1", 8000),
                 "client": ("127.0.0.1", 50000)}
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return pending.pop() if pending else {"type": "http.disconnect"}

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, send)
        [start] = [m for m in messages if m["type"] == "http.response.start"]
        return Answer(start["status"], list(start.get("headers", [])),
                      b"".join(m.get("body", b"") for m in messages
                               if m["type"] == "http.response.body"))


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> Iterator[dict[bool, Target]]:
    with anyio.from_thread.start_blocking_portal() as portal:
        yield {cors: Target(tmp_path_factory.mktemp(f"headers-cors-{cors}"), portal, cors)
               for cors in (False, True)}


# ------------------------------------------------------------------------ strategies

NAMES = [b"host", b"content-type", b"content-length", b"transfer-encoding", b"x-request-id",
         b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded",
         b"origin", b"referer", b"user-agent", b"accept", b"accept-encoding", b"cookie",
         b"authorization", b"if-none-match", b"if-modified-since", b"range", b"expect",
         b"connection", b"access-control-request-method", b"access-control-request-headers",
         b"x-amzn-trace-id", b"content-encoding", b"content-disposition"]
# any byte a server hands on (h11 refuses CR, LF and NUL; it lets other controls through)
HEADER_BYTE = st.sampled_from([b for b in range(256) if b not in (0x00, 0x0A, 0x0D)])
NAME_BYTE = st.sampled_from([b for b in range(256) if b not in b"\x00\n\r\t :"])
header_bytes = st.lists(HEADER_BYTE, max_size=80).map(bytes)
HIGH = bytes(range(0x80, 0x100))
INTERESTING_VALUES = [
    b"", b" ", b"\t", b"caf\xe9", HIGH, b"\xff\xfe", b"\xc3\x28", b"\xe9" * 300, b"*",
    b"-1", b"0", b"abc", b"\xb2", b"1e3", b" 5", b"5, 5", b"+5", b"0x10", b"9" * 40,
    str(2**64).encode(), b"chunked", b"gzip", b"100-continue", b"close",
    b"image/png", b"image/png; charset=\xe9", b"application/json", b"application/json; x=\xff",
    b"multipart/form-data", b"multipart/form-data; boundary=",
    b"multipart/form-data; boundary=\xe9",
    b"text/plain", b"\xe9/\xff", b"[", b"[::1", b"a:b:c", b"127.0.0.1:99999", b"\xe9.example",
    ALLOWED_ORIGIN.encode(), b"http://evil.example", b"null", b"GET", b"POST", b"P\xd8ST",
    b"content-type, \xff", b'"' + b"0" * 64 + b'"', b"W/\"\xe9\"", b"bytes=0-\xff",
]
values = st.one_of(
    st.sampled_from(INTERESTING_VALUES),
    header_bytes,
    st.builds(lambda unit, n: unit * n, st.lists(HEADER_BYTE, min_size=1, max_size=3).map(
        bytes), st.integers(1000, 20_000)),  # very long
)
names = st.one_of(
    st.sampled_from(NAMES),
    st.lists(NAME_BYTE, min_size=1, max_size=30).map(lambda b: bytes(b).lower()),
)
header = st.tuples(names, values)


@st.composite
def header_lists(draw: st.DrawFn, base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The route's own headers, each kept, dropped, replaced or duplicated, plus extras
    (sometimes hundreds, sometimes one repeated many times)."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in base:
        how = draw(st.sampled_from(["keep"] * 3 + ["drop", "replace", "duplicate"]))
        if how == "keep":
            out.append((name, value))
        elif how == "replace":
            out.append((name, draw(values)))
        elif how == "duplicate":
            out += [(name, value), (name, draw(values))]
    extra = draw(st.one_of(
        st.lists(header, max_size=12),
        st.builds(lambda h, n: [h] * n, header, st.integers(2, 500)),
        st.builds(lambda n: [(b"x-h-%d" % i, b"v\xe9") for i in range(n)],
                  st.integers(100, 500)),
    ))
    position = draw(st.integers(0, len(out)))
    return out[:position] + extra + out[position:]


def json_body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def multipart(data: bytes) -> tuple[bytes, bytes]:
    boundary = b"fuzzboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; '
            b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n--"
            + boundary + b"--\r\n")
    return b"multipart/form-data; boundary=" + boundary, body


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    query: str = ""


def routes(t: Target) -> list[Route]:
    """One well-formed request per route (and body form); the fuzz then spoils its headers."""
    mp_type, mp_body = multipart(PNG)
    result = f"/results/{t.pipeline}/{t.hash}.json"

    def body_headers(ctype: bytes, body: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"host", b"testserver"), (b"content-type", ctype),
                (b"content-length", str(len(body)).encode())]

    b64 = json_body({"image_base64": base64.b64encode(PNG).decode()})
    offer = json_body({"sha256": hashlib.sha256(b"any").hexdigest(), "bytes": 3,
                       "content_type": "image/png"})
    get = [(b"host", b"testserver")]
    return [
        Route("POST", "/ocr", body_headers(b"image/png", PNG), PNG),
        Route("POST", "/ocr", body_headers(b"application/octet-stream", b"not an image"),
              b"not an image"),
        Route("POST", "/ocr", body_headers(mp_type, mp_body), mp_body),
        Route("POST", "/ocr", body_headers(b"application/json", b64), b64),
        Route("GET", f"/ocr/{t.hash}", get),
        Route("HEAD", f"/ocr/{t.hash}", get),
        Route("GET", "/ocr/" + "0" * 64, get),
        Route("POST", "/uploads", body_headers(b"application/json", offer), offer),
        Route("PUT", f"/uploads/{UPLOAD_SHA}", body_headers(b"image/png", UPLOAD), UPLOAD,
              t.upload_query),
        Route("GET", result, get),
        Route("HEAD", result, get),
        Route("GET", f"/results/{t.pipeline}/{t.hash}/thumbs/1.jpg", get),
        Route("GET", f"/results/{t.pipeline}/{'0' * 64}.json", get),
        Route("DELETE", result, get),
        Route("GET", "/healthz", get),
        Route("HEAD", "/healthz", get),
        Route("GET", "/", get),
        Route("HEAD", "/", get),
        Route("GET", "/config.json", get),
        Route("OPTIONS", "/ocr", [*get, (b"origin", ALLOWED_ORIGIN.encode()),
                                  (b"access-control-request-method", b"POST")]),
        Route("PATCH", "/ocr", body_headers(b"image/png", PNG), PNG),
    ]


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND",
           "BREW", "get"]


# ------------------------------------------------------------------------ invariants

def check(route: Route, answer: Answer, method: str, fuzzing: bool = True) -> None:
    """The invariants; ``fuzzing``: inside a hypothesis test (statistics events)."""
    note = event if fuzzing else (lambda _: None)
    assert answer.status < 500, (answer.status, answer.body[:500])
    ids = answer.header(b"x-request-id")
    assert len(ids) == 1 and REQUEST_ID.fullmatch(ids[0].decode("latin-1")), ids
    ctype = b"".join(answer.header(b"content-type"))
    if answer.status >= 400:
        assert answer.status in DOCUMENTED_4XX, (answer.status, answer.body[:500])
        assert ctype.startswith(b"application/json"), (answer.status, answer.headers)
        if method != "HEAD":
            body = json.loads(answer.body)
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
            assert body["error"]["code"] and body["error"]["message"], body
            note(f"{method} {route.path.split('/')[1]}: {answer.status} "
                 f"{body['error']['code']}")
        else:
            note(f"HEAD {route.path.split('/')[1]}: {answer.status}")
    else:
        note(f"{method} {route.path.split('/')[1]}: {answer.status}")
    if answer.status == 405:
        assert answer.header(b"allow"), answer.headers
    if method == "HEAD":
        assert answer.body == b"", answer.body[:200]


# ------------------------------------------------------------------------------ tests

@settings(PROFILE)
@given(data=st.data(), cors=st.booleans())
def test_fuzzed_headers_on_every_route(targets: dict[bool, Target], data: st.DataObject,
                                       cors: bool) -> None:
    target = targets[cors]
    route = data.draw(st.sampled_from(routes(target)), label="route")
    headers = data.draw(header_lists(route.headers), label="headers")
    answer = target.call(route.method, route.path, headers, route.body, route.query)
    check(route, answer, route.method)


@settings(PROFILE)
@given(data=st.data(), cors=st.booleans())
def test_fuzzed_methods_and_headers(targets: dict[bool, Target], data: st.DataObject,
                                    cors: bool) -> None:
    """Any method on any route (made-up ones too), with a few fuzzed headers."""
    target = targets[cors]
    route = data.draw(st.sampled_from(routes(target)), label="route")
    method = data.draw(st.one_of(st.sampled_from(METHODS), st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)),
        label="method")
    headers = data.draw(st.lists(header, max_size=6), label="extra") + route.headers
    answer = target.call(method, route.path, headers, route.body, route.query)
    check(route, answer, method)


def test_each_route_answers_its_well_formed_request(targets: dict[bool, Target]) -> None:
    """Control: unspoilt, every route does its job, so a fuzzed 4xx is the headers' doing."""
    for target in targets.values():
        for route in routes(target):
            answer = target.call(route.method, route.path, route.headers, route.body,
                                 route.query)
            check(route, answer, route.method, fuzzing=False)
            expected = {"PATCH": 405, "DELETE": 405}.get(route.method, 200)
            if route.path == "/ocr/" + "0" * 64 or route.path.endswith("0" * 64 + ".json"):
                expected = 404
            if route.body == b"not an image":
                expected = 415
            if route.path == "/uploads":
                expected = 201
            if route.method == "OPTIONS":
                expected = 200 if target.app.state.settings.cors_origins else 405
            assert answer.status == expected, (route, answer.status, answer.body[:300])


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9\xb3", "\u0663".encode(), b"-5", b"5 "])
def test_content_length_that_is_not_ascii_digits(targets: dict[bool, Target],
                                                  value: bytes) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: a Content-Length a server might
    not vet (API Gateway, Mangum) must be ignored, not a 500."""
    target = targets[False]
    for ctype in (b"image/png", b"multipart/form-data; boundary=x", b"application/json"):
        answer = target.call("POST", "/ocr", [(b"content-type", ctype),
                                              (b"content-length", value)], b"x")
        check(Route("POST", "/ocr", []), answer, "POST", fuzzing=False)
