"""Score our engine against RapidOCR and Tesseract on the eval manifest; print one table.

    make eval EVAL_ARGS="--limit 10"
    .venv/bin/python scripts/eval.py --categories zh_lines_synth --engines ours,rapidocr-rec
    .venv/bin/python scripts/eval.py --json /tmp/eval.json     # numbers + every prediction
    .venv/bin/python scripts/eval.py --rescore /tmp/eval.json  # re-score saved predictions

Engines: ``ours`` (edgeocr, mode "auto", fed the file's bytes), ``rapidocr`` (RapidOCR 3.10
det+cls+rec, its defaults), ``rapidocr-rec`` (RapidOCR recognition only, no classifier, on line
items only: the ceiling for a tight line crop; it cannot read an upside-down crop, and the
reference figures IC15 words 0.119 and RapidOCR lines 0.000 are only met with its classifier
on: 0.108 and 0.143 as specified, 0.119 and 0.000 with ``use_cls=True``),
``tesseract`` (when the binary is on PATH: ``eng``, or ``chi_sim+eng`` for Chinese items when
installed, else those items are skipped; ``--psm 7`` on line items). Each engine's first item
is run once untimed (RapidOCR loads its models lazily); the seconds are then the wall time of
one engine call, decoding included, Tesseract's including its process start.

Turned sets: every ``en_words_ic15`` item is also read turned 90°, 180° and 270° (categories
``en_words_ic15_rot90`` …, the same GT, the crop losslessly turned into a temporary PNG),
since a word on a vertical sign or a box's spine is cropped that way; every
``en_scene_ic15`` item turned 90° and 270° (a photo shot on its side), its ignored regions
turned with it. ``--no-turned`` leaves them out.

Scoring lives in ``scoring.py``: what is normalised, how categories are aggregated, and why.
Errors (an engine raising on an image) count as empty output and are reported.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scoring

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO.parent / "shared" / "eval" / "manifest.jsonl"
ALL_ENGINES = ("ours", "rapidocr", "rapidocr-rec", "tesseract")

Box = Sequence[Sequence[float]] | None
Lines = list[tuple[str, Box]]


@dataclass
class Item:
    id: str
    path: Path
    kind: str
    lang: str
    category: str
    text: str
    ignore_boxes: list[list[float]]

    @classmethod
    def from_json(cls, obj: dict[str, Any], root: Path) -> Item:
        return cls(obj["id"], root / obj["file"], obj["kind"], obj["lang"], obj["category"],
                   obj["text"], obj.get("ignore_boxes") or [])


@dataclass
class Outcome:
    """One engine on one item: what it read and how long it took."""

    lines: Lines
    seconds: float
    error: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(t for t, _ in self.lines)


class Runner:
    """An engine adapter: ``supports`` says which items it should run, ``read`` OCRs one."""

    name = ""

    def supports(self, item: Item) -> bool:
        return True

    def read(self, item: Item) -> Lines:
        raise NotImplementedError

    def run(self, item: Item) -> Outcome:
        t0 = time.perf_counter()
        lines = self.read(item)
        return Outcome(lines, time.perf_counter() - t0)


class Ours(Runner):
    name = "ours"

    def __init__(self) -> None:
        from edgeocr.ocr.engine import Engine
        from edgeocr.settings import Settings

        s = Settings.from_env()
        self.engine = Engine(s.model_dir, s.engine, s.threads)

    def run(self, item: Item) -> Outcome:
        from edgeocr.errors import InputError

        data = item.path.read_bytes()  # outside the clock: the service gets bytes too
        t0 = time.perf_counter()
        try:
            out = self.engine.ocr(data)
        except InputError as exc:
            return Outcome([], time.perf_counter() - t0, error=f"{exc.code}: {exc.message}")
        return Outcome([(ln.text, ln.box) for ln in out.lines], time.perf_counter() - t0)


class Rapid(Runner):
    """RapidOCR, given the file path (its documented input; only paths get EXIF applied)."""

    def __init__(self, name: str, shared: Callable[[], Any]) -> None:
        self.name = name
        self.rec_only = name == "rapidocr-rec"
        self._engine = shared

    def supports(self, item: Item) -> bool:
        return item.kind == "line" or not self.rec_only

    def read(self, item: Item) -> Lines:
        # Flags are passed every call: RapidOCR keeps the last call's flags as its new defaults.
        flags = (False, False, True) if self.rec_only else (True, True, True)
        use_det, use_cls, use_rec = flags
        res = self._engine()(str(item.path), use_det=use_det, use_cls=use_cls, use_rec=use_rec)
        txts = list(getattr(res, "txts", None) or ())
        boxes = getattr(res, "boxes", None)
        if boxes is None:
            return [(t, None) for t in txts]
        return [(t, b.tolist()) for t, b in zip(txts, boxes, strict=True)]


class Tesseract(Runner):
    """The ``tesseract`` CLI on the image file, TSV output so that lines keep their boxes."""

    name = "tesseract"

    def __init__(self, exe: str, threads: int | None) -> None:
        self.exe = exe
        self.env = dict(os.environ)
        if threads:
            self.env["OMP_THREAD_LIMIT"] = str(threads)
        langs = subprocess.run([exe, "--list-langs"], capture_output=True, text=True).stdout
        self.has_chinese = "chi_sim" in langs.split()

    def wants_chinese(self, item: Item) -> bool:
        # Not lang == "mixed": outside the zh_* categories that means multi-European.
        return item.lang == "zh" or scoring.has_cjk(item.text)

    def supports(self, item: Item) -> bool:
        return self.has_chinese or not self.wants_chinese(item)

    def read(self, item: Item) -> Lines:
        lang = "chi_sim+eng" if self.wants_chinese(item) else "eng"
        cmd = [self.exe, str(item.path), "stdout", "-l", lang]
        if item.kind == "line":
            cmd += ["--psm", "7"]
        proc = subprocess.run([*cmd, "tsv"], capture_output=True, text=True, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-300:])
        return tsv_lines(proc.stdout)


def tsv_lines(tsv: str) -> Lines:
    """Words of Tesseract's TSV grouped into its lines, each with the box around its words."""
    lines: dict[tuple[str, str, str, str], list[dict[str, str]]] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        if row.get("level") == "5" and (row.get("text") or "").strip():
            key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
            lines.setdefault(key, []).append(row)
    out: Lines = []
    for words in lines.values():
        x0 = min(int(w["left"]) for w in words)
        y0 = min(int(w["top"]) for w in words)
        x1 = max(int(w["left"]) + int(w["width"]) for w in words)
        y1 = max(int(w["top"]) + int(w["height"]) for w in words)
        text = " ".join(w["text"] for w in words)
        out.append((text, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    return out


@dataclass
class Cell:
    """One engine over one category."""

    lines: list[scoring.CerCount] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)
    pages: list[scoring.BowCount] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "items": len(self.seconds),
            "cer": scoring.mean_cer(self.lines) if self.lines else None,
            "exact": sum(self.exact) / len(self.exact) if self.exact else None,
            "f1": scoring.mean_f1(self.pages) if self.pages else None,
            "median_s": statistics.median(self.seconds) if self.seconds else None,
            "errors": self.errors,
        }


def score(item: Item, record: dict[str, Any], cell: Cell) -> None:
    """Add one engine's reading of one item to its cell, and its scores to the record."""
    cell.seconds.append(record["seconds"])
    cell.errors += "error" in record
    lines: Lines = [(t, b) for t, b in record["lines"]]
    if item.kind == "line":
        pred = " ".join(t for t, _ in lines)
        count = scoring.cer_count(pred, item.text)
        cell.lines.append(count)
        cell.exact.append(scoring.exact_match(pred, item.text))
        record.update(cer=round(count.cer, 4), exact=cell.exact[-1])
    else:
        if item.ignore_boxes:
            lines = scoring.drop_ignored([(t, b) for t, b in lines if b is not None],
                                         item.ignore_boxes)
        bow = scoring.bow_count("\n".join(t for t, _ in lines), item.text)
        cell.pages.append(bow)
        record.update(f1=round(bow.f1, 4))


def tabulate(items: list[Item], records: list[dict[str, Any]]) -> dict[str, dict[str, Cell]]:
    """Score every record against its item's GT, per category and engine, in table order."""
    by_id = {it.id: it for it in items}
    cells: dict[str, dict[str, Cell]] = {}
    for record in records:
        item = by_id.get(record["id"])
        if item is None:
            continue
        cell = cells.setdefault(item.category, {}).setdefault(record["engine"], Cell())
        score(item, record, cell)
    return cells


def load_items(manifest: Path, categories: set[str] | None, limit: int | None) -> list[Item]:
    """Manifest items in order, filtered by category; the first ``limit`` of each category."""
    taken: dict[str, int] = {}
    items = []
    with manifest.open(encoding="utf-8") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            item = Item.from_json(json.loads(raw), manifest.parent)
            if categories and item.category not in categories:
                continue
            if limit is not None and taken.get(item.category, 0) >= limit:
                continue
            taken[item.category] = taken.get(item.category, 0) + 1
            items.append(item)
    return items


# Turned sets: word crops (a word on a vertical sign, a box's spine) every quarter; scenes
# (a photo shot on its side, no EXIF to say so) a quarter either way.
TURNED_FROM = {"en_words_ic15": (1, 2, 3), "en_scene_ic15": (1, 3)}


def turned_items(items: list[Item], folder: Path) -> list[Item]:
    """Items turned clockwise by a quarter turn or more: new items, same GT, their ignored
    regions turned with them."""
    import cv2
    import numpy as np

    from edgeocr.ocr.geometry import rotate_points

    out = []
    for category, turns in TURNED_FROM.items():
        for k in turns:
            for item in (it for it in items if it.category == category):
                img = cv2.imread(str(item.path), cv2.IMREAD_UNCHANGED)
                h, w = img.shape[:2]
                path = folder / f"{item.id}_rot{90 * k}.png"
                cv2.imwrite(str(path), np.ascontiguousarray(np.rot90(img, -k)))
                ignore = [rotate_points(np.array(scoring.polygon(b), dtype=np.float32), k, w,
                                        h).tolist() for b in item.ignore_boxes]
                out.append(Item(f"{item.id}@rot{90 * k}", path, item.kind, item.lang,
                                f"{category}_rot{90 * k}", item.text, ignore))
    return out


def make_runners(names: Sequence[str], threads: int | None) -> list[Runner]:
    """Adapters for the requested engines that are available here; notes go to stderr."""
    if threads:
        os.environ["OCR_THREADS"] = str(threads)  # before Engine() reads its settings
    rapid: list[Any] = []

    def shared_rapid() -> Any:
        if not rapid:
            from rapidocr import RapidOCR

            params: dict[str, Any] = {"Global.log_level": "error"}
            if threads:
                params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            rapid.append(RapidOCR(params=params))
        return rapid[0]

    runners: list[Runner] = []
    for name in names:
        if name == "ours":
            runners.append(Ours())
        elif name in ("rapidocr", "rapidocr-rec"):
            runners.append(Rapid(name, shared_rapid))
        elif name == "tesseract":
            exe = shutil.which("tesseract")
            if exe is None:
                print("note: tesseract not on PATH, skipping it", file=sys.stderr)
                continue
            tess = Tesseract(exe, threads)
            if not tess.has_chinese:
                print("note: no chi_sim traineddata, tesseract skips zh items", file=sys.stderr)
            runners.append(tess)
        else:
            raise SystemExit(f"unknown engine {name!r}; choose from {', '.join(ALL_ENGINES)}")
    return runners


def evaluate(items: list[Item], runners: list[Runner], tty: bool) -> list[dict[str, Any]]:
    """Run every engine over every item it supports, item by item; one record per reading."""
    for runner in runners:  # untimed first call: RapidOCR loads its models lazily
        first = next((it for it in items if runner.supports(it)), None)
        if first is not None:
            try:
                runner.run(first)
            except Exception as exc:
                print(f"note: {runner.name} warm-up failed: {exc}", file=sys.stderr)
    records = []
    for n, item in enumerate(items, 1):
        for runner in runners:
            if not runner.supports(item):
                continue
            try:
                outcome = runner.run(item)
            except Exception as exc:  # a peer crashing on one image must not end the run
                outcome = Outcome([], 0.0, error=f"{type(exc).__name__}: {exc}")
            record: dict[str, Any] = {
                "id": item.id, "category": item.category, "engine": runner.name,
                "seconds": round(outcome.seconds, 4),
                "text": outcome.text, "lines": [[t, _plain(b)] for t, b in outcome.lines],
            }
            if outcome.error:
                record["error"] = outcome.error
            records.append(record)
        if tty:
            print(f"\r{n}/{len(items)} {item.id[:40]:<40}", end="", file=sys.stderr, flush=True)
        elif n % 25 == 0 or n == len(items):
            print(f"{n}/{len(items)} items done", file=sys.stderr, flush=True)
    if tty:
        print(file=sys.stderr)
    return records


def _plain(box: Box) -> list[list[float]] | None:
    """A box as JSON-ready nested lists of numbers."""
    return None if box is None else [[float(x), float(y)] for x, y in box]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(summary: dict[str, dict[str, dict[str, Any]]], kinds: dict[str, str]) -> str:
    """The one table: a row per category and engine."""
    head = ("category", "kind", "engine", "items", "CER", "exact", "F1", "median s", "errors")
    rows = [head]
    for category in sorted(summary):
        for engine, s in summary[category].items():
            rows.append((category, kinds[category], engine, str(s["items"]), _pct(s["cer"]),
                         _pct(s["exact"]), _f1(s["f1"]),
                         "-" if s["median_s"] is None else f"{s['median_s']:.3f}",
                         str(s["errors"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    left = {0, 1, 2}
    out = []
    for r in rows:
        out.append("  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                    help="manifest.jsonl; image paths are relative to its folder")
    ap.add_argument("--categories", help="comma-separated categories (default: all)")
    ap.add_argument("--limit", type=int, help="first N items of each category")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES),
                    help=f"comma-separated, from {','.join(ALL_ENGINES)}")
    ap.add_argument("--threads", type=int,
                    help="ONNX Runtime intra-op threads for ours and RapidOCR (OCR_THREADS)")
    ap.add_argument("--json", type=Path, help="write numbers and per-item predictions here")
    ap.add_argument("--no-turned", action="store_true",
                    help="leave out the turned word crops and scenes")
    ap.add_argument("--rescore", type=Path, metavar="JSON",
                    help="score the predictions saved by an earlier --json run, run no engine")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    categories = set(args.categories.split(",")) if args.categories else None
    items = load_items(args.manifest, categories, args.limit)
    if not items:
        raise SystemExit(f"no items in {args.manifest} for categories {args.categories}")
    for missing in sorted((categories or set()) - {it.category for it in items}):
        print(f"note: no category {missing!r} in {args.manifest}", file=sys.stderr)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    scratch = tempfile.TemporaryDirectory(prefix="edgeocr-eval-")
    # a rescore scores the saved run's turned items too, whatever the flag says
    if args.rescore or not args.no_turned:
        items += turned_items(items, Path(scratch.name))
    if args.rescore:
        saved = json.loads(args.rescore.read_text(encoding="utf-8"))
        records = [r for r in saved["items"] if r["engine"] in names]
    else:
        records = evaluate(items, make_runners(names, args.threads), tty=sys.stderr.isatty())
    cells = tabulate(items, records)
    scratch.cleanup()

    summary = {cat: {eng: cell.summary() for eng, cell in by_eng.items()}
               for cat, by_eng in sorted(cells.items())}
    kinds = {it.category: it.kind for it in items}
    print(render(summary, kinds))
    errors = sum(s["errors"] for by_eng in summary.values() for s in by_eng.values())
    if errors:
        print(f"\n{errors} item(s) failed and scored as empty output; see --json for details")
    if args.json:
        args.json.write_text(json.dumps({
            "manifest": str(args.manifest.resolve()),
            "engines": names,
            "threads": args.threads,
            "limit": args.limit,
            "summary": summary,
            "items": records,
        }, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
