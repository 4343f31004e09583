"""Shared fixtures: the eval data beside the checkout, and one engine per test session."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = (ROOT / ".." / "shared" / "eval").resolve()
sys.path.insert(0, str(ROOT / "scripts"))  # scoring helpers shared with scripts/eval.py

from s3fixtures import moto_endpoint, s3_env  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not (EVAL_DIR / "manifest.jsonl").is_file():
        pytest.fail(f"eval data not found at {EVAL_DIR}")
    return EVAL_DIR


@pytest.fixture(scope="session")
def manifest(eval_dir: Path) -> dict[str, dict]:
    items = [json.loads(line) for line in (eval_dir / "manifest.jsonl").read_text().splitlines()]
    return {item["id"]: item for item in items}


@pytest.fixture(scope="session")
def engine():
    from edgeocr.ocr.engine import Engine
    from edgeocr.settings import Settings

    s = Settings()
    return Engine(s.model_dir, s.engine, s.threads)


@pytest.fixture(scope="session")
def document(eval_dir: Path) -> bytes:
    """A scanned 3-page PDF (img2pdf) of rendered Chinese pages: small pages, quick to read."""
    from helpers import ZH_PAGES, pdf_of

    return pdf_of(*(eval_dir / p for p in ZH_PAGES))


@pytest.fixture
def counting(engine):
    """The real engine, counting page reads."""
    from helpers import CountingEngine

    return CountingEngine(engine)
