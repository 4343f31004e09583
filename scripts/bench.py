"""Speed and memory of edgeocr against RapidOCR 3.10 on the same weights and thread count.

The machine is small and shared, so absolute times drift with whatever else runs: every
measurement interleaves ours and the peer (alternating who goes first) and the verdicts are
ratios ours / RapidOCR of paired runs, which cancel most of that drift.

1. Warm time per image (SROIE receipts, Tesseract's pages): wall, process CPU (all threads)
   and the share of wall spent inside ``onnxruntime.InferenceSession.run``.
2. Cold start: a fresh process to its first result, ``edgeocr ocr --json`` against a
   ``python -c`` that builds RapidOCR and OCRs the same receipt.
3. Peak RSS of a fresh process on the largest eval page.
4. Documents (ours only): 12 receipts as a 12-page scanned PDF (img2pdf: the JPEGs embedded as
   they are) read by the worker from a ``LocalStore``, exactly as production reads an upload,
   against the same 12 JPEGs read one by one through ``service.read``, interleaved in one
   process on one engine: pages per minute, CPU seconds per page, the overhead, and where the
   time goes (open, render, thumbnail, OCR, store calls), with a diagnostic arm at
   ``pdf_dpi=96``, where even a fixed-dpi render is these pages' own pixels.
5. Peak RSS (VmHWM) and time of a fresh process reading a 100-page scanned PDF by the worker.

Usage: ``make bench BENCH_ARGS="--limit 5 --json out.json"``, ``make bench BENCH_ARGS="--only
documents"``; progress goes to stderr, the report to stdout. The documents section does fixed
work (``--doc-repeats``), outside ``--max-minutes``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL_DIR = ROOT.parent / "shared" / "eval"
WARM_SETS = ("receipts_sroie", "en_pages_tesseract")
RECEIPTS = "receipts_sroie"
TESSERACT = "en_pages_tesseract"
OURS, PEER = "ours", "rapidocr"
ENGINES = (OURS, PEER)
SECTIONS = ("warm", "cold", "rss", "documents")
TARGET_WARM = 0.5  # ours / RapidOCR, receipts, wall
TARGET_WARM_CPU = 0.30  # ours / RapidOCR, CPU per warm receipt (issue 11)
TARGET_TESS_CPU = 0.75  # ours / RapidOCR, CPU per Tesseract page (issue 11)
TARGET_OUTSIDE_ORT = 0.10  # share of our CPU time spent outside InferenceSession.run
TARGET_COLD = 0.40  # ours / RapidOCR, fresh process to first result (issue 11)
TARGET_RSS_MB = 500.0  # ours, decimal MB (stricter than MiB), largest page (issue 11)
CHILD_TIMEOUT_S = 300.0
SPIN_KEY = "session.intra_op.allow_spinning"

# The peer's fresh process: the same thread settings as the in-process peer, and JSON out,
# so that it does as much as `edgeocr ocr --json` (decode, OCR, serialise).
PEER_CHILD = """
import json, sys
from rapidocr import RapidOCR
threads = int(sys.argv[2])
engine = RapidOCR(params={
    "Global.log_level": "error",
    "EngineConfig.onnxruntime.intra_op_num_threads": threads,
    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
})
res = engine(sys.argv[1])
print(json.dumps({
    "file": sys.argv[1],
    "lines": [
        {"text": t, "confidence": float(s), "box": b}
        for t, s, b in zip(res.txts or (), res.scores or (), [] if res.boxes is None
                           else res.boxes.tolist())
    ],
}, ensure_ascii=False))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "FAIL"  # NaN compares false: FAIL


# --- ONNX Runtime probe -------------------------------------------------------------------


def model_role(path: str) -> str:
    """det / cls / rec from the model file name, so time can be charged to pipeline stages."""
    name = Path(path).name.lower()
    return next((r for r in ("det", "cls", "rec") if f"_{r}" in name), name)


@dataclass
class OrtProbe:
    """Times ``InferenceSession.run`` at class level: it sees every session whoever built it,
    including RapidOCR's, which are created lazily and called through RapidOCR's wrapper."""

    owner: str = "-"
    seconds: defaultdict[tuple[str, str, str], float] = field(
        default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    sessions: dict[str, dict[int, Any]] = field(default_factory=lambda: defaultdict(dict))

    def install(self) -> None:
        import onnxruntime as ort

        original = ort.InferenceSession.run
        probe = self

        @functools.wraps(original)
        def run(session: Any, *args: Any, **kwargs: Any) -> Any:
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return original(session, *args, **kwargs)
            finally:
                probe.record(session, time.perf_counter() - t0, time.process_time() - c0)

        ort.InferenceSession.run = run

    def record(self, session: Any, wall: float, cpu: float) -> None:
        role = model_role(getattr(session, "_model_path", "") or "?")
        self.seconds[(self.owner, role, "wall")] += wall
        self.seconds[(self.owner, role, "cpu")] += cpu
        self.calls[self.owner] += 1
        self.sessions[self.owner][id(session)] = session

    def snapshot(self, owner: str) -> dict[tuple[str, str], float]:
        return {(role, kind): s for (o, role, kind), s in self.seconds.items() if o == owner}


def session_settings(session: Any) -> dict[str, Any]:
    """What a session really runs with: RapidOCR silently ignores thread counts above the CPU
    count, and the two engines differ in ORT's spin-wait default, which shows in CPU time."""
    opts = session.get_session_options()
    try:
        spin = opts.get_session_config_entry(SPIN_KEY)
    except Exception:  # ORT raises when the key was never set
        spin = "default"
    return {
        "model": Path(getattr(session, "_model_path", "?")).name,
        "intra_op_threads": opts.intra_op_num_threads,
        "inter_op_threads": opts.inter_op_num_threads,
        "allow_spinning": spin,
    }


# --- eval data ----------------------------------------------------------------------------


def load_manifest(eval_dir: Path) -> list[dict[str, Any]]:
    path = eval_dir / "manifest.jsonl"
    if not path.is_file():
        sys.exit(f"bench: no eval manifest at {path} (use --eval-dir)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def warm_schedule(
    items: list[dict[str, Any]], limit: int | None
) -> list[tuple[str, dict[str, Any]]]:
    """Images of all warm sets, interleaved in proportion, so a run cut short by the time
    budget still has a spread of every set rather than none of the last one."""
    slots = []
    for name in WARM_SETS:
        chosen = sorted((i for i in items if i["category"] == name), key=lambda i: i["id"])
        chosen = chosen[:limit] if limit is not None else chosen
        slots += [((k + 0.5) / len(chosen), name, item) for k, item in enumerate(chosen)]
    slots.sort(key=lambda s: (s[0], WARM_SETS.index(s[1])))
    return [(name, item) for _, name, item in slots]


def largest_page(items: list[dict[str, Any]], eval_dir: Path) -> tuple[dict[str, Any], int]:
    """The page item with the most pixels; Pillow's lazy open reads only the header."""
    from PIL import Image

    def pixels(item: dict[str, Any]) -> int:
        with Image.open(eval_dir / item["file"]) as im:
            return im.width * im.height

    sized = [(pixels(i), i) for i in items if i["kind"] == "page"]
    n, item = max(sized, key=lambda s: s[0])
    return item, n


# --- warm, in process ---------------------------------------------------------------------


@dataclass
class Call:
    wall_s: float
    cpu_s: float
    ort_s: dict[str, float]  # wall inside InferenceSession.run, per model role
    ort_cpu_s: dict[str, float]  # process CPU during those calls
    lines: int
    stages_ms: dict[str, float]  # ours only: the engine's own timings

    @property
    def ort_total(self) -> float:
        return sum(self.ort_s.values())

    @property
    def ort_cpu_total(self) -> float:
        return sum(self.ort_cpu_s.values())


Runner = Callable[[bytes], tuple[int, dict[str, float]]]


def build_engines(threads: int) -> dict[str, Runner]:
    """Both engines in this process, after the probe is installed, with the same threads."""
    os.environ["OCR_THREADS"] = str(threads)
    from rapidocr import RapidOCR

    from edgeocr.ocr.engine import Engine
    from edgeocr.settings import Settings

    s = Settings.from_env()
    ours = Engine(s.model_dir, s.engine, s.threads)
    peer = RapidOCR(params={
        "Global.log_level": "error",
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    })

    def run_ours(data: bytes) -> tuple[int, dict[str, float]]:
        out = ours.ocr(data)
        return len(out.lines), dict(out.timings_ms)

    def run_peer(data: bytes) -> tuple[int, dict[str, float]]:
        res = peer(data)  # bytes as well: both sides pay for decoding
        return len(res.txts or ()), {}

    return {OURS: run_ours, PEER: run_peer}


def timed(probe: OrtProbe, owner: str, run: Runner, data: bytes) -> Call:
    gc.collect()  # the other engine's garbage is not this call's cost
    probe.owner = owner
    ort0 = probe.snapshot(owner)
    c0, t0 = time.process_time(), time.perf_counter()
    lines, stages = run(data)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    probe.owner = "-"
    delta = {k: s - ort0.get(k, 0.0) for k, s in probe.snapshot(owner).items()}
    ort = {role: s for (role, kind), s in delta.items() if kind == "wall" and s > 0}
    ort_cpu = {role: s for (role, kind), s in delta.items() if kind == "cpu" and role in ort}
    return Call(wall, cpu, ort, ort_cpu, lines, stages)


@dataclass
class ImageRun:
    set: str
    id: str
    calls: dict[str, list[Call]] = field(default_factory=lambda: {e: [] for e in ENGINES})
    error: str | None = None

    def med(self, engine: str, attr: str) -> float:
        return median([getattr(c, attr) for c in self.calls[engine]])


def bench_image(
    probe: OrtProbe, engines: dict[str, Runner], data: bytes, index: int, repeats: int,
    run: ImageRun,
) -> None:
    for name in ENGINES:  # warm-up: lazy session builds, first-shape allocations
        timed(probe, name, engines[name], data)
    for r in range(repeats):
        order = ENGINES if (index + r) % 2 == 0 else ENGINES[::-1]
        for name in order:
            run.calls[name].append(timed(probe, name, engines[name], data))


def run_warm(
    probe: OrtProbe, engines: dict[str, Runner], schedule: list[tuple[str, dict[str, Any]]],
    eval_dir: Path, repeats: int, threads: int, deadline: float,
) -> list[ImageRun]:
    runs: list[ImageRun] = []
    spent: dict[str, list[float]] = defaultdict(list)  # seconds per image, per set
    skipped: Counter[str] = Counter()
    for index, (set_name, item) in enumerate(schedule):
        # Skip an image the budget cannot hold, judged by its set's median so far: the
        # pages take several times as long as a receipt.
        guess = median(spent[set_name] or [s for v in spent.values() for s in v] or [0.0])
        if time.monotonic() + guess > deadline:
            skipped[set_name] += 1
            continue
        run = ImageRun(set_name, item["id"])
        runs.append(run)
        t0 = time.monotonic()
        try:
            bench_image(probe, engines, (eval_dir / item["file"]).read_bytes(), index,
                        repeats, run)
        except Exception as exc:  # one bad image must not sink the run
            run.error = f"{type(exc).__name__}: {exc}"
            log(f"warm: {item['id']} failed: {run.error}")
            continue
        if not spent:  # fail fast, not after minutes of measuring an unfair setup
            check_sessions(probe, threads)
        spent[set_name].append(time.monotonic() - t0)
        log(f"warm [{index + 1}/{len(schedule)}] {set_name} {item['id']}: "
            f"ours {run.med(OURS, 'wall_s'):.2f}s / {run.med(OURS, 'cpu_s'):.2f}s cpu, "
            f"rapidocr {run.med(PEER, 'wall_s'):.2f}s / {run.med(PEER, 'cpu_s'):.2f}s cpu")
    if skipped:
        log(f"warm: time budget spent, not measured: {dict(skipped)}")
    return runs


def check_sessions(probe: OrtProbe, threads: int) -> dict[str, list[dict[str, Any]]]:
    """Both engines were seen by the probe and really run with the requested threads."""
    found = {e: [session_settings(s) for s in probe.sessions[e].values()] for e in ENGINES}
    for engine, sessions in found.items():
        if not probe.calls[engine]:
            sys.exit(f"bench: the ORT probe saw no InferenceSession.run calls from {engine}")
        wrong = [s for s in sessions
                 if (s["intra_op_threads"], s["inter_op_threads"]) != (threads, 1)]
        if wrong:
            sys.exit(f"bench: {engine} sessions do not use {threads} intra-op threads: {wrong}")
    return found


def summarize_set(runs: list[ImageRun]) -> dict[str, Any]:
    """Medians over images of per-image medians; ratios as the median of paired calls
    (same image, same repeat, back to back), which is what the interleaving is for."""
    ok = [r for r in runs if r.error is None and r.calls[OURS]]
    out: dict[str, Any] = {"images": len(ok), "errors": len(runs) - len(ok)}
    for e in ENGINES:
        calls = [c for r in ok for c in r.calls[e]]
        wall = sum(c.wall_s for c in calls)
        out[e] = {
            "wall_ms": 1000 * median([r.med(e, "wall_s") for r in ok]),
            "cpu_ms": 1000 * median([r.med(e, "cpu_s") for r in ok]),
            "ort_ms": 1000 * median([r.med(e, "ort_total") for r in ok]),
            "ort_share": ratio(sum(c.ort_total for c in calls), wall),
            "ort_cpu_share": ratio(sum(c.ort_cpu_total for c in calls),
                                   sum(c.cpu_s for c in calls)),
            "lines": median([r.med(e, "lines") for r in ok]),
            "breakdown": breakdown(calls),
        }
    pairs = [(a, b) for r in ok for a, b in zip(r.calls[OURS], r.calls[PEER], strict=True)]
    for attr in ("wall_s", "cpu_s"):
        key = attr.split("_")[0]
        out[f"{key}_ratio"] = median([ratio(getattr(a, attr), getattr(b, attr))
                                      for a, b in pairs])
        out[f"{key}_ratio_of_medians"] = ratio(out[OURS][f"{key}_ms"], out[PEER][f"{key}_ms"])
    return out


# The engine's timing laps and the model whose ORT time falls inside each of them; "orient"
# (rare tie-break reads) is folded into "recognize", both of which run the recogniser.
STAGE_MODEL = {"decode": None, "detect": "det", "classify": "cls", "recognize": "rec"}
STAGE_ALIAS = {"orient": "recognize"}


def breakdown(calls: list[Call]) -> dict[str, float]:
    """Shares of total wall: ORT per model, and for ours the time per engine stage and the
    part of it outside ORT, so time spent in Python/OpenCV can be pinned to a stage."""
    wall, cpu = sum(c.wall_s for c in calls), sum(c.cpu_s for c in calls)
    if not wall or not cpu:
        return {}
    shares: dict[str, float] = defaultdict(float)
    for c in calls:
        for role, s in c.ort_s.items():
            shares[f"ort_{role}"] += s / wall
        for role, s in c.ort_cpu_s.items():
            shares[f"cpu_ort_{role}"] += s / cpu
        for stage, ms in c.stages_ms.items():
            shares[f"stage_{STAGE_ALIAS.get(stage, stage)}"] += ms / 1000 / wall
        if c.stages_ms:
            shares["stage_rest"] += (c.wall_s - sum(c.stages_ms.values()) / 1000) / wall
    for key in [k for k in shares if k.startswith("stage_")]:
        model = STAGE_MODEL.get(key[6:])
        shares[f"non_ort_{key[6:]}"] = shares[key] - (shares[f"ort_{model}"] if model else 0)
    shares["outside_ort"] = 1 - sum(v for k, v in shares.items() if k.startswith("ort_"))
    shares["cpu_outside_ort"] = 1 - sum(v for k, v in shares.items()
                                        if k.startswith("cpu_ort_"))
    return dict(shares)


# --- fresh processes ----------------------------------------------------------------------


@dataclass
class Child:
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    exit_code: int
    lines: int


def run_child(argv: list[str], env: dict[str, str]) -> Child:
    """Run a process to exit and read its own rusage with ``os.wait4`` (CPU of all its
    threads, peak RSS). Output goes to a file: a full pipe would stall the child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL)
        killer = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped: tell Popen
        out.seek(0)
        err.seek(0)
        lines = count_lines(out.read().decode("utf-8", "replace"))
        if code != 0 or lines < 0:
            log(f"child {argv[0]} exited {code}: {err.read().decode('utf-8', 'replace')[-800:]}")
    return Child(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code, lines)


def count_lines(stdout: str) -> int:
    """Lines in the first JSON result printed, or -1 if there is no result: ``lines`` at the
    top (the peer child), or in every page (edgeocr's result schema /2)."""
    try:
        result = json.loads(stdout.splitlines()[0])
        if "pages" in result and "lines" not in result:
            return sum(len(page["lines"]) for page in result["pages"])
        return len(result["lines"])
    except (IndexError, KeyError, TypeError, ValueError):
        return -1


def child_commands(image: Path, threads: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    bindir = Path(sys.executable).parent  # the venv's bin, not resolved past its symlink
    argv = {
        OURS: [str(bindir / "edgeocr"), "ocr", "--json", str(image)],
        PEER: [sys.executable, "-c", PEER_CHILD, str(image), str(threads)],
    }
    env = {**os.environ, "OCR_THREADS": str(threads)}
    return argv, env


def run_cold(image: Path, threads: int, repeats: int, deadline: float) -> dict[str, Any]:
    argv, env = child_commands(image, threads)
    runs: dict[str, list[Child]] = {e: [] for e in ENGINES}
    for r in range(repeats):
        if r and time.monotonic() > deadline:
            log(f"cold: time budget reached after {r} pairs")
            break
        for name in ENGINES if r % 2 == 0 else ENGINES[::-1]:
            runs[name].append(run_child(argv[name], env))
        log(f"cold [{r + 1}/{repeats}]: ours {runs[OURS][-1].wall_s:.2f}s, "
            f"rapidocr {runs[PEER][-1].wall_s:.2f}s")
    good = [(a, b) for a, b in zip(runs[OURS], runs[PEER], strict=True)
            if a.exit_code == 0 == b.exit_code and a.lines > 0 and b.lines > 0]
    out: dict[str, Any] = {"image": str(image), "pairs": len(good),
                           "failed_pairs": len(runs[OURS]) - len(good)}
    for i, e in enumerate(ENGINES):
        out[e] = {"wall_ms": 1000 * median([p[i].wall_s for p in good]),
                  "cpu_ms": 1000 * median([p[i].cpu_s for p in good]),
                  "lines": median([p[i].lines for p in good]),
                  "runs": [asdict(c) for c in runs[e]]}
    out["wall_ratio"] = median([ratio(a.wall_s, b.wall_s) for a, b in good])
    out["cpu_ratio"] = median([ratio(a.cpu_s, b.cpu_s) for a, b in good])
    return out


def run_rss(image: Path, pixels: int, threads: int) -> dict[str, Any]:
    argv, env = child_commands(image, threads)
    out: dict[str, Any] = {"image": str(image), "pixels": pixels}
    for name in ENGINES:
        child = run_child(argv[name], env)
        log(f"rss: {name} {child.maxrss_kib / 1024:.0f} MiB in {child.wall_s:.1f}s")
        out[name] = {**asdict(child), "mb": child.maxrss_kib * 1024 / 1e6,
                     "mib": child.maxrss_kib / 1024,
                     "ok": child.exit_code == 0 and child.lines >= 0}
    return out


# --- documents: a scanned PDF through the worker against its images one by one ------------

DOC_PAGES = 12
DOC_RSS_PAGES = 100
TARGET_DOC_OVERHEAD = 0.10  # documents / single images − 1, per page, CPU and wall
TARGET_DOC_RSS_MB = 1000.0  # decimal MB
DOC_CHILD_TIMEOUT_S = 1800.0
IMG2PDF_DPI = 96  # img2pdf places a JPEG that states no resolution (most receipts) at 96 dpi
IMAGES, PDF, PDF_NATIVE = "images", "pdf", "pdf_native"
DOC_ARM_LABELS = {
    IMAGES: "images: service.read(jpeg)",
    PDF: "pdf: worker, pdf_dpi 200",
    PDF_NATIVE: f"pdf: worker, pdf_dpi {IMG2PDF_DPI}",
}

# A fresh process that reads a PDF through the worker as production does, then reports its
# own peak RSS (VmHWM: the exec'd image's own high-water mark, unlike ru_maxrss, which Linux
# carries over from the forking parent).
DOC_CHILD = """
import hashlib, json, sys, tempfile, time
from pathlib import Path
from edgeocr.keys import upload_key
from edgeocr.settings import Settings
from edgeocr.store import NO_STORE, LocalStore
from edgeocr.wiring import build_service
from edgeocr.worker import Worker

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1

data = Path(sys.argv[1]).read_bytes()
sha = hashlib.sha256(data).hexdigest()
with tempfile.TemporaryDirectory() as tmp:
    store = LocalStore(Path(tmp))
    service = build_service(Settings.from_env(), store=store)
    store.put_if_absent(upload_key(sha), data, content_type="application/pdf",
                        cache_control=NO_STORE)
    del data  # the worker reads the upload from the store, as in production
    trace = []  # after each page: (width, height, VmRSS, VmHWM), to see where memory goes
    read_page = service.read_page

    def traced(*args, **kwargs):
        page = read_page(*args, **kwargs)
        trace.append((page.width, page.height, status("VmRSS"), status("VmHWM")))
        return page

    service.read_page = traced
    start_hwm = status("VmHWM")
    c0, t0 = time.process_time(), time.perf_counter()
    outcome = Worker(service).process(sha)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm, rss = status("VmHWM"), status("VmRSS")
    obj = store.get(service.key(service.digest_of(sha)))
    pages = json.loads(obj.body)["pages"] if obj is not None else []
print(json.dumps({"state": outcome.state, "pages": len(pages),
                  "lines": sum(len(p.get("lines") or ()) for p in pages),
                  "page_errors": sum(1 for p in pages if p.get("error")),
                  "worker_wall_s": wall, "worker_cpu_s": cpu,
                  "vmhwm_kib": hwm, "vmrss_kib": rss, "start_hwm_kib": start_hwm,
                  "trace": trace}))
"""


def receipts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((i for i in items if i["category"] == RECEIPTS), key=lambda i: i["id"])


def scanned_pdf(paths: list[Path]) -> bytes:
    """A scanned document: each JPEG one page, embedded as it is (img2pdf, lossless)."""
    import img2pdf

    return img2pdf.convert([str(p) for p in paths])


def proc_status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def run_doc_rss(items: list[dict[str, Any]], eval_dir: Path, pages: int,
                threads: int) -> dict[str, Any]:
    """Peak RSS and time of a fresh process reading a ``pages``-page scanned PDF (the eval
    receipts in id order, repeated) through the worker. The parent also polls the child's
    VmHWM, in case the child dies before it can report."""
    chosen = receipts(items)
    paths = [eval_dir / chosen[k % len(chosen)]["file"] for k in range(pages)]
    data = scanned_pdf(paths)
    env = {**os.environ, "OCR_THREADS": str(threads)}
    out: dict[str, Any] = {"pages_planned": pages, "distinct_receipts": min(pages, len(chosen)),
                           "pdf_bytes": len(data)}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as stdout, \
            tempfile.TemporaryFile() as stderr:
        pdf = Path(tmp) / "document.pdf"
        pdf.write_bytes(data)
        del data
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", DOC_CHILD, str(pdf)], env=env,
                                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        polled, last_log = -1, t0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            polled = max(polled, proc_status_kib(proc.pid, "VmHWM"))
            now = time.perf_counter()
            if now - t0 > DOC_CHILD_TIMEOUT_S:
                proc.kill()
            if now - last_log > 30:
                log(f"doc rss: {now - t0:.0f}s, VmHWM so far {polled / 1024:.0f} MiB")
                last_log = now
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        text = stdout.read().decode("utf-8", "replace")
        try:
            report = json.loads(text.strip().splitlines()[-1])
        except (IndexError, ValueError):
            report = {}
            log(f"doc rss: child exited {code}: "
                f"{stderr.read().decode('utf-8', 'replace')[-800:]}")
    hwm = report.get("vmhwm_kib", polled)
    out |= {
        **report, "exit_code": code, "child_wall_s": wall,
        "child_cpu_s": usage.ru_utime + usage.ru_stime,
        "vmhwm_kib": hwm, "polled_vmhwm_kib": polled, "ru_maxrss_kib": usage.ru_maxrss,
        "mib": hwm / 1024, "mb": hwm * 1024 / 1e6,
        "pages_per_min": ratio(60 * report.get("pages", 0), report.get("worker_wall_s", 0)),
    }
    out["ok"] = (code == 0 and report.get("state") == "done"
                 and report.get("pages") == pages and report.get("page_errors") == 0)
    log(f"doc rss: {pages} pages, VmHWM {out['mib']:.0f} MiB, child {wall:.0f}s "
        f"({out.get('state')})")
    return out


@dataclass
class Lap:
    wall_s: float = 0.0
    cpu_s: float = 0.0


class DocProbe:
    """Wall and process CPU of each part of a read, by wrapping the functions that do them
    (instrumentation in this process only; the product code is unchanged)."""

    def __init__(self) -> None:
        self.laps: defaultdict[str, Lap] = defaultdict(Lap)
        self.stages_ms: defaultdict[str, float] = defaultdict(float)  # the engine's own laps
        self.pixels: list[int] = []

    def reset(self) -> None:
        self.laps.clear()
        self.stages_ms.clear()
        self.pixels.clear()

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            lap = self.laps[name]
            lap.wall_s += time.perf_counter() - t0
            lap.cpu_s += time.process_time() - c0

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        probe = self

        @functools.wraps(original)
        def timed_fn(*args: Any, **kwargs: Any) -> Any:
            return probe.call(name, original, *args, **kwargs)

        setattr(owner, attr, timed_fn)

    def install(self) -> None:
        from edgeocr.ocr import pages, pdf

        self.wrap(pages, "open_document", "open")  # the service and worker import it late
        self.wrap(pages.Document, "page", "page")
        self.wrap(pdf, "_render", "page.render")
        self.wrap(pages, "make_thumbnail", "page.thumbnail")
        self.wrap(pdf, "make_thumbnail", "page.thumbnail")


class TimedEngine:
    """The engine as the service sees it, timed: ``ocr_image`` is all the service calls."""

    def __init__(self, engine: Any, probe: DocProbe) -> None:
        self.engine, self.probe = engine, probe

    def ocr_image(self, img: Any, *args: Any, **kwargs: Any) -> Any:
        self.probe.pixels.append(int(img.shape[0] * img.shape[1]))
        out = self.probe.call("ocr", self.engine.ocr_image, img, *args, **kwargs)
        for stage, ms in out.timings_ms.items():
            self.probe.stages_ms[stage] += ms
        return out


def store_kind(key: str) -> str:
    if key.startswith("uploads/"):
        return "uploads"
    if key.startswith("status/"):
        return "status"
    for kind in ("pages", "thumbs"):
        if f"/{kind}/" in key:
            return kind
    return "result"


def timed_store(root: Path, probe: DocProbe) -> Any:
    """A ``LocalStore`` (production's local store: atomic, fsync'd files) whose calls are
    timed by operation and kind of key."""
    from edgeocr.store import LocalStore

    class TimedStore(LocalStore):
        def get(self, key: str) -> Any:
            return probe.call(f"store.get.{store_kind(key)}", super().get, key)

        def put_if_absent(self, key: str, body: bytes, *args: Any, **kwargs: Any) -> Any:
            return probe.call(f"store.put.{store_kind(key)}", super().put_if_absent, key,
                              body, *args, **kwargs)

        def put(self, key: str, body: bytes, *args: Any, **kwargs: Any) -> Any:
            return probe.call(f"store.put.{store_kind(key)}", super().put, key, body,
                              *args, **kwargs)

    return TimedStore(root)


@dataclass
class DocPass:
    arm: str
    repeat: int  # -1: warm-up, not counted
    pages: int
    wall_s: float
    cpu_s: float
    laps: dict[str, dict[str, float]]
    stages_ms: dict[str, float]
    mpx_per_page: float  # mean over the pass's pages of the pixels OCR'd
    lines: int
    f1: float


def doc_pass(arm: str, repeat: int, engine: Any, settings: Any, jpegs: list[bytes],
             pdf: bytes, truths: list[str], probe: DocProbe) -> DocPass:
    """One read of the 12 pages: as single images through ``service.read`` or as one PDF
    through the worker; a fresh store each time, so that nothing is cached."""
    from edgeocr.keys import sha256_hex, upload_key
    from edgeocr.store import NO_STORE
    from edgeocr.wiring import build_service
    from edgeocr.worker import Worker
    from scoring import bow_count, mean_f1

    with tempfile.TemporaryDirectory(prefix="bench-doc-") as tmp:
        store = timed_store(Path(tmp), probe)
        service = build_service(settings, store=store,
                                engine_factory=lambda: TimedEngine(engine, probe))
        if arm != IMAGES:  # the upload is already in the store when the worker starts
            sha = sha256_hex(pdf)
            store.put_if_absent(upload_key(sha), pdf, content_type="application/pdf",
                                cache_control=NO_STORE)
        gc.collect()
        probe.reset()
        c0, t0 = time.process_time(), time.perf_counter()
        if arm == IMAGES:
            answers = [service.read(data) for data in jpegs]
        else:
            outcome = Worker(service).process(sha)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if arm == IMAGES:
            pages = [a.result["pages"][0] for a in answers]
        else:
            obj = store.get(service.key(service.digest_of(sha)))
            if outcome.state != "done" or obj is None:
                raise RuntimeError(f"the worker ended {outcome}")
            pages = json.loads(obj.body)["pages"]
    laps = {k: {"wall_s": v.wall_s, "cpu_s": v.cpu_s} for k, v in probe.laps.items()}
    f1 = mean_f1(bow_count(p.get("text", ""), t) for p, t in zip(pages, truths, strict=True))
    return DocPass(arm, repeat, len(pages), wall, cpu, laps, dict(probe.stages_ms),
                   statistics.fmean(probe.pixels) / 1e6 if probe.pixels else float("nan"),
                   sum(len(p.get("lines") or ()) for p in pages), f1)


def run_documents(args: argparse.Namespace, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The same receipts read as a scanned PDF through the worker and one by one through the
    service, interleaved (the order rotates every repeat), in this process, one engine."""
    import dataclasses

    import pypdfium2 as pdfium
    from PIL import Image

    from edgeocr.ocr.engine import Engine
    from edgeocr.ocr.pdf import pixel_size
    from edgeocr.settings import Settings

    chosen = receipts(items)[:args.doc_pages]
    paths = [args.eval_dir / i["file"] for i in chosen]
    jpegs = [p.read_bytes() for p in paths]
    pdf = scanned_pdf(paths)
    truths = [i["text"] for i in chosen]
    settings = Settings.from_env()
    arm_settings = {IMAGES: settings, PDF: settings,
                    PDF_NATIVE: dataclasses.replace(settings, pdf_dpi=IMG2PDF_DPI)}
    arms = [IMAGES, PDF] + ([] if args.no_doc_native else [PDF_NATIVE])

    # How the PDF's pages compare with their JPEGs: img2pdf sizes a page from the JPEG's
    # stated resolution (96 dpi when it states none), and the reader renders at pdf_dpi.
    doc = pdfium.PdfDocument(pdf)
    try:
        points = [doc.get_page_size(k) for k in range(len(doc))]
    finally:
        doc.close()
    native = []
    for path in paths:
        with Image.open(path) as im:
            native.append(im.size)
    geometry = {
        "jpeg_mpx": [w * h / 1e6 for w, h in native],
        "pdf_200dpi_mpx": [w * h / 1e6 for w, h in (pixel_size(p, settings.pdf_dpi)
                                                   for p in points)],
        "native_matches": sum(pixel_size(p, IMG2PDF_DPI) == n
                              for p, n in zip(points, native, strict=True)),
    }

    engine = Engine(settings.model_dir, settings.engine, settings.threads)
    probe = DocProbe()
    probe.install()
    log(f"documents: {len(paths)} receipts, {len(pdf) / 1e6:.1f} MB PDF; arms {arms}; "
        f"{args.doc_repeats} repeats + warm-up")
    passes: list[DocPass] = []
    for r in range(-1, args.doc_repeats):
        k = (r + 1) % len(arms)
        for arm in arms[k:] + arms[:k]:
            p = doc_pass(arm, r, engine, arm_settings[arm], jpegs, pdf, truths, probe)
            passes.append(p)
            log(f"documents [{'warm-up' if r < 0 else r + 1}] {arm}: {p.wall_s:.1f}s wall, "
                f"{p.cpu_s:.1f}s CPU, {p.mpx_per_page:.2f} Mpx/page, F1 {p.f1:.3f}")
    return {"receipts": [i["id"] for i in chosen], "pdf_bytes": len(pdf),
            "jpeg_bytes": sum(map(len, jpegs)), "geometry": geometry, "arms": arms,
            **summarize_documents(passes, arms),
            "passes": [asdict(p) for p in passes]}


def doc_parts(p: DocPass) -> dict[str, tuple[float, float]]:
    """Per page (wall ms, CPU ms) of each part; ``rest`` is the pass less every timed part
    (service and worker code, JSON, hashing)."""
    def get(name: str) -> tuple[float, float]:
        lap = p.laps.get(name, {"wall_s": 0.0, "cpu_s": 0.0})
        return lap["wall_s"], lap["cpu_s"]

    parts: dict[str, tuple[float, float]] = {}
    for name in ("open", "page", "page.render", "page.thumbnail", "ocr"):
        parts[name] = get(name)
    parts["page.other"] = tuple(a - b - c for a, b, c in zip(
        parts["page"], parts["page.render"], parts["page.thumbnail"], strict=True))
    store = sorted(k for k in p.laps if k.startswith("store."))
    for name in store:
        parts[name] = get(name)
    parts["store"] = tuple(sum(get(k)[i] for k in store) for i in (0, 1))
    top = ("open", "page", "ocr", "store")
    parts["rest"] = (p.wall_s - sum(parts[k][0] for k in top),
                     p.cpu_s - sum(parts[k][1] for k in top))
    parts["total"] = (p.wall_s, p.cpu_s)
    for stage, ms in p.stages_ms.items():
        parts[f"ocr.{stage}"] = (ms / 1000, float("nan"))  # the engine times wall only
    return {k: (1000 * w / p.pages, 1000 * c / p.pages) for k, (w, c) in parts.items()}


def summarize_documents(passes: list[DocPass], arms: list[str]) -> dict[str, Any]:
    timed_passes = [p for p in passes if p.repeat >= 0]
    by_arm = {a: [p for p in timed_passes if p.arm == a] for a in arms}
    out: dict[str, Any] = {"summary": {}, "breakdown": {}, "overhead": {}}
    for arm, ps in by_arm.items():
        out["summary"][arm] = {
            "passes": len(ps),
            "pages_per_min": median([60 * p.pages / p.wall_s for p in ps]),
            "cpu_s_per_page": median([p.cpu_s / p.pages for p in ps]),
            "wall_s_per_page": median([p.wall_s / p.pages for p in ps]),
            "mpx_per_page": median([p.mpx_per_page for p in ps]),
            "lines": median([p.lines for p in ps]),
            "f1": median([p.f1 for p in ps]),
        }
        parts = [doc_parts(p) for p in ps]
        names = sorted({k for d in parts for k in d})
        out["breakdown"][arm] = {
            k: {"wall_ms": median([d[k][0] for d in parts if k in d]),
                "cpu_ms": median([d[k][1] for d in parts if k in d])} for k in names}
    base = {p.repeat: p for p in by_arm[IMAGES]}
    for arm in arms[1:]:
        pairs = [(p, base[p.repeat]) for p in by_arm[arm] if p.repeat in base]
        out["overhead"][arm] = {
            "cpu": median([ratio(a.cpu_s / a.pages, b.cpu_s / b.pages) for a, b in pairs]) - 1,
            "wall": median([ratio(a.wall_s / a.pages, b.wall_s / b.pages)
                            for a, b in pairs]) - 1,
            "pairs": len(pairs),
        }
    return out


# --- report -------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def report_header(meta: dict[str, Any]) -> Iterator[str]:
    yield (f"edgeocr {meta['versions']['edgeocr']} ({meta['git']}) vs RapidOCR "
           f"{meta['versions']['rapidocr']}; onnxruntime {meta['versions']['onnxruntime']}; "
           f"{meta['threads']} intra-op / 1 inter-op threads both; {meta['cpus']} CPUs")
    spin = {e: sorted({s["allow_spinning"] for s in meta["sessions"].get(e, [])})
            for e in ENGINES}
    calls = meta["ort_calls"]
    if calls:
        yield (f"ORT probe: ours {calls.get(OURS, 0)} run calls on "
               f"{len(meta['sessions'].get(OURS, []))} sessions, rapidocr "
               f"{calls.get(PEER, 0)} on {len(meta['sessions'].get(PEER, []))}; "
               f"spin-wait: ours {'/'.join(spin[OURS])}, rapidocr {'/'.join(spin[PEER])}")
    if {"warm", "cold", "rss"} & set(meta["sections"]):
        yield ("input: the same bytes to both engines in process (both decode), the file path "
               "to both fresh processes")
    yield f"load average at start {meta['load_start']}, at end {meta['load_end']}"


def report_warm(warm: dict[str, Any], repeats: int) -> Iterator[str]:
    yield ""
    yield (f"[1] Warm time per image: median over images of the median of {repeats} "
           "interleaved repeats; ratio = median of paired ours/rapidocr calls")
    yield f"  {'set':<20}{'n':>3}  {'engine':<9}{'wall ms':>9}{'CPU ms':>9}{'ORT ms':>9}" \
          f"{'in ORT wall/CPU':>17}{'lines':>7}"
    for name, s in warm.items():
        for k, e in enumerate(ENGINES):
            d = s[e]
            both = f"{pct(d['ort_share'])} / {pct(d['ort_cpu_share'])}"
            lead = f"{name:<20}{s['images']:>3}" if k == 0 else " " * 23
            yield (f"  {lead}  {e:<9}{d['wall_ms']:>9.0f}{d['cpu_ms']:>9.0f}"
                   f"{d['ort_ms']:>9.0f}{both:>17}{d['lines']:>7.0f}")
        yield (f"  {'':<23}  {'ratio':<9}{s['wall_ratio']:>9.2f}{s['cpu_ratio']:>9.2f}"
               f"   (ratio of medians {s['wall_ratio_of_medians']:.2f} / "
               f"{s['cpu_ratio_of_medians']:.2f})")
        if s["errors"]:
            yield f"  {'':<23}  {s['errors']} image(s) failed, see stderr"
        if s["images"] + s["errors"] < s["planned"]:
            yield f"  {'':<23}  only {s['images']} of {s['planned']} images: time budget spent"
        if name == RECEIPTS:
            yield (f"  {'':<23}  target wall ≤ {TARGET_WARM}: "
                   f"{verdict(s['wall_ratio'], TARGET_WARM)}, "
                   f"CPU ≤ {TARGET_WARM_CPU}: {verdict(s['cpu_ratio'], TARGET_WARM_CPU)}")
        if name == TESSERACT:
            yield (f"  {'':<23}  target CPU ≤ {TARGET_TESS_CPU}: "
                   f"{verdict(s['cpu_ratio'], TARGET_TESS_CPU)}")
        outside = s[OURS]["breakdown"].get("cpu_outside_ort", float("nan"))
        yield (f"  {'':<23}  ours, CPU outside ORT {pct(outside)}: target ≤ "
               f"{TARGET_OUTSIDE_ORT:.0%} {verdict(outside, TARGET_OUTSIDE_ORT)}")
    for name, s in warm.items():
        for e in ENGINES:
            yield f"  {name} {e}: " + describe_breakdown(s[e]["breakdown"])


def describe_breakdown(b: dict[str, float]) -> str:
    def roles(prefix: str) -> str:
        return ", ".join(f"{k[len(prefix):]} {pct(v)}" for k, v in sorted(b.items())
                         if k.startswith(prefix))

    text = (f"wall in ORT {roles('ort_')}, outside {pct(b.get('outside_ort', float('nan')))};"
            f" CPU in ORT {roles('cpu_ort_')}, outside "
            f"{pct(b.get('cpu_outside_ort', float('nan')))}")
    stages = [k[6:] for k in b if k.startswith("stage_")]
    if stages:
        text += "\n      wall by stage (of which outside ORT): " + ", ".join(
            f"{s} {pct(b[f'stage_{s}'])} ({pct(b[f'non_ort_{s}'])})" for s in stages)
    return text


def report_cold(cold: dict[str, Any]) -> Iterator[str]:
    yield ""
    yield (f"[2] Cold start, fresh process to first result ({cold['pairs']} interleaved pairs, "
           f"{Path(cold['image']).name})")
    for e in ENGINES:
        d = cold[e]
        yield (f"  {e:<9} wall {d['wall_ms']:>6.0f} ms   child CPU {d['cpu_ms']:>6.0f} ms   "
               f"lines {d['lines']:.0f}")
    yield (f"  ratio     wall {cold['wall_ratio']:>6.2f}      child CPU {cold['cpu_ratio']:>6.2f}"
           f"      target wall ≤ {TARGET_COLD}: {verdict(cold['wall_ratio'], TARGET_COLD)}")
    if cold["failed_pairs"]:
        yield f"  {cold['failed_pairs']} pair(s) failed (no result), see stderr"


def report_rss(rss: dict[str, Any]) -> Iterator[str]:
    yield ""
    yield (f"[3] Peak RSS, fresh process, largest page {Path(rss['image']).name} "
           f"({rss['pixels'] / 1e6:.1f} Mpx)")
    for e in ENGINES:
        d = rss[e]
        note = "" if d["ok"] else "  (process failed, see stderr)"
        yield f"  {e:<9} {d['mib']:>6.0f} MiB ({d['mb']:.0f} MB){note}"
    yield f"  (floor inherited from the spawning process: {rss['spawn_floor_kib'] / 1024:.0f} MiB)"
    ours_ok = rss[OURS]["ok"]
    mb = rss[OURS]["mb"] if ours_ok else float("nan")
    yield (f"  ratio     {ratio(rss[OURS]['mb'], rss[PEER]['mb']):>6.2f}"
           f"          target ours ≤ {TARGET_RSS_MB:.0f} MB: {verdict(mb, TARGET_RSS_MB)}")


DOC_ROWS = (
    ("open", "open: decode JPEG / load PDF"),
    ("page", "Document.page()"),
    ("page.render", "  PDFium render"),
    ("page.thumbnail", "  thumbnail (resize + JPEG)"),
    ("page.other", "  other"),
    ("ocr", "engine.ocr_image"),
    ("ocr.detect", "  detect (engine lap, wall)"),
    ("ocr.classify", "  classify"),
    ("ocr.orient", "  orient"),
    ("ocr.recognize", "  recognize"),
    ("store", "store, all calls"),
)


def cell(part: dict[str, float] | None) -> str:
    if part is None:
        return "-"
    w, c = part["wall_ms"], part["cpu_ms"]
    return f"{w:.0f}" if c != c else f"{w:.0f} / {c:.0f}"  # c != c: NaN, wall only


def report_documents(d: dict[str, Any]) -> Iterator[str]:
    n, arms, s = len(d["receipts"]), d["arms"], d["summary"]
    g = d["geometry"]
    yield ""
    yield (f"[4] Documents: {n} receipts as a {n}-page scanned PDF (img2pdf, JPEGs embedded as "
           f"they are, {d['pdf_bytes'] / 1e6:.1f} MB) read by Worker.process from a LocalStore,")
    yield (f"    against the same {n} JPEGs through service.read; a fresh store every pass, one "
           f"engine, one process; {s[IMAGES]['passes']} timed passes per arm after a warm-up, "
           "interleaved (the order rotates);")
    yield ("    per-page figures are medians over passes; overhead = median of paired passes "
           "(same repeat) − 1")
    yield (f"  {'arm':<28}{'pages/min':>10}{'CPU s/page':>12}{'wall s/page':>13}"
           f"{'Mpx/page':>10}{'lines':>7}{'F1':>7}")
    for arm in arms:
        a = s[arm]
        yield (f"  {DOC_ARM_LABELS[arm]:<28}{a['pages_per_min']:>10.1f}"
               f"{a['cpu_s_per_page']:>12.2f}{a['wall_s_per_page']:>13.2f}"
               f"{a['mpx_per_page']:>10.2f}{a['lines']:>7.0f}{a['f1']:>7.3f}")
    for arm in arms[1:]:
        o = d["overhead"][arm]
        tail = ""
        if arm == PDF:
            tail = (f"   target ≤ +{TARGET_DOC_OVERHEAD:.0%}: CPU "
                    f"{verdict(o['cpu'], TARGET_DOC_OVERHEAD)}, wall "
                    f"{verdict(o['wall'], TARGET_DOC_OVERHEAD)}")
        yield (f"  overhead {DOC_ARM_LABELS[arm]}: CPU {o['cpu']:+.1%}, wall {o['wall']:+.1%}"
               f" per page{tail}")
    jpeg, rendered = sum(g["jpeg_mpx"]), sum(g["pdf_200dpi_mpx"])
    yield (f"  pixels: the JPEGs {jpeg:.1f} Mpx in all; their pages at 200 dpi would be "
           f"{rendered:.1f} Mpx ({ratio(rendered, jpeg):.1f}×; largest page "
           f"{max(g['pdf_200dpi_mpx']):.1f} Mpx), at {IMG2PDF_DPI} dpi "
           f"{g['native_matches']}/{n} pages are exactly their JPEG's pixels (what each arm "
           "read: Mpx/page)")
    b = d["breakdown"]
    cols = [*arms, "delta"]
    names = {IMAGES: "images", PDF: "pdf", PDF_NATIVE: f"pdf dpi {IMG2PDF_DPI}",
             "delta": "pdf − images"}
    yield "  where the time goes, ms per page, wall / CPU:"
    yield "  " + f"{'part':<30}" + "".join(f"{names[c]:>15}" for c in cols)
    store_rows = sorted({k for arm in arms for k in b[arm] if k.startswith("store.")})
    rows = [*DOC_ROWS, *((k, "  " + k[6:].replace(".", " ")) for k in store_rows),
            ("rest", "rest: service/worker, JSON"), ("total", "total")]
    for key, label in rows:
        cells = [cell(b[arm].get(key)) for arm in arms]
        if key in b[IMAGES] or key in b[PDF]:
            zero = {"wall_ms": 0.0, "cpu_ms": 0.0}
            x, y = b[PDF].get(key, zero), b[IMAGES].get(key, zero)
            cells.append(cell({"wall_ms": x["wall_ms"] - y["wall_ms"],
                               "cpu_ms": x["cpu_ms"] - y["cpu_ms"]}))
        else:
            cells.append("-")
        yield f"  {label:<30}" + "".join(f"{c:>15}" for c in cells)


def report_doc_rss(r: dict[str, Any]) -> Iterator[str]:
    yield ""
    yield (f"[5] Peak RSS, fresh process, a {r['pages_planned']}-page scanned PDF "
           f"({r['distinct_receipts']} receipts repeated, {r['pdf_bytes'] / 1e6:.0f} MB) "
           "through the worker (LocalStore)")
    note = "" if r["ok"] else f"  (did not finish cleanly: {r.get('state')}, exit " \
        f"{r['exit_code']}, {r.get('pages')} pages, {r.get('page_errors')} page errors)"
    yield (f"  VmHWM {r['mib']:.0f} MiB ({r['mb']:.0f} MB)   target ≤ {TARGET_DOC_RSS_MB:.0f} MB: "
           f"{verdict(r['mb'] if r['ok'] else float('nan'), TARGET_DOC_RSS_MB)}{note}")
    pages = r.get("pages") or 0
    trace = r.get("trace") or []
    if trace:
        marks = sorted({0, len(trace) // 4, len(trace) // 2, 3 * len(trace) // 4,
                        len(trace) - 1})
        yield ("  VmRSS after page " + ", ".join(f"{k + 1}: {trace[k][2] / 1024:.0f}"
                                                  for k in marks) + " MiB")
        base = r.get("start_hwm_kib", 0)
        rises = [(trace[k][3] - (trace[k - 1][3] if k else base), k)
                 for k in range(len(trace))]
        top = sorted(rises, reverse=True)[:3]
        yield ("  largest rises of the peak: " + ", ".join(
            f"page {k + 1} ({trace[k][0]}x{trace[k][1]} px) +{rise / 1024:.0f} MiB"
            for rise, k in top if rise > 0) + " (page 1: the models load then)")
    yield (f"  worker {r.get('worker_wall_s', float('nan')):.0f} s for {pages} pages "
           f"({r['pages_per_min']:.1f} pages/min, "
           f"{ratio(r.get('worker_cpu_s', float('nan')), pages):.2f} CPU s/page); "
           f"process {r['child_wall_s']:.0f} s from spawn to exit, {r['child_cpu_s']:.0f} CPU s")


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    out = {}
    if RECEIPTS in results.get("warm", {}):
        s = results["warm"][RECEIPTS]
        out["warm_receipts_wall"] = s["wall_ratio"] <= TARGET_WARM
        out["warm_receipts_cpu"] = s["cpu_ratio"] <= TARGET_WARM_CPU
    if TESSERACT in results.get("warm", {}):
        out["warm_tesseract_cpu"] = results["warm"][TESSERACT]["cpu_ratio"] <= TARGET_TESS_CPU
    for name, s in results.get("warm", {}).items():
        outside = s[OURS]["breakdown"].get("cpu_outside_ort", 1.0)
        out[f"outside_ort_{name}"] = outside <= TARGET_OUTSIDE_ORT
    if "cold" in results:
        out["cold_wall"] = results["cold"]["wall_ratio"] <= TARGET_COLD
    if "rss" in results:
        rss = results["rss"][OURS]
        out["rss_ours"] = rss["ok"] and rss["mb"] <= TARGET_RSS_MB
    if "documents" in results:
        o = results["documents"]["overhead"][PDF]
        out["documents_cpu"] = o["cpu"] <= TARGET_DOC_OVERHEAD
        out["documents_wall"] = o["wall"] <= TARGET_DOC_OVERHEAD
    if "doc_rss" in results:
        r = results["doc_rss"]
        out["documents_rss"] = r["ok"] and r["mb"] <= TARGET_DOC_RSS_MB
    return out


def render(results: dict[str, Any], repeats: int) -> str:
    lines = list(report_header(results["meta"]))
    if results.get("warm"):
        lines += report_warm(results["warm"], repeats)
    if "cold" in results:
        lines += report_cold(results["cold"])
    if "rss" in results:
        lines += report_rss(results["rss"])
    if "documents" in results:
        lines += report_documents(results["documents"])
    if "doc_rss" in results:
        lines += report_doc_rss(results["doc_rss"])
    v = results["verdicts"]
    lines += ["", "Verdict: " + (", ".join(f"{k} {'PASS' if ok else 'FAIL'}"
                                           for k, ok in v.items()) or "nothing measured")]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def git_describe() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="ORT intra-op threads for both engines (default: CPU count)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per image")
    p.add_argument("--cold-repeats", type=int, default=5, help="fresh-process pairs")
    p.add_argument("--limit", type=int, default=None, help="images per warm set")
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-documents", action="store_true")
    p.add_argument("--only", action="append", choices=SECTIONS, default=None,
                   help="run only this section (repeatable); documents = [4] and [5]")
    p.add_argument("--doc-pages", type=int, default=DOC_PAGES,
                   help="receipts in the documents section's PDF")
    p.add_argument("--doc-repeats", type=int, default=3,
                   help="timed passes per arm in the documents section (plus a warm-up)")
    p.add_argument("--doc-rss-pages", type=int, default=DOC_RSS_PAGES,
                   help="pages of the PDF whose peak RSS is measured (0: skip)")
    p.add_argument("--no-doc-native", action="store_true",
                   help=f"leave out the diagnostic arm: the PDF read with pdf_dpi={IMG2PDF_DPI}")
    p.add_argument("--max-minutes", type=float, default=10.0,
                   help="time budget: cold start stops after a quarter of it (≥ 1 pair), "
                        "the warm phase stops taking new images when it is spent")
    p.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="save the numbers")
    args = p.parse_args(argv)
    cpus = os.cpu_count() or 1
    if not 1 <= args.threads <= cpus:
        p.error(f"--threads must be 1..{cpus}: RapidOCR ignores counts above the CPU count")
    if args.repeats < 1 or args.cold_repeats < 1 or (args.limit is not None and args.limit < 0):
        p.error("--repeats and --cold-repeats must be ≥ 1, --limit ≥ 0")
    if args.doc_pages < 1 or args.doc_repeats < 1 or args.doc_rss_pages < 0:
        p.error("--doc-pages and --doc-repeats must be ≥ 1, --doc-rss-pages ≥ 0")
    skipped = {"cold": args.skip_cold, "rss": args.skip_rss, "documents": args.skip_documents}
    args.sections = (set(args.only) if args.only
                     else {s for s in SECTIONS if not skipped.get(s, False)})
    return args


def run_children(args: argparse.Namespace, items: list[dict[str, Any]],
                 deadline: float) -> dict[str, Any]:
    """Cold start and peak RSS, run while this process is still small: Linux carries the
    parent's peak RSS into a fork+exec'd child's ``ru_maxrss``, so spawning them after both
    engines had run here would report this process's peak for both."""
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {}
    if "cold" in args.sections:
        receipt = next(i for i in sorted(items, key=lambda i: i["id"])
                       if i["category"] == RECEIPTS)
        log(f"cold: {args.cold_repeats} pairs on {receipt['id']}")
        out["cold"] = run_cold(args.eval_dir / receipt["file"], args.threads,
                               args.cold_repeats, deadline)
    if "rss" in args.sections:
        page, pixels = largest_page(items, args.eval_dir)
        log(f"rss: largest page {page['id']} ({pixels / 1e6:.1f} Mpx)")
        out["rss"] = {**run_rss(args.eval_dir / page["file"], pixels, args.threads),
                      "spawn_floor_kib": floor}
    if "documents" in args.sections and args.doc_rss_pages:
        log(f"doc rss: a {args.doc_rss_pages}-page PDF through the worker, fresh process")
        out["doc_rss"] = run_doc_rss(items, args.eval_dir, args.doc_rss_pages, args.threads)
    return out


def run_in_process(args: argparse.Namespace, items: list[dict[str, Any]],
                   deadline: float) -> dict[str, Any]:
    probe = OrtProbe()
    probe.install()  # before either engine exists
    engines = build_engines(args.threads)
    schedule = warm_schedule(items, args.limit)
    log(f"warm: {len(schedule)} images × ({args.repeats} repeats + warm-up) × 2 engines")
    runs = run_warm(probe, engines, schedule, args.eval_dir, args.repeats, args.threads,
                    deadline)
    sessions = check_sessions(probe, args.threads) if any(probe.calls.values()) else {}
    planned = Counter(name for name, _ in schedule)
    return {
        "sessions": sessions,
        "ort_calls": dict(probe.calls),
        "warm": {name: {"planned": planned[name],
                        **summarize_set([r for r in runs if r.set == name])}
                 for name in WARM_SETS if any(r.set == name for r in runs)},
        "warm_images": [{"set": r.set, "id": r.id, "error": r.error,
                         **{e: [asdict(c) for c in r.calls[e]] for e in ENGINES}}
                        for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    budget = start + 60 * args.max_minutes
    items = load_manifest(args.eval_dir)
    meta: dict[str, Any] = {
        "threads": args.threads, "cpus": os.cpu_count(), "repeats": args.repeats,
        "git": git_describe(), "load_start": load_avg(),
        "versions": {p: metadata.version(p) for p in ("edgeocr", "rapidocr", "onnxruntime")},
    }
    # Fresh processes first (see run_children); they get at most a quarter of the budget,
    # the warm phase takes images until the budget is spent.
    os.environ["OCR_THREADS"] = str(args.threads)  # the documents section's engine, children
    results: dict[str, Any] = run_children(args, items, start + 15 * args.max_minutes)
    warm: dict[str, Any] = {"sessions": {}, "ort_calls": {}}
    if "warm" in args.sections:
        warm = run_in_process(args, items, budget)
    if "documents" in args.sections:  # fixed work, outside the time budget
        warm["documents"] = run_documents(args, items)
    meta |= {"sessions": warm.pop("sessions"), "ort_calls": warm.pop("ort_calls"),
             "sections": sorted(args.sections),
             "load_end": load_avg(), "elapsed_s": round(time.monotonic() - start, 1)}
    results = {"meta": meta, **warm, **results}
    results["verdicts"] = verdicts(results)
    print(render(results, args.repeats))
    print(f"(elapsed {meta['elapsed_s']:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        log(f"numbers saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
