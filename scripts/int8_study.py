"""Static INT8 recognition: how much faster, and what it costs in accuracy (issue 11).

    .venv/bin/pip install -e '.[study]'     # onnx, for the converter (never in the bundle)
    .venv/bin/python scripts/int8_study.py [--receipts 20] [--leave-one-out]

The one lever large enough for the CPU target of issue 11 is INT8 recognition, and it does
not hold accuracy: this script is the evidence, reproducible from the shipped model and the
dev set. It

1. pre-processes the recogniser (ONNX Runtime's ``quant_pre_process``) and converts it to
   opset 13 (per-channel DequantizeLinear needs 13; the shipped model is opset 11);
2. cuts calibration lines: detector crops of receipts, zh pages and scenes, and line and
   word items; the even ones calibrate, the odd ones are held out to score;
3. calibrates the convolutions' tensors with MinMax, and with Percentile 99.99 (on lines
   padded to 320 px: the histograms need one shape);
4. builds QDQ models, u8 activations and s8 per-channel weights with 7-bit range (without
   it, AVX2's VPMADDUBSW saturates: KL 0.094 against 0.078), every convolution quantised;
5. reports for each: the KL divergence of the per-step class distribution from FP32's on
   the held-out lines, the share of time steps whose best class changes, CPU ms per line
   (batches of 4 x 320, interleaved with FP32, medians), and F1 and median CPU ms per receipt
   on the first receipts read by the engine with the model swapped in.

``--leave-one-out`` also leaves each convolution in FP32 in turn (the per-layer sensitivity
search): the error is spread over all of them, so no small set of layers left in FP32 buys
the accuracy back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "functions" / "ocr"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval as ev  # noqa: E402
import scoring  # noqa: E402
from edgeocr.ocr.engine import Engine, _crop  # noqa: E402
from edgeocr.ocr.models import REC_FILE, create_session  # noqa: E402
from edgeocr.ocr.recognize import _to_height  # noqa: E402

MODEL_DIR = REPO / "layers" / "model" / "build" / "model"
PAGE_SETS = {"receipts_sroie": 8, "zh_pages_synth": 4, "en_scene_ic15": 4}  # pages, 25 lines each
LINE_SETS = ("en_words_ic15", "zh_lines_synth", "en_doclines_uw3")  # every 6th item
PAD_WIDTH = 320


def calibration_lines(manifest: Path) -> list[np.ndarray]:
    """Normalised lines (48 px high, HWC float32) as the recogniser is fed them."""
    engine = Engine(MODEL_DIR)
    items = ev.load_items(manifest, set(PAGE_SETS) | set(LINE_SETS), None)
    lines: list[np.ndarray] = []
    for cat, pages in PAGE_SETS.items():
        for it in [i for i in items if i.category == cat][:pages]:
            img = cv2.imread(str(it.path))
            lines += [_to_height(_crop(img, d.box).pixels) for d in engine.detector(img)[:25]]
    for it in [i for i in items if i.category in LINE_SETS][::6]:
        lines.append(_to_height(cv2.imread(str(it.path))))
    return lines


def prepare(src: Path, out: Path) -> Path:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.preprocess import quant_pre_process

    pre = out / "rec_pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    onnx.save(version_converter.convert_version(onnx.load(str(pre)), 13), str(out / "rec13.onnx"))
    return out / "rec13.onnx"


def calibrate(model: Path, lines: list[np.ndarray], method: str, work: Path):
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    def feed(x: np.ndarray) -> np.ndarray:
        if method == "Percentile":  # one shape for the histograms
            padded = np.zeros((x.shape[0], PAD_WIDTH, 3), np.float32)
            padded[:, : min(PAD_WIDTH, x.shape[1])] = x[:, :PAD_WIDTH]
            x = padded
        return x.transpose(2, 0, 1)[None].astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(lines)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": feed(x)}

    extra = {"percentile": 99.99} if method == "Percentile" else {}
    calibrator = create_calibrator(model, ["Conv"], augmented_model_path=str(work / "aug.onnx"),
                                   calibrate_method=getattr(CalibrationMethod, method),
                                   extra_options=extra)
    calibrator.collect_data(Reader())
    return calibrator.compute_data()


def quantise(model: Path, ranges, out: Path, exclude: list[str] = ()) -> Path:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    q = QDQQuantizer(load_model_with_shape_infer(model), True, True, QuantType.QInt8,
                     QuantType.QUInt8, ranges, [], list(exclude), ["Conv"], {})
    q.quantize_model()
    q.model.save_model_to_file(str(out), False)
    return out


def outputs(path: Path, lines: list[np.ndarray]) -> list[np.ndarray]:
    s = create_session(path, 2)
    return [s.run(None, {"x": x.transpose(2, 0, 1)[None]})[0][0] for x in lines]


def divergence(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    """Mean KL(FP32 || INT8) per time step, and the share of steps whose argmax moved."""
    kls, moved, steps = [], 0, 0
    for a, b in zip(ref, got, strict=True):
        a, b = np.clip(a, 1e-8, 1.0), np.clip(b, 1e-8, 1.0)
        kls.append(float((a * np.log(a / b)).sum(axis=1).mean()))
        moved += int((a.argmax(1) != b.argmax(1)).sum())
        steps += a.shape[0]
    return float(np.mean(kls)), moved / steps


def cpu_per_line(paths: list[Path], repeats: int = 9) -> list[float]:
    """CPU ms per line of a 4 x 320 batch, the models interleaved, medians."""
    sessions = [create_session(p, 2) for p in paths]
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 48, PAD_WIDTH)).astype(np.float32)
    times: list[list[float]] = [[] for _ in paths]
    for s in sessions:
        s.run(None, {"x": x})
    for _ in range(repeats):
        for k, s in enumerate(sessions):
            t = time.process_time()
            s.run(None, {"x": x})
            times[k].append(time.process_time() - t)
    return [1000 * statistics.median(t) / 4 for t in times]


def receipts(rec: Path, manifest: Path, n: int, work: Path) -> tuple[float, float]:
    """F1 and median CPU ms per receipt on the first ``n`` receipts, the engine reading with
    ``rec`` as its recogniser."""
    models = work / f"models-{rec.stem}"
    models.mkdir()
    for f in MODEL_DIR.iterdir():
        if f.name != REC_FILE:
            os.symlink(f, models / f.name)
    shutil.copyfile(rec, models / REC_FILE)
    engine = Engine(models, threads=2)
    counts, cpu = [], []
    for it in ev.load_items(manifest, {"receipts_sroie"}, n):
        data = it.path.read_bytes()
        t = time.process_time()
        lines = [(ln.text, ln.box) for ln in engine.ocr(data).lines]
        cpu.append(1000 * (time.process_time() - t))
        if it.ignore_boxes:
            lines = scoring.drop_ignored(lines, it.ignore_boxes)
        counts.append(scoring.bow_count("\n".join(t for t, _ in lines), it.text))
    return scoring.mean_f1(counts), statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, default=ev.DEFAULT_MANIFEST)
    ap.add_argument("--receipts", type=int, default=20, help="receipts read per model")
    ap.add_argument("--leave-one-out", action="store_true",
                    help="also each convolution left in FP32 in turn (KL only)")
    args = ap.parse_args()
    try:
        import onnx
    except ImportError:
        sys.exit("int8_study: needs onnx: .venv/bin/pip install -e '.[study]'")
    fp32 = MODEL_DIR / REC_FILE
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        work = Path(tmp)
        lines = calibration_lines(args.manifest)
        calib, held = lines[::2], lines[1::2]
        print(f"{len(calib)} calibration lines, {len(held)} held out", flush=True)
        src = prepare(fp32, work)
        ref = outputs(fp32, held)
        ranges = {m: calibrate(src, calib, m, work) for m in ("MinMax", "Percentile")}
        models = {m: quantise(src, r, work / f"rec_{m}.onnx") for m, r in ranges.items()}
        ms = cpu_per_line([fp32, *models.values()])
        print(f"\n{'model':<18}{'KL':>8}{'moved':>8}{'ms/line':>9}{'receipt F1':>12}"
              f"{'ms/receipt':>12}")
        f1, cpu = receipts(fp32, args.manifest, args.receipts, work)
        print(f"{'FP32':<18}{0:>8.4f}{0:>8.2%}{ms[0]:>9.1f}{f1:>12.4f}{cpu:>12.0f}", flush=True)
        for (name, path), t in zip(models.items(), ms[1:], strict=True):
            kl, moved = divergence(ref, outputs(path, held))
            f1, cpu = receipts(path, args.manifest, args.receipts, work)
            print(f"{'INT8 ' + name:<18}{kl:>8.4f}{moved:>8.2%}{t:>9.1f}{f1:>12.4f}{cpu:>12.0f}",
                  flush=True)
        if args.leave_one_out:
            import onnx

            convs = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
            print("\nPercentile, one convolution left in FP32 (KL, moved):")
            scores = {}
            for conv in convs:
                path = quantise(src, ranges["Percentile"], work / "rec_loo.onnx", [conv])
                scores[conv] = divergence(ref, outputs(path, held))
            for conv, (kl, moved) in sorted(scores.items(), key=lambda kv: kv[1][0])[:10]:
                print(f"  {conv:<10}{kl:>8.4f}{moved:>8.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
