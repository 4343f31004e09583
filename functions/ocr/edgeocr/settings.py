"""All configuration, read once from the environment, with safe defaults.

One module so that every knob is visible in one place and the pipeline id can be derived
from exactly the settings that change results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .ocr.config import DEFAULT_MAX_PIXELS, EngineSettings

_LOCAL_MODEL_DIR = Path(__file__).resolve().parents[3] / "layers" / "model" / "build" / "model"
_LAMBDA_MODEL_DIR = Path("/opt/model")


def _default_model_dir() -> Path:
    return _LAMBDA_MODEL_DIR if _LAMBDA_MODEL_DIR.is_dir() else _LOCAL_MODEL_DIR


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _str(name: str, default: str | None = None) -> str | None:
    raw = os.environ.get(name, "").strip()
    return raw or default


# Lambda carries at most 6 MB per synchronous invocation, the event JSON around a base64 body
# included: the raw bytes one request can bring are what fits after that encoding.
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
EVENT_OVERHEAD_BYTES = 16 * 1024  # headers and request context of an HTTP API (v2) event
FITS_AFTER_BASE64 = (LAMBDA_PAYLOAD_BYTES - EVENT_OVERHEAD_BYTES) * 3 // 4  # 4,706,304
# The default limit stays below that and below the edge's Content-Length check (4,700,000,
# infra/edge/viewer_request.js), leaving room for multipart framing: every body the function
# refuses, it refuses itself with our JSON 413.
MAX_REQUEST_BYTES = 4_400_000


@dataclass(frozen=True)
class Settings:
    model_dir: Path = field(default_factory=_default_model_dir)
    threads: int = 0  # 0 = ONNX Runtime's default (one per physical core)
    max_bytes: int = MAX_REQUEST_BYTES  # a request body; larger files: POST /uploads
    max_pixels: int = DEFAULT_MAX_PIXELS
    hash_secret: str | None = None
    results_bucket: str | None = None
    cdn_base_url: str | None = None
    results_dir: Path | None = None
    cors_origins: tuple[str, ...] = ()
    engine: EngineSettings = field(default_factory=EngineSettings)
    max_upload_bytes: int = 500 * 1024 * 1024  # as Textract; the CLI and the worker read this
    max_pages: int = 2000
    sync_pages: int = 4  # more pages than this in a POST /ocr: 202, and the worker reads it
    pdf_dpi: int = 200
    uploads_queue_url: str | None = None  # AWS: where the worker continues long documents
    upload_token_secret: str | None = None  # local PUT /uploads tokens; None: one per process
    local_worker: bool = True  # local store: an in-process worker reads uploads
    # S3 calls: attempts (botocore standard retries) and timeouts. The defaults fit the API
    # function's 29 s with OCR of OCR_SYNC_PAGES pages (tests/test_limits.py works out the
    # worst case); the worker, with minutes to spare, is given more in infra/template.yaml.
    origin_secret: str | None = None  # AWS: the header CloudFront adds; None: no check
    s3_attempts: int = 2
    s3_connect_timeout: float = 0.5
    s3_read_timeout: float = 1.0

    def result_settings(self) -> dict[str, int]:
        """The settings (beyond the engine's) that change a result, for the pipeline id."""
        return {"pdf_dpi": self.pdf_dpi, "max_pixels": self.max_pixels}

    @classmethod
    def from_env(cls) -> Settings:
        model_dir = _str("OCR_MODEL_DIR")
        results_dir = _str("OCR_RESULTS_DIR")
        origins = _str("OCR_CORS_ORIGINS", "") or ""
        return cls(
            model_dir=Path(model_dir) if model_dir else _default_model_dir(),
            threads=_int("OCR_THREADS", 0),
            max_bytes=_int("OCR_MAX_BYTES", cls.max_bytes),
            max_pixels=_int("OCR_MAX_PIXELS", cls.max_pixels),
            hash_secret=_str("OCR_HASH_SECRET"),
            results_bucket=_str("RESULTS_BUCKET"),
            cdn_base_url=(_str("CDN_BASE_URL") or "").rstrip("/") or None,
            results_dir=Path(results_dir) if results_dir else None,
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            max_upload_bytes=_int("OCR_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_pages=_int("OCR_MAX_PAGES", cls.max_pages),
            sync_pages=_int("OCR_SYNC_PAGES", cls.sync_pages),
            pdf_dpi=_int("OCR_PDF_DPI", cls.pdf_dpi),
            uploads_queue_url=_str("UPLOADS_QUEUE_URL"),
            upload_token_secret=_str("OCR_UPLOAD_TOKEN_SECRET"),
            origin_secret=_str("OCR_ORIGIN_SECRET"),
            s3_attempts=_int("OCR_S3_ATTEMPTS", cls.s3_attempts),
            s3_connect_timeout=_float("OCR_S3_CONNECT_TIMEOUT", cls.s3_connect_timeout),
            s3_read_timeout=_float("OCR_S3_READ_TIMEOUT", cls.s3_read_timeout),
        )
