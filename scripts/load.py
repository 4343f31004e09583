"""A bounded loopback load test of ``edgeocr serve``: mixed cache hits and misses.

    .venv/bin/python scripts/load.py [--concurrency 8] [--duration 30] [--hit-ratio 0.5]
                                     [--url http://127.0.0.1:PORT] [--json-out FILE]

Without ``--url`` it starts ``edgeocr serve`` itself on a free loopback port with a fresh
temporary results directory (so every run starts cold and clean) and stops it afterwards.

Why hits and misses are measured apart: they are different services. A hit is hashing plus
one store read; a miss is decode + OCR (one inference at a time per process, by design) plus
a write. A mixed average would describe neither. Misses use a *fresh variant* of a real small
image each time (a few random pixels changed, so the hash is new and nothing can be cached);
hits repeat bytes that were already answered.

Traffic only ever goes to a loopback address, for a fixed duration: it stops by itself.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
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
from urllib.parse import urlsplit

import httpx
from PIL import Image

from serve import free_port, terminate  # scripts/serve.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
EVAL_IMAGES = (ROOT / ".." / "shared" / "eval" / "images").resolve()
DEFAULT_POOL = ("en_words_ic15/*.png", "en_doclines_uw3/*.png", "peer_rapidocr_lines/*.jpg")


@dataclass
class Sample:
    kind: str  # "hit" or "miss": what we asked for
    status: int | None  # None: an exception (timeout, connection reset)
    seconds: float
    cache: str | None = None  # what the server said (X-Edgeocr-Cache)
    error: str | None = None


@dataclass
class Pool:
    """Real images to vary for misses, and the bytes already answered, to repeat as hits."""

    originals: list[bytes]
    seen: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, data: bytes) -> None:
        with self.lock:
            self.seen.append(data)

    def hit(self, rng: random.Random) -> bytes | None:
        with self.lock:
            return rng.choice(self.seen) if self.seen else None

    def fresh_variant(self, rng: random.Random) -> bytes:
        """A real image with a few pixels changed: new bytes, new hash, same kind of work."""
        with Image.open(io.BytesIO(rng.choice(self.originals))) as im:
            img = im.convert("RGB")
        for _ in range(3):
            xy = (rng.randrange(img.width), rng.randrange(img.height))
            img.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()


def load_pool(patterns: list[str], limit: int) -> list[bytes]:
    files = sorted(p for pattern in patterns for p in EVAL_IMAGES.glob(pattern))
    if not files:
        raise SystemExit(f"no images match {patterns} under {EVAL_IMAGES}")
    random.Random(0).shuffle(files)
    return [p.read_bytes() for p in files[:limit]]


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
def local_server(startup_timeout: float = 120.0) -> Iterator[str]:
    """``edgeocr serve`` on a free loopback port with a throwaway results dir."""
    workdir = Path(tempfile.mkdtemp(prefix="edgeocr-load-"))
    port = free_port()
    env = {**os.environ, "OCR_RESULTS_DIR": str(workdir / "results"),
           "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    env.pop("RESULTS_BUCKET", None)  # a local directory store, never a real bucket
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


def post(client: httpx.Client, url: str, kind: str, data: bytes) -> Sample:
    started = time.perf_counter()
    try:
        resp = client.post(f"{url}/ocr", content=data, headers={"Content-Type": "image/png"})
    except httpx.HTTPError as exc:
        return Sample(kind, None, time.perf_counter() - started, error=type(exc).__name__)
    elapsed = time.perf_counter() - started
    error = None if resp.status_code == 200 else resp.text[:200]
    return Sample(kind, resp.status_code, elapsed, resp.headers.get("x-edgeocr-cache"), error)


def worker(url: str, pool: Pool, hit_ratio: float, deadline: float, seed: int,
           timeout: float, out: list[Sample]) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=timeout) as client:
        while time.monotonic() < deadline:
            hit = pool.hit(rng) if rng.random() < hit_ratio else None
            kind, data = ("hit", hit) if hit is not None else ("miss", pool.fresh_variant(rng))
            sample = post(client, url, kind, data)
            out.append(sample)
            if kind == "miss" and sample.status == 200:
                pool.remember(data)


def warm_up(url: str, pool: Pool, count: int, timeout: float) -> float:
    """Load the models and seed hits before the clock starts; returns the first miss's time."""
    first = 0.0
    with httpx.Client(timeout=timeout) as client:
        for i, data in enumerate(pool.originals[:count]):
            sample = post(client, url, "miss", data)
            if sample.status != 200:
                raise SystemExit(f"warm-up request failed: {sample.status} {sample.error}")
            pool.remember(data)
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
    for kind in ("hit", "miss"):
        ok = [s.seconds * 1000 for s in samples if s.kind == kind and s.status == 200]
        report[kind] = {
            "ok": len(ok),
            "throughput_rps": round(len(ok) / seconds, 2),
            **{f"p{q}_ms": None if (v := percentile(ok, q)) is None else round(v, 1)
               for q in (50, 95, 99)},
            "max_ms": round(max(ok), 1) if ok else None,
            # the server's own verdict disagreeing with ours: a store problem
            "served_as_other": sum(1 for s in samples if s.kind == kind and s.status == 200
                                   and s.cache not in (kind, None)),
        }
    errors = [s for s in samples if s.status != 200]
    report["errors"] = len(errors)
    report["error_kinds"] = sorted({f"{s.status}: {s.error}" for s in errors})[:10]
    return report


def print_report(report: dict, args: argparse.Namespace, first_miss_s: float) -> None:
    print(f"edgeocr load: {args.concurrency} workers, {report['duration_s']} s, hit ratio "
          f"{args.hit_ratio}; cold first request {first_miss_s * 1000:.0f} ms")
    print(f"  total   {report['requests']:6d} requests  {report['throughput_rps']:8.2f} req/s  "
          f"errors {report['errors']}")
    for kind in ("hit", "miss"):
        r = report[kind]
        figures = "  ".join(f"p{q} {r[f'p{q}_ms']} ms" for q in (50, 95, 99))
        print(f"  {kind:5s}   {r['ok']:6d} ok        {r['throughput_rps']:8.2f} req/s  "
              f"{figures}  max {r['max_ms']} ms  served-as-other {r['served_as_other']}")
    for kind in report["error_kinds"]:
        print(f"  error: {kind}")


def run(url: str, args: argparse.Namespace) -> dict:
    pool = Pool(load_pool(args.images, args.pool_size))
    first_miss = warm_up(url, pool, args.warmup, args.timeout)
    samples: list[Sample] = []
    started = time.monotonic()
    deadline = started + args.duration
    threads = [threading.Thread(target=worker, args=(url, pool, args.hit_ratio, deadline,
                                                     args.seed + i, args.timeout, samples))
               for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = summarise(samples, time.monotonic() - started)
    report.update(url=url, concurrency=args.concurrency, hit_ratio=args.hit_ratio,
                  first_request_ms=round(first_miss * 1000, 1))
    print_report(report, args, first_miss)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (loopback only)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--hit-ratio", type=float, default=0.5)
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_POOL),
                        help=f"globs under {EVAL_IMAGES}")
    parser.add_argument("--pool-size", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=8, help="originals posted first")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not 0 <= args.hit_ratio <= 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error("need 0 <= --hit-ratio <= 1, --concurrency >= 1, --duration > 0")
    if args.url:
        require_loopback(args.url)
        report = run(args.url.rstrip("/"), args)
    else:
        with local_server() as url:
            report = run(url, args)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
