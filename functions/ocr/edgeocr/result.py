"""The stored result object (DESIGN §2), built from an engine output and its keys."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .keys import SCHEMA
from .ocr.engine import OcrOutput
from .ocr.models import MODEL_NAMES


def build_result(output: OcrOutput, digest: str, pipeline: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "hash": digest,
        "pipeline": pipeline,
        "models": dict(MODEL_NAMES),
        "image": asdict(output.image),
        "text": output.text,
        "lines": [asdict(line) for line in output.lines],
    }
