"""The HTTP API (DESIGN §2): FastAPI routes wiring bytes → key → store → engine → store.

The cache-hit path never imports ONNX Runtime or creates sessions: the pipeline id comes
from the model manifest, and the engine is built on the first miss only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError, TooLarge, UnsupportedFormat
from ..keys import pipeline_id, result_key
from ..observability import RequestLogMiddleware, logger
from ..ocr.models import ModelSet
from ..service import EngineHolder, Limits, OcrService
from ..settings import Settings
from ..store import LocalStore, ResultStore, S3Store, StoredObject, StoreError

log = logger

STATIC = Path(__file__).parents[1] / "static"
_HASH = re.compile(r"^[0-9a-f]{64}$")
_PIPELINE = re.compile(r"^[0-9a-f]{16}$")
_STATUS = {"unsupported_format": 415, "unsupported_media_type": 415, "too_large": 413,
           "too_many_bytes": 413, "too_many_pixels": 413}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Base64Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_base64: str


def default_store(settings: Settings) -> ResultStore:
    if settings.results_bucket:
        return S3Store(settings.results_bucket)
    return LocalStore(settings.results_dir or Path.home() / ".cache" / "edgeocr" / "results")


def create_app(
    settings: Settings | None = None,
    store: ResultStore | None = None,
    engine_factory: Callable[[], Any] | None = None,
) -> FastAPI:
    settings = settings or Settings()
    store = store if store is not None else default_store(settings)
    models = ModelSet.load(settings.model_dir)
    pipeline = pipeline_id(models, settings.engine)

    def build_engine():
        from ..ocr.engine import Engine

        return Engine(settings.model_dir, settings.engine, settings.threads)

    holder = EngineHolder(engine_factory or build_engine)
    service = OcrService(store, pipeline, holder,
                         Limits(max_bytes=settings.max_bytes, max_pixels=settings.max_pixels),
                         hash_secret=settings.hash_secret)

    app = FastAPI(title="edgeocr", version=__version__,
                  description="OCR with immutable, edge-cached results.")
    app.state.settings, app.state.store, app.state.engine = settings, store, holder
    app.state.service = service
    app.state.pipeline = pipeline
    app.add_middleware(RequestLogMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Content-Type"],
                           expose_headers=["ETag", "Location", "X-Edgeocr-Cache"])

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(_STATUS.get(exc.code, _STATUS.get(type(exc).code, 400)), exc.code,
                      exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _first_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    def result_url(request: Request, key: str) -> str:
        base = settings.cdn_base_url or str(request.base_url).rstrip("/")
        return f"{base}/{key}"

    def answer(request: Request, obj: StoredObject | None, result: dict, *, cached: bool,
               key: str, timings: dict[str, float]) -> JSONResponse:
        url = result_url(request, key) if obj is not None else None
        body = {**result, "cached": cached, "stored": obj is not None, "result_url": url,
                "timings_ms": timings}
        headers = {"ETag": f'"{result["hash"]}"', "X-Edgeocr-Cache": "hit" if cached else "miss",
                   "X-Edgeocr-Stored": "true" if obj is not None else "false"}
        if url:
            headers["Location"] = url
        return JSONResponse(body, headers=headers)

    @app.post("/ocr", summary="OCR an image (raw body, multipart field `image`/`file`, or "
              "JSON `{\"image_base64\": …}`)")
    async def post_ocr(request: Request) -> Response:
        t0 = time.perf_counter()
        data = await _read_image(request, settings.max_bytes)
        # hashing, storage and inference block: keep them off the event loop
        done = await run_in_threadpool(service.read, data, t0)
        return answer(request, done.obj, done.result, cached=done.cached, key=done.key,
                      timings=done.timings)

    @app.get("/ocr/{digest}", summary="The stored result for an image hash, or 404")
    def get_ocr(request: Request, digest: str) -> Response:
        if not _HASH.match(digest):
            raise ApiError(422, "invalid_hash", "the hash must be 64 lowercase hex characters")
        key = service.key(digest)
        obj = _get_or_503(store, key)
        if obj is None:
            raise ApiError(404, "not_found", "no stored result for this hash")
        return answer(request, obj, json.loads(obj.body), cached=True, key=key, timings={})

    @app.get("/results/{pipe}/{name}", summary="A stored result object, as S3 serves it")
    def get_result_object(request: Request, pipe: str, name: str) -> Response:
        digest = name.removesuffix(".json")
        if not (_PIPELINE.match(pipe) and name.endswith(".json") and _HASH.match(digest)):
            raise ApiError(404, "not_found", "no such result")
        obj = _get_or_503(store, result_key(pipe, digest))
        if obj is None:
            raise ApiError(404, "not_found", "no such result")
        headers = {"ETag": obj.etag, "Cache-Control": obj.cache_control}
        if request.headers.get("if-none-match") == obj.etag:
            return Response(status_code=304, headers=headers)
        return Response(obj.body, media_type=obj.content_type, headers=headers)

    @app.get("/healthz", summary="Liveness, pipeline id and whether the models are loaded")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "pipeline": pipeline, "models_loaded": holder.loaded,
                "hmac": bool(settings.hash_secret)}

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if not page.is_file():
            return JSONResponse({"service": "edgeocr", "docs": "/docs"})
        return FileResponse(page, media_type="text/html")

    if STATIC.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _get_or_503(store: ResultStore, key: str) -> StoredObject | None:
    try:
        return store.get(key)
    except StoreError as exc:
        log.error("store get failed", extra={"key": key, "error": str(exc)})
        raise ApiError(503, "store_unavailable", "result storage is unavailable; retry") from exc


async def _read_image(request: Request, max_bytes: int) -> bytes:
    """The image bytes from a raw, multipart or base64-JSON body, size-checked early."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    b64_limit = max_bytes * 4 // 3 + 1024
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await _read_capped(request, max_bytes)
    elif ctype == "multipart/form-data":
        _check_length(request, b64_limit)
        try:
            form = await request.form(max_files=2, max_fields=10)
        except StarletteHTTPException as exc:  # Starlette's 400 for unparseable multipart
            raise ApiError(
                422, "invalid_multipart", f"malformed multipart body: {exc.detail}"
            ) from exc
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "missing_field",
                           "multipart body needs a file field named 'image' or 'file'")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TooLarge(f"the image is over {max_bytes} bytes", code="too_many_bytes")
    elif ctype == "application/json":
        raw = await _read_capped(request, b64_limit)
        try:
            body = Base64Body.model_validate_json(raw)
        except ValidationError as exc:
            raise ApiError(422, "invalid_json", _first_error(exc.errors())) from exc
        try:
            data = base64.b64decode(body.image_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(422, "bad_base64", "image_base64 is not valid base64") from exc
        if len(data) > max_bytes:
            raise TooLarge(f"the image is over {max_bytes} bytes", code="too_many_bytes")
    else:
        raise UnsupportedFormat(
            f"unsupported Content-Type {ctype or '(none)'!r}: send image/*, "
            "application/octet-stream, multipart/form-data or application/json",
            code="unsupported_media_type",
        )
    if not data:
        raise ApiError(400, "empty_body", "the request carries no image bytes")
    return data


def _check_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the request body is over {limit} bytes", code="too_many_bytes")


async def _read_capped(request: Request, limit: int) -> bytes:
    _check_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over {limit} bytes", code="too_many_bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _first_error(errors: Any) -> str:
    try:
        first = next(iter(errors))
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    except (StopIteration, TypeError, AttributeError):
        return "malformed request"
