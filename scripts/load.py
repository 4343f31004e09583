"""A bounded loopback load test of ``edgeocr serve``: cache hits, misses and documents.

    .venv/bin/python scripts/load.py [--concurrency 8] [--duration 30] [--max-requests N]
                                     [--hit-ratio 0.5] [--pdf-ratio 0.15] [--pdf-pages 2]
                                     [--doc-pages 8 | --no-upload]
                                     [--url http://127.0.0.1:PORT] [--json-out FILE]

Without ``--url`` it starts ``edgeocr serve`` itself on a free loopback port with a fresh
temporary results directory (so every run starts cold and clean) and ``OCR_SYNC_PAGES`` set
to ``--pdf-pages`` (so the posted PDFs are read within the request), and stops it afterwards.

What it sends, measured apart because they are different services:
- ``hit``: bytes already answered (images and PDFs): hashing plus one store read;
- ``miss``: a *fresh variant* of a real small image (a few random pixels changed, so the
  hash is new and nothing can be cached): decode + OCR (one inference at a time per process,
  by design) + a write;
- ``pdf``: a fresh small PDF (``--pdf-pages`` pages, built with img2pdf from varied eval
  images) posted to ``POST /ocr`` and read synchronously, page by page;
- ``upload``: one large document (``--doc-pages`` pages of the eval set's synthetic pages,
  as a PDF) the way a browser sends it: ``POST /uploads``, the ``PUT`` it was offered, then
  ``GET /ocr/{hash}`` polled until the worker has read it, timed from first request to the
  result. It runs beside the rest of the load, from the first second.
A mixed average would describe none of them, so each gets its own p50/p95/p99.

Bounded three ways: ``--duration`` seconds of load, ``--max-requests`` requests at most, and
``--upload-timeout`` for the one document, after which it stops by itself. Traffic only ever
goes to loopback addresses: the server's, and the upload URL it hands out (checked before
the PUT).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import ipaddress
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image

from serve import free_port, terminate  # scripts/serve.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
EVAL_IMAGES = (ROOT / ".." / "shared" / "eval" / "images").resolve()
DEFAULT_POOL = ("en_words_ic15/*.png", "en_doclines_uw3/*.png", "peer_rapidocr_lines/*.jpg")
DOC_PAGES = "zh_pages_synth/*.jpg"  # full pages, for the one large document
KINDS = ("hit", "miss", "pdf", "upload")
POLL_S = 0.5


@dataclass
class Sample:
    kind: str  # one of KINDS: what we asked for
    status: int | None  # None: an exception (timeout, connection reset)
    seconds: float
    cache: str | None = None  # what the server said (X-Edgeocr-Cache)
    error: str | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class Body:
    data: bytes
    content_type: str


@dataclass
class Pool:
    """Real images to vary for misses and PDFs, and bodies already answered, to repeat as
    hits."""

    originals: list[bytes]
    seen: list[Body] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, body: Body) -> None:
        with self.lock:
            self.seen.append(body)

    def hit(self, rng: random.Random) -> Body | None:
        with self.lock:
            return rng.choice(self.seen) if self.seen else None

    def fresh_variant(self, rng: random.Random) -> bytes:
        return vary(rng.choice(self.originals), rng)

    def fresh_pdf(self, rng: random.Random, pages: int) -> bytes:
        """A small scanned-looking PDF: ``pages`` varied images, one per page (img2pdf)."""
        import img2pdf

        return img2pdf.convert([self.fresh_variant(rng) for _ in range(pages)])


def vary(data: bytes, rng: random.Random, fmt: str = "PNG") -> bytes:
    """A real image with a few pixels changed: new bytes, new hash, same kind of work."""
    with Image.open(io.BytesIO(data)) as im:
        img = im.convert("RGB")
    for _ in range(3):
        xy = (rng.randrange(img.width), rng.randrange(img.height))
        img.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def load_pool(patterns: list[str], limit: int) -> list[bytes]:
    files = sorted(p for pattern in patterns for p in EVAL_IMAGES.glob(pattern))
    if not files:
        raise SystemExit(f"no images match {patterns} under {EVAL_IMAGES}")
    random.Random(0).shuffle(files)
    return [p.read_bytes() for p in files[:limit]]


def large_document(pages: int, rng: random.Random) -> bytes:
    """``pages`` full synthetic pages as one PDF; the pages are varied so that a server
    that has read this document before (``--url``) still has to read it again."""
    import img2pdf

    files = sorted(EVAL_IMAGES.glob(DOC_PAGES))
    if not files:
        raise SystemExit(f"no pages match {DOC_PAGES} under {EVAL_IMAGES}")
    return img2pdf.convert([vary(p.read_bytes(), rng, "JPEG")
                            for p in itertools.islice(itertools.cycle(files), pages)])


def require_loopback(url: str) -> None:
    """Load goes to this machine only: refuse anything but a loopback address."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise SystemExit(f"cannot resolve {host!r}: {exc}") from exc
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"refusing to load {host} ({', '.join(sorted(addresses))}): "
                         "loopback addresses only")


@contextmanager
def local_server(sync_pages: int, startup_timeout: float = 120.0) -> Iterator[str]:
    """``edgeocr serve`` on a free loopback port with a throwaway results dir."""
    workdir = Path(tempfile.mkdtemp(prefix="edgeocr-load-"))
    port = free_port()
    env = {**os.environ, "OCR_RESULTS_DIR": str(workdir / "results"),
           "OCR_SYNC_PAGES": str(sync_pages),
           "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    for name in ("RESULTS_BUCKET", "AWS_ENDPOINT_URL_S3", "CDN_BASE_URL"):
        env.pop(name, None)  # a local directory store and its own URLs, never a real bucket
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeocr.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, startup_timeout)
        yield url
    finally:
        terminate(proc, grace_s=15)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"edgeocr serve exited with {proc.returncode} before it was up")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"edgeocr serve not healthy after {timeout:.0f} s")


def post(client: httpx.Client, url: str, kind: str, body: Body) -> Sample:
    started = time.perf_counter()
    try:
        resp = client.post(f"{url}/ocr", content=body.data,
                           headers={"Content-Type": body.content_type})
    except httpx.HTTPError as exc:
        return Sample(kind, None, time.perf_counter() - started, error=type(exc).__name__)
    elapsed = time.perf_counter() - started
    error = None
    if resp.status_code != 200:
        error = ("202: a posted PDF went to the worker (the server's OCR_SYNC_PAGES is below "
                 "--pdf-pages)" if resp.status_code == 202 else resp.text[:200])
    return Sample(kind, resp.status_code, elapsed, resp.headers.get("x-edgeocr-cache"), error)


@dataclass
class Budget:
    """The request count bound, shared by the workers."""

    left: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def worker(url: str, pool: Pool, args: argparse.Namespace, deadline: float, budget: Budget,
           seed: int, out: list[Sample]) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=args.timeout) as client:
        while time.monotonic() < deadline and budget.take():
            roll = rng.random()
            if roll < args.pdf_ratio:
                kind, body = "pdf", Body(pool.fresh_pdf(rng, args.pdf_pages), "application/pdf")
            else:
                hit = pool.hit(rng) if rng.random() < args.hit_ratio else None
                kind, body = ("hit", hit) if hit is not None else (
                    "miss", Body(pool.fresh_variant(rng), "image/png"))
            sample = post(client, url, kind, body)
            out.append(sample)
            if kind != "hit" and sample.status == 200:
                pool.remember(body)


def upload_document(url: str, doc: bytes, timeout_s: float, request_timeout: float,
                    out: list[Sample]) -> None:
    """One large document as the web page sends it: offer, PUT, poll to the result."""
    sha = hashlib.sha256(doc).hexdigest()
    started = time.perf_counter()
    detail: dict = {"bytes": len(doc)}

    def done(status: int | None, error: str | None = None) -> None:
        out.append(Sample("upload", status, time.perf_counter() - started, error=error,
                          detail=detail))

    try:
        with httpx.Client(timeout=request_timeout) as client:
            offer = client.post(f"{url}/uploads", json={
                "sha256": sha, "bytes": len(doc), "content_type": "application/pdf"})
            detail["offer_ms"] = round((time.perf_counter() - started) * 1000, 1)
            if offer.status_code != 201:  # 200/202: read (or being read) already
                if offer.status_code not in (200, 202):
                    return done(offer.status_code, offer.text[:200])
                status_url = offer.json().get("status_url", f"/ocr/{sha}")
            else:
                upload = offer.json()["upload"]
                require_loopback(upload["url"])  # an S3 endpoint elsewhere: not ours to load
                put_at = time.perf_counter()
                put = client.request(upload["method"], upload["url"], content=doc,
                                     headers=upload["headers"])
                detail["put_ms"] = round((time.perf_counter() - put_at) * 1000, 1)
                if put.status_code not in (200, 201, 204):
                    return done(put.status_code, put.text[:200])
                status_url = offer.json()["status_url"]
            deadline = time.monotonic() + timeout_s
            while True:
                got = client.get(urljoin(f"{url}/", status_url.lstrip("/")))
                detail["polls"] = detail.get("polls", 0) + 1
                if got.status_code != 202:
                    break
                detail["pages_done"] = got.json().get("pages_done")
                if time.monotonic() > deadline:
                    return done(None, f"not read within {timeout_s:.0f} s: {got.text[:120]}")
                time.sleep(POLL_S)
            if got.status_code != 200:
                return done(got.status_code, got.text[:200])
            detail["pages"] = got.json()["document"]["pages"]
            return done(200)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return done(None, f"{type(exc).__name__}: {exc}"[:200])


def warm_up(url: str, pool: Pool, count: int, timeout: float) -> float:
    """Load the models and seed hits before the clock starts; returns the first miss's time."""
    first = 0.0
    with httpx.Client(timeout=timeout) as client:
        for i, data in enumerate(pool.originals[:count]):
            body = Body(data, "application/octet-stream")
            sample = post(client, url, "miss", body)
            if sample.status != 200:
                raise SystemExit(f"warm-up request failed: {sample.status} {sample.error}")
            pool.remember(body)
            first = sample.seconds if i == 0 else first
    return first


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a real request)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarise(samples: list[Sample], seconds: float) -> dict:
    report: dict = {"duration_s": round(seconds, 2), "requests": len(samples),
                    "throughput_rps": round(len(samples) / seconds, 2)}
    for kind in KINDS:
        mine = [s for s in samples if s.kind == kind]
        ok = [s.seconds * 1000 for s in mine if s.status == 200]
        expected_cache = {"hit": "hit", "miss": "miss", "pdf": "miss"}.get(kind)
        report[kind] = {
            "sent": len(mine),
            "ok": len(ok),
            "errors": len(mine) - len(ok),
            "throughput_rps": round(len(ok) / seconds, 2),
            **{f"p{q}_ms": None if (v := percentile(ok, q)) is None else round(v, 1)
               for q in (50, 95, 99)},
            "max_ms": round(max(ok), 1) if ok else None,
            # the server's own verdict disagreeing with ours: a store problem
            "served_as_other": sum(1 for s in mine if s.status == 200 and expected_cache
                                   and s.cache not in (expected_cache, None)),
        }
        if kind == "upload" and mine:
            report[kind]["detail"] = mine[0].detail
    errors = [s for s in samples if s.status != 200]
    report["errors"] = len(errors)
    report["error_kinds"] = sorted({f"{s.kind} {s.status}: {s.error}" for s in errors})[:10]
    return report


def print_report(report: dict, args: argparse.Namespace, first_miss_s: float) -> None:
    print(f"edgeocr load: {args.concurrency} workers, {report['duration_s']} s, hit ratio "
          f"{args.hit_ratio}, pdf ratio {args.pdf_ratio} ({args.pdf_pages} pages); cold first "
          f"request {first_miss_s * 1000:.0f} ms")
    print(f"  total    {report['requests']:6d} requests  {report['throughput_rps']:8.2f} req/s  "
          f"errors {report['errors']}")
    for kind in KINDS:
        r = report[kind]
        if not r["sent"]:
            continue
        figures = "  ".join(f"p{q} {r[f'p{q}_ms']} ms" for q in (50, 95, 99))
        print(f"  {kind:6s}   {r['ok']:6d} ok  {r['errors']:4d} err  "
              f"{r['throughput_rps']:8.2f} req/s  {figures}  max {r['max_ms']} ms  "
              f"served-as-other {r['served_as_other']}")
        if kind == "upload":
            print(f"           {json.dumps(r['detail'])}")
    for kind in report["error_kinds"]:
        print(f"  error: {kind}")


def run(url: str, args: argparse.Namespace) -> dict:
    pool = Pool(load_pool(args.images, args.pool_size))
    document = large_document(args.doc_pages, random.Random()) if args.doc_pages else None
    first_miss = warm_up(url, pool, args.warmup, args.timeout)
    samples: list[Sample] = []
    started = time.monotonic()
    deadline = started + args.duration
    budget = Budget(args.max_requests)
    threads = [threading.Thread(target=worker, args=(url, pool, args, deadline, budget,
                                                     args.seed + i, samples))
               for i in range(args.concurrency)]
    if document is not None:
        threads.append(threading.Thread(target=upload_document, args=(
            url, document, args.upload_timeout, args.timeout, samples)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = summarise(samples, time.monotonic() - started)
    report.update(url=url, concurrency=args.concurrency, hit_ratio=args.hit_ratio,
                  pdf_ratio=args.pdf_ratio, pdf_pages=args.pdf_pages,
                  doc_pages=args.doc_pages, first_request_ms=round(first_miss * 1000, 1))
    print_report(report, args, first_miss)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (loopback only)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=100_000,
                        help="stop after this many requests even before --duration")
    parser.add_argument("--hit-ratio", type=float, default=0.5,
                        help="share of the image requests that repeat answered bytes")
    parser.add_argument("--pdf-ratio", type=float, default=0.15,
                        help="share of all requests that post a fresh small PDF")
    parser.add_argument("--pdf-pages", type=int, default=2, help="pages per posted PDF")
    parser.add_argument("--doc-pages", type=int, default=8,
                        help="pages of the one large document uploaded (0: none)")
    parser.add_argument("--no-upload", dest="doc_pages", action="store_const", const=0)
    parser.add_argument("--upload-timeout", type=float, default=300.0,
                        help="seconds the uploaded document may take to be read")
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_POOL),
                        help=f"globs under {EVAL_IMAGES}")
    parser.add_argument("--pool-size", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=8, help="originals posted first")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not (0 <= args.hit_ratio <= 1 and 0 <= args.pdf_ratio <= 1) or args.concurrency < 1 \
            or args.duration <= 0 or args.max_requests < 1 or args.pdf_pages < 1 \
            or args.doc_pages < 0:
        parser.error("need ratios in [0, 1], --concurrency >= 1, --duration > 0, "
                     "--max-requests >= 1, --pdf-pages >= 1, --doc-pages >= 0")
    if args.url:
        require_loopback(args.url)
        report = run(args.url.rstrip("/"), args)
    else:
        with local_server(sync_pages=args.pdf_pages) as url:
            report = run(url, args)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
