"""scripts/smoke.py: against `make serve EDGE=1` (nginx in front of the app, the local
CloudFront), and against stub servers that get one thing wrong (it must stop there, exit 1,
and say which check failed and why).

The deployed-stack run (`--url <CdnUrl> --origin-url <ApiUrl>`) cannot happen here; the local
edge runs every check but the CloudFront Function's 413 (nginx has no such function: the app
answers that size itself) and the origin-verify refusal (off locally).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import smoke  # scripts/smoke.py (scripts/ is on sys.path: conftest)
from serve import free_port
from servers import clean_env, launcher

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scripts" / "smoke.py"
RECEIPT = ROOT / ".." / "shared" / "eval" / "images" / "receipts_sroie" / "X51006329399.jpg"
LOCAL_MAX_BYTES = 1_000_000  # OCR_MAX_BYTES for the local run: a quick 413 check


def run_smoke(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SMOKE), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_smoke_passes_against_the_local_edge(tmp_path: Path) -> None:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("nginx is not installed (`make nginx`)")
    if not RECEIPT.is_file():
        pytest.skip(f"eval image {RECEIPT} not found")
    env = clean_env(OCR_RESULTS_DIR=str(tmp_path / "results"),
                    OCR_MAX_BYTES=str(LOCAL_MAX_BYTES))
    with launcher(["--port", str(free_port()), "--edge"], tmp_path, env=env) as edge:
        proc = run_smoke("--url", edge.url)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for check in ("healthz", "post_image", "result_from_cdn", "repeat_is_a_hit",
                  "document_upload", "too_large", "error_shapes"):
        assert f"ok   {check}:" in out, (check, out)
    assert "result_from_cdn: MISS then HIT" in out
    assert f"max_bytes+1 = {LOCAL_MAX_BYTES + 1} bytes" in out
    assert "smoke: all 7 checks passed" in out


# ------------------------------------------------------------------- failures, on stubs

Handler = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], bytes]]


@contextmanager
def stub_server(answer: Handler) -> Iterator[str]:
    """A loopback HTTP server answering every request with ``answer(request, body)``."""

    class H(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, data = answer(self, body)
            self.send_response(status)
            for k, v in {"content-length": str(len(data)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _json(status: int, doc: dict, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json", **headers}, json.dumps(doc).encode()


HEALTH = {"status": "ok", "pipeline": "0123456789abcdef", "max_bytes": 1000, "hmac": False}


def test_smoke_stops_at_the_first_failure_and_says_why(tmp_path: Path) -> None:
    """A POST /ocr that answers 500: exit 1 at post_image, nothing after it runs."""
    seen = []

    def answer(req, body):
        seen.append((req.command, req.path))
        if req.path == "/healthz":
            return _json(200, HEALTH)
        return 500, {"content-type": "text/html"}, b"<h1>Internal Server Error</h1>"

    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    pdf = tmp_path / "x.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    with stub_server(answer) as url:
        proc = run_smoke("--url", url, "--image", str(image), "--pdf", str(pdf), timeout=60)
    assert proc.returncode == 1
    assert "ok   healthz:" in proc.stdout
    assert "FAIL post_image:" in proc.stderr and "got 500" in proc.stderr, proc.stderr
    assert "smoke: failed at post_image after 1 passed checks" in proc.stderr
    assert "Traceback" not in proc.stderr, "a clear message, not a crash"
    assert seen == [("GET", "/healthz"), ("POST", "/ocr")], "stopped at the first failure"


def test_smoke_refuses_a_non_json_error(tmp_path: Path) -> None:
    """API Gateway's own 404 ({"message": "Not Found"}) is not our error shape."""
    got = smoke.Response(404, {"content-type": "application/json"},
                         b'{"message":"Not Found"}', "https://x/ocr/00")
    with pytest.raises(smoke.SmokeFailure, match=r"not \{'error'"):
        smoke.expect_error(got, 404)
    html = smoke.Response(413, {"content-type": "text/html"}, b"<html>413</html>", "u")
    with pytest.raises(smoke.SmokeFailure, match="not application/json"):
        smoke.expect_error(html, 413)
    untyped = smoke.Response(415, {"content-type": "text/plain"}, json.dumps(
        {"error": {"code": "unsupported_media_type", "message": "m"}}).encode(), "u")
    with pytest.raises(smoke.SmokeFailure, match="not application/json"):
        smoke.expect_error(untyped, 415)
    ours = smoke.Response(413, {"content-type": "application/json"}, json.dumps(
        {"error": {"code": "too_many_bytes", "message": "use POST /uploads"}}).encode(), "u")
    assert smoke.expect_error(ours, 413, "too_many_bytes")["code"] == "too_many_bytes"
    with pytest.raises(smoke.SmokeFailure, match="expected error code"):
        smoke.expect_error(ours, 413, "too_many_pixels")


@pytest.mark.parametrize(("headers", "status"), [
    ({"x-cache": "Miss from cloudfront"}, "miss"),
    ({"x-cache": "Hit from cloudfront"}, "hit"),
    ({"x-cache": "RefreshHit from cloudfront"}, "hit"),
    ({"x-cache-status": "MISS"}, "miss"),
    ({"x-cache-status": "HIT"}, "hit"),
    ({"x-cache-status": "STALE"}, "hit"),
    ({}, "none"),
])
def test_cache_status_from_cloudfront_and_nginx(headers, status) -> None:
    assert smoke.cache_status(smoke.Response(200, headers, b"", "u")) == status


def test_salted_jpeg_is_another_file_with_the_same_pixels() -> None:
    from PIL import Image

    if not RECEIPT.is_file():
        pytest.skip(f"eval image {RECEIPT} not found")
    data = RECEIPT.read_bytes()
    salted = smoke.salted_jpeg(data, "nonce")
    assert hashlib.sha256(salted).digest() != hashlib.sha256(data).digest()
    assert smoke.salted_jpeg(data, "other") != salted
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(salted)) as b:
        assert a.size == b.size and a.tobytes() == b.tobytes()
    with pytest.raises(smoke.SmokeFailure):
        smoke.salted_jpeg(b"\x89PNG\r\n\x1a\n", "nonce")


def test_a_result_that_is_not_a_cache_hit_the_second_time_fails(tmp_path: Path) -> None:
    """An edge that never caches results (every GET a MISS) fails result_from_cdn."""
    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    salted = {}

    def answer(req, body):
        if req.path == "/healthz":
            return _json(200, HEALTH)
        if req.command == "POST" and req.path == "/ocr":
            salted["hash"] = hashlib.sha256(body).hexdigest()
            return _json(200, {"hash": salted["hash"], "pipeline": HEALTH["pipeline"],
                               "text": "TOTAL 1.00", "pages": [{"lines": [{}]}],
                               "stored": True, "cached": False,
                               "result_url": f"{url}/results/p/{salted['hash']}.json"},
                         **{"x-edgeocr-cache": "miss"})
        if req.path.startswith("/results/"):
            return _json(200, {"hash": salted["hash"], "text": "TOTAL 1.00"},
                         **{"x-cache": "Miss from cloudfront"})
        return _json(404, {"error": {"code": "not_found", "message": "no"}})

    with stub_server(answer) as url:
        proc = run_smoke("--url", url, "--image", str(image), "--pdf", str(image), timeout=60)
    assert proc.returncode == 1
    assert "FAIL result_from_cdn:" in proc.stderr, proc.stderr
    assert "not a cache hit" in proc.stderr
