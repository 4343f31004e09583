"""Smoke test of a running edgeocr: a deployed stack (its CdnUrl) or `make serve EDGE=1`.

    scripts/smoke.py --url https://dxxxxxxxxxxxx.cloudfront.net [--origin-url ApiUrl]
    scripts/smoke.py --url http://127.0.0.1:8000            (make serve EDGE=1)

In order, stopping at the first failure with a message naming the check (exit 1):
  1. GET /healthz: the pipeline id and the body limit (max_bytes) the function enforces;
  2. POST /ocr of a receipt image (JPEG): 200, a stored result of that pipeline, with text;
  3. GET its result_url from the CDN twice: a MISS, then a HIT (X-Cache from CloudFront,
     X-Cache-Status from the local nginx), the same object both times;
  4. POST /ocr of the same bytes again: answered from the store (X-Edgeocr-Cache: hit);
  5. a small PDF through POST /uploads + the PUT it grants, polled at GET /ocr/{hash} until
     the worker has read it (202 ... 200);
  6. 413 too_many_bytes (JSON, naming POST /uploads) for a body one byte over max_bytes, and
     (--edge-limit, on by default for https URLs) one byte over what a Lambda invoke carries,
     which the CloudFront Function answers at the edge;
  7. JSON error shapes: 415 (a text/plain body), 404 (an unknown hash), 422 (a malformed hash,
     a malformed POST /uploads);
  8. with --origin-url (the stack's ApiUrl output): the API's own URL refuses a request that
     did not come through CloudFront (403 forbidden).

The image and the PDF are made unique per run (a JPEG comment, the PDF's title), so that
step 3 sees a genuine MISS and step 5 a genuine upload; --no-fresh sends the file as it is
(then a result read before comes back at once, and step 3 may start with a HIT).

Standard library only, plus Pillow to make the PDF from the image (or pass --pdf).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import os
import ssl
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "eval" / "images" / "receipts_sroie" / "X51006329399.jpg"
# What one POST /ocr can carry to Lambda (infra/edge/viewer_request.js MAX_INVOKE_BODY).
EDGE_LIMIT = 4_700_000


class SmokeFailure(Exception):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            raise SmokeFailure(f"{self.url}: answer {self.status} is not JSON: "
                               f"{self.body[:200]!r}") from None
        if not isinstance(value, dict):
            raise SmokeFailure(f"{self.url}: answer {self.status} is not a JSON object")
        return value


def request(method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> Response:
    """One HTTP request. A server that answers before reading a large body (413) may close
    the connection while we still send: the answer is read anyway."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SmokeFailure(f"not an http(s) URL: {url}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
    conn = cls(parts.hostname, parts.port, timeout=timeout, **kwargs)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        # the server may answer early (a 413) and stop reading: its answer may be waiting
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, url)
    except (OSError, http.client.HTTPException) as exc:
        raise SmokeFailure(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def expect_status(resp: Response, *statuses: int) -> None:
    if resp.status not in statuses:
        raise SmokeFailure(f"{resp.url}: expected {' or '.join(map(str, statuses))}, got "
                           f"{resp.status}: {resp.body[:300]!r}")


def expect_error(resp: Response, status: int, code: str | None = None) -> dict:
    """Our error shape: JSON {"error": {"code", "message"}} with that status (and code)."""
    expect_status(resp, status)
    ctype = resp.headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        raise SmokeFailure(f"{resp.url}: the {status} is {ctype or 'untyped'}, not "
                           f"application/json: {resp.body[:200]!r}")
    err = resp.json().get("error")
    if not (isinstance(err, dict) and isinstance(err.get("code"), str)
            and isinstance(err.get("message"), str)):
        raise SmokeFailure(f"{resp.url}: the {status} is not {{'error': {{code, message}}}}: "
                           f"{resp.body[:300]!r}")
    if code is not None and err["code"] != code:
        raise SmokeFailure(f"{resp.url}: expected error code {code!r}, got {err['code']!r}: "
                           f"{err['message']}")
    return err


def cache_status(resp: Response) -> str:
    """hit / miss / other, from CloudFront's X-Cache or nginx's X-Cache-Status."""
    raw = resp.headers.get("x-cache") or resp.headers.get("x-cache-status") or ""
    word = raw.split()[0].lower() if raw.strip() else ""
    if word in ("hit", "refreshhit", "stale", "updating", "revalidated"):
        return "hit"
    if word in ("miss", "expired", "bypass"):
        return "miss"
    return word or "none"


def salted_jpeg(data: bytes, nonce: str) -> bytes:
    """The same image with a COM segment after SOI: other bytes (another hash), same pixels."""
    if data[:2] != b"\xff\xd8":
        raise SmokeFailure("--image must be a JPEG to be made unique (or pass --no-fresh)")
    comment = f"edgeocr smoke {nonce}".encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def pdf_from_image(data: bytes, title: str) -> bytes:
    try:
        from PIL import Image
    except ImportError:
        raise SmokeFailure("Pillow is needed to make the PDF: pass --pdf FILE") from None
    with Image.open(io.BytesIO(data)) as img:
        out = io.BytesIO()
        fixed = time.gmtime(1704067200)  # 2024-01-01: with the title, one PDF per nonce
        img.convert("RGB").save(out, format="PDF", resolution=200.0, title=title,
                                creationDate=fixed, modDate=fixed)
    return out.getvalue()


@dataclass
class Smoke:
    url: str
    image: bytes
    pdf: bytes | None
    origin_url: str | None = None
    edge_limit: int | None = None
    timeout: float = 300
    fresh: bool = True
    out: object = sys.stdout
    state: dict = field(default_factory=dict)
    passed: int = 0

    def at(self, path: str) -> str:
        return urljoin(self.url.rstrip("/") + "/", path.lstrip("/"))

    def ok(self, name: str, detail: str) -> None:
        self.passed += 1
        print(f"ok   {name}: {detail}", file=self.out, flush=True)

    def run(self) -> int:
        checks = [self.healthz, self.post_image, self.result_from_cdn, self.repeat_is_a_hit,
                  self.document_upload, self.too_large, self.error_shapes]
        if self.origin_url:
            checks.append(self.origin_refuses_direct_calls)
        for check in checks:
            name = check.__name__
            try:
                check(name)
            except SmokeFailure as exc:
                print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
                print(f"smoke: failed at {name} after {self.passed} passed checks "
                      f"against {self.url}", file=sys.stderr, flush=True)
                return 1
        print(f"smoke: all {self.passed} checks passed against {self.url}", file=self.out)
        return 0

    # -- the checks ----------------------------------------------------------------------------

    def healthz(self, name: str) -> None:
        resp = request("GET", self.at("/healthz"))
        expect_status(resp, 200)
        health = resp.json()
        if health.get("status") != "ok" or not health.get("pipeline"):
            raise SmokeFailure(f"unexpected /healthz: {health}")
        if not isinstance(health.get("max_bytes"), int):
            raise SmokeFailure(f"/healthz gives no max_bytes: {health}")
        self.state.update(pipeline=health["pipeline"], max_bytes=health["max_bytes"],
                          hmac=bool(health.get("hmac")))
        self.ok(name, f"pipeline {health['pipeline']}, max_bytes {health['max_bytes']}, "
                      f"hmac {bool(health.get('hmac'))}")

    def post_image(self, name: str) -> None:
        t0 = time.monotonic()
        resp = request("POST", self.at("/ocr"), self.image, {"Content-Type": "image/jpeg"},
                       timeout=120)
        expect_status(resp, 200)
        result = resp.json()
        for key in ("hash", "pipeline", "text", "result_url", "stored", "pages"):
            if key not in result:
                raise SmokeFailure(f"the result has no {key!r}: {sorted(result)}")
        if result["pipeline"] != self.state["pipeline"]:
            raise SmokeFailure(f"result pipeline {result['pipeline']} is not the running "
                               f"{self.state['pipeline']}")
        if not result["stored"] or not result["result_url"]:
            raise SmokeFailure("the result was not stored (stored: false): S3 is failing; see "
                               "the function's logs (store_failure)")
        if not result["text"].strip():
            raise SmokeFailure("the receipt gave no text")
        if not self.state["hmac"] and result["hash"] != hashlib.sha256(self.image).hexdigest():
            raise SmokeFailure("hash is not the SHA-256 of the bytes sent")
        cache = resp.headers.get("x-edgeocr-cache")
        if self.fresh and cache != "miss":
            raise SmokeFailure(f"a fresh image should be a miss, got X-Edgeocr-Cache {cache!r}")
        self.state["result"] = result
        lines = sum(len(p.get("lines", ())) for p in result["pages"])
        self.ok(name, f"{cache}, {lines} lines in {time.monotonic() - t0:.1f} s, "
                      f"{result['result_url']}")

    def result_from_cdn(self, name: str) -> None:
        result = self.state["result"]
        seen = []
        for _ in range(2):
            resp = request("GET", result["result_url"])
            expect_status(resp, 200)
            stored = resp.json()
            if stored.get("hash") != result["hash"] or stored.get("text") != result["text"]:
                raise SmokeFailure("the CDN's object is not the result POST /ocr answered")
            if "cached" in stored or "result_url" in stored:
                raise SmokeFailure("the stored object carries API-only fields (cached, "
                                   "result_url)")
            seen.append(cache_status(resp))
        if seen[1] != "hit":
            raise SmokeFailure(f"the second GET of the result was not a cache hit: {seen} "
                               "(is /results/* cached at the edge?)")
        if self.fresh and seen[0] != "miss":
            raise SmokeFailure(f"the first GET of a fresh result was not a miss: {seen}")
        self.ok(name, " then ".join(s.upper() for s in seen))

    def repeat_is_a_hit(self, name: str) -> None:
        resp = request("POST", self.at("/ocr"), self.image, {"Content-Type": "image/jpeg"})
        expect_status(resp, 200)
        again = resp.json()
        if resp.headers.get("x-edgeocr-cache") != "hit" or again.get("cached") is not True:
            raise SmokeFailure(f"the same bytes again were not answered from the store: "
                               f"X-Edgeocr-Cache {resp.headers.get('x-edgeocr-cache')!r}")
        if again.get("text") != self.state["result"]["text"]:
            raise SmokeFailure("the stored answer differs from the first")
        self.ok(name, "answered from the store")

    def document_upload(self, name: str) -> None:
        pdf = self.pdf
        assert pdf is not None
        sha = hashlib.sha256(pdf).hexdigest()
        t0 = time.monotonic()
        resp = request("POST", self.at("/uploads"), json.dumps(
            {"sha256": sha, "bytes": len(pdf), "content_type": "application/pdf"}).encode(),
            {"Content-Type": "application/json"})
        expect_status(resp, 200, 201, 202)
        grant = resp.json()
        if resp.status == 201:
            upload = grant.get("upload") or {}
            if upload.get("method") != "PUT" or not upload.get("url"):
                raise SmokeFailure(f"POST /uploads granted no PUT: {grant}")
            put = request("PUT", upload["url"], pdf, dict(upload.get("headers") or {}),
                          timeout=120)
            if put.status not in (200, 201, 204):
                raise SmokeFailure(f"the upload PUT was refused: {put.status} "
                                   f"{put.body[:300]!r}")
        status_url = grant.get("status_url")
        if not status_url:
            raise SmokeFailure(f"POST /uploads gave no status_url: {grant}")
        polls = 0
        while True:
            resp = request("GET", self.at(status_url))
            polls += 1
            if resp.status == 200:
                break
            if resp.status != 202:
                raise SmokeFailure(f"polling {status_url}: {resp.status} {resp.body[:300]!r}")
            if time.monotonic() - t0 > self.timeout:
                raise SmokeFailure(f"the document was not read within {self.timeout:.0f} s: "
                                   f"{resp.body[:200]!r} (is the worker running? the DLQ?)")
            try:
                wait = float(resp.headers.get("retry-after", "1"))
            except ValueError:
                wait = 1.0
            time.sleep(min(max(wait, 0.2), 5.0))
        doc = resp.json()
        info = doc.get("document") or {}
        if info.get("format") != "pdf" or (info.get("pages") or 0) < 1:
            raise SmokeFailure(f"the result does not describe a PDF: {info}")
        if not (doc.get("text") or "").strip():
            raise SmokeFailure("the PDF gave no text")
        self.ok(name, f"{len(pdf)} bytes, {info['pages']} page(s), read in "
                      f"{time.monotonic() - t0:.1f} s ({polls} polls)")

    def too_large(self, name: str) -> None:
        sizes = [("max_bytes", self.state["max_bytes"] + 1)]
        if self.edge_limit and self.edge_limit + 1 > sizes[0][1]:
            sizes.append(("edge limit", self.edge_limit + 1))
        for _label, size in sizes:
            body = b"\xff\xd8\xff" + bytes(size - 3)
            resp = request("POST", self.at("/ocr"), body, {"Content-Type": "image/jpeg"},
                           timeout=120)
            err = expect_error(resp, 413, "too_many_bytes")
            if "/uploads" not in err["message"]:
                raise SmokeFailure(f"the 413 does not point at POST /uploads: {err['message']}")
        self.ok(name, ", ".join(f"{label}+1 = {size} bytes" for label, size in sizes))

    def error_shapes(self, name: str) -> None:
        expect_error(request("POST", self.at("/ocr"), b"hello", {"Content-Type": "text/plain"}),
                     415)
        expect_error(request("GET", self.at("/ocr/" + "0" * 64)), 404, "not_found")
        expect_error(request("GET", self.at("/ocr/not-a-hash")), 422)
        expect_error(request("POST", self.at("/uploads"), b'{"sha256": "xyz"}',
                             {"Content-Type": "application/json"}), 422)
        self.ok(name, "415, 404, 422, 422 as JSON errors")

    def origin_refuses_direct_calls(self, name: str) -> None:
        assert self.origin_url
        url = urljoin(self.origin_url.rstrip("/") + "/", "healthz")
        expect_error(request("GET", url), 403, "forbidden")
        self.ok(name, f"{url} answers 403 forbidden without CloudFront's header")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Exit status: 0 when every check passes, 1 at the "
                                       "first failure, 2 for bad arguments.")
    p.add_argument("--url", required=True,
                   help="the public base URL: the stack's CdnUrl, or http://127.0.0.1:8000")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a JPEG with text")
    p.add_argument("--pdf", type=Path, help="a small PDF to upload (default: the image as one)")
    p.add_argument("--origin-url", help="the stack's ApiUrl: check it refuses direct calls")
    edge = p.add_mutually_exclusive_group()
    edge.add_argument("--edge-limit", dest="edge_limit", action="store_true", default=None,
                      help=f"also post {EDGE_LIMIT + 1} bytes (the CloudFront Function's 413; "
                           "the default for https URLs)")
    edge.add_argument("--no-edge-limit", dest="edge_limit", action="store_false")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the uploaded PDF to be read")
    p.add_argument("--no-fresh", dest="fresh", action="store_false",
                   help="send the files as they are (not made unique for this run)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.image.is_file():
        print(f"smoke: no image at {args.image} (pass --image)", file=sys.stderr)
        return 2
    nonce = uuid.uuid4().hex if args.fresh else "fixed"
    image = args.image.read_bytes()
    try:
        if args.fresh:
            image = salted_jpeg(image, nonce)
        pdf = args.pdf.read_bytes() if args.pdf else pdf_from_image(image, f"smoke {nonce}")
    except SmokeFailure as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 2
    edge = args.edge_limit
    if edge is None:
        edge = urlsplit(args.url).scheme == "https"
    return Smoke(url=args.url, image=image, pdf=pdf, origin_url=args.origin_url,
                 edge_limit=EDGE_LIMIT if edge else None, timeout=args.timeout,
                 fresh=args.fresh).run()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
