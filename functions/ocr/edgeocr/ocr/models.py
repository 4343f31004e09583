"""The model files and their ONNX Runtime sessions.

The manifest written by the model layer build names every file with its SHA-256, so the
pipeline id can be computed from it cheaply, without touching the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DET_FILE = "PP-OCRv6_det_small.onnx"
CLS_FILE = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
REC_FILE = "PP-OCRv6_rec_small.onnx"
MODEL_NAMES = {
    "det": "PP-OCRv6_det_small",
    "cls": "ch_ppocr_mobile_v2.0_cls",
    "rec": "PP-OCRv6_rec_small",
}


@dataclass(frozen=True)
class ModelSet:
    directory: Path
    sha256: dict[str, str]  # file name -> checksum, from the verified manifest

    @classmethod
    def load(cls, directory: Path) -> ModelSet:
        manifest = directory / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(
                f"no model manifest at {manifest}: run `make setup` (or set OCR_MODEL_DIR)"
            )
        files = json.loads(manifest.read_text())["files"]
        missing = [f for f in (DET_FILE, CLS_FILE, REC_FILE) if f not in files]
        if missing:
            raise ValueError(f"model manifest {manifest} does not list {missing}")
        return cls(directory, {f: files[f] for f in (DET_FILE, CLS_FILE, REC_FILE)})

    def path(self, name: str) -> Path:
        return self.directory / name


def create_session(path: Path, threads: int):
    """One CPU session. Spinning is off: idle worker threads would otherwise burn CPU time
    that a many-requests-at-once service pays for, for a few percent of latency."""
    import onnxruntime as ort  # imported here: the cache-hit path never needs it

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No CPU memory arena: it keeps the peak of every page size ever seen, so a worker's RSS
    # climbed page after page (857 MiB over a 100-page PDF, 609 MiB without; CPU time the
    # same within noise, `make bench`)
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 3
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} is missing: run `make setup`")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
