"""Speed and memory of edgeocr against RapidOCR 3.10 on the same weights and thread count.

The machine is small and shared, so absolute times drift with whatever else runs: every
measurement interleaves ours and the peer (alternating who goes first) and the verdicts are
ratios ours / RapidOCR of paired runs, which cancel most of that drift.

1. Warm time per image (SROIE receipts, Tesseract's pages): wall, process CPU (all threads)
   and the share of wall spent inside ``onnxruntime.InferenceSession.run``.
2. Cold start: a fresh process to its first result, ``edgeocr ocr --json`` against a
   ``python -c`` that builds RapidOCR and OCRs the same receipt.
3. Peak RSS of a fresh process on the largest eval page.

Usage: ``make bench BENCH_ARGS="--limit 5 --json out.json"``; progress goes to stderr, the
report to stdout.
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
OURS, PEER = "ours", "rapidocr"
ENGINES = (OURS, PEER)
TARGET_WARM = 0.5  # ours / RapidOCR, receipts, wall and CPU
TARGET_COLD = 0.6  # ours / RapidOCR, fresh process to first result
TARGET_RSS_MB = 800.0  # ours, decimal MB (stricter than MiB)
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
    """Lines in the first JSON result printed, or -1 if there is no result."""
    try:
        return len(json.loads(stdout.splitlines()[0])["lines"])
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
    yield (f"ORT probe: ours {calls.get(OURS, 0)} run calls on "
           f"{len(meta['sessions'].get(OURS, []))} sessions, rapidocr "
           f"{calls.get(PEER, 0)} on {len(meta['sessions'].get(PEER, []))}; "
           f"spin-wait: ours {'/'.join(spin[OURS])}, rapidocr {'/'.join(spin[PEER])}")
    yield ("input: the same bytes to both engines in process (both decode), the file path to "
           "both fresh processes")
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
            yield (f"  {'':<23}  target ≤ {TARGET_WARM}: wall "
                   f"{verdict(s['wall_ratio'], TARGET_WARM)}, "
                   f"CPU {verdict(s['cpu_ratio'], TARGET_WARM)}")
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


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    out = {}
    if RECEIPTS in results.get("warm", {}):
        s = results["warm"][RECEIPTS]
        out["warm_receipts_wall"] = s["wall_ratio"] <= TARGET_WARM
        out["warm_receipts_cpu"] = s["cpu_ratio"] <= TARGET_WARM
    if "cold" in results:
        out["cold_wall"] = results["cold"]["wall_ratio"] <= TARGET_COLD
    if "rss" in results:
        rss = results["rss"][OURS]
        out["rss_ours"] = rss["ok"] and rss["mb"] <= TARGET_RSS_MB
    return out


def render(results: dict[str, Any], repeats: int) -> str:
    lines = list(report_header(results["meta"]))
    if results.get("warm"):
        lines += report_warm(results["warm"], repeats)
    if "cold" in results:
        lines += report_cold(results["cold"])
    if "rss" in results:
        lines += report_rss(results["rss"])
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
    return args


def run_children(args: argparse.Namespace, items: list[dict[str, Any]],
                 deadline: float) -> dict[str, Any]:
    """Cold start and peak RSS, run while this process is still small: Linux carries the
    parent's peak RSS into a fork+exec'd child's ``ru_maxrss``, so spawning them after both
    engines had run here would report this process's peak for both."""
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {}
    if not args.skip_cold:
        receipt = next(i for i in sorted(items, key=lambda i: i["id"])
                       if i["category"] == RECEIPTS)
        log(f"cold: {args.cold_repeats} pairs on {receipt['id']}")
        out["cold"] = run_cold(args.eval_dir / receipt["file"], args.threads,
                               args.cold_repeats, deadline)
    if not args.skip_rss:
        page, pixels = largest_page(items, args.eval_dir)
        log(f"rss: largest page {page['id']} ({pixels / 1e6:.1f} Mpx)")
        out["rss"] = {**run_rss(args.eval_dir / page["file"], pixels, args.threads),
                      "spawn_floor_kib": floor}
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
    results: dict[str, Any] = run_children(args, items, start + 15 * args.max_minutes)
    warm = run_in_process(args, items, budget)
    meta |= {"sessions": warm.pop("sessions"), "ort_calls": warm.pop("ort_calls"),
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
