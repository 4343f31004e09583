"""Composition: settings in, the store, the pipeline id, the service and the worker out.

Entry points (``app.py``, ``edgeocr serve``, the CLI) read the environment into ``Settings``
and call this; nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .keys import pipeline_id
from .ocr.models import ModelSet
from .service import EngineHolder, OcrService, ReadConfig
from .settings import Settings
from .store import LocalStore, ResultStore, S3Store


def default_store(settings: Settings) -> ResultStore:
    if settings.results_bucket:
        return S3Store(settings.results_bucket, max_attempts=settings.s3_attempts,
                       connect_timeout=settings.s3_connect_timeout,
                       read_timeout=settings.s3_read_timeout)
    return LocalStore(settings.results_dir or Path.home() / ".cache" / "edgeocr" / "results")


def pipeline_for(settings: Settings) -> str:
    return pipeline_id(ModelSet.load(settings.model_dir), settings.engine,
                       settings.result_settings())


def read_config(settings: Settings) -> ReadConfig:
    return ReadConfig(max_bytes=settings.max_bytes, max_upload_bytes=settings.max_upload_bytes,
                      max_pixels=settings.max_pixels, max_pages=settings.max_pages,
                      pdf_dpi=settings.pdf_dpi, sync_pages=settings.sync_pages)


def build_service(settings: Settings, store: ResultStore | None = None,
                  engine_factory: Callable[[], Any] | None = None) -> OcrService:
    def build_engine() -> Any:
        from .ocr.engine import Engine

        return Engine(settings.model_dir, settings.engine, settings.threads)

    return OcrService(store if store is not None else default_store(settings),
                      pipeline_for(settings), EngineHolder(engine_factory or build_engine),
                      read_config(settings), hash_secret=settings.hash_secret)
