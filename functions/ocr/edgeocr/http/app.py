"""The HTTP API (DESIGN §2): parsing, errors → status, headers, uploads, the static page.

Every route calls the service; none holds the use case. The cache-hit path never imports
ONNX Runtime or creates sessions: the pipeline id comes from the model manifest and the
module sources, and the engine is built on the first miss only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InputError, TooLarge, UnsupportedFormat
from ..keys import upload_key
from ..local_worker import LocalWorker
from ..observability import logger
from ..service import RETRYABLE_FAILURES, Answer, OcrService, Pending, StoredFailure
from ..settings import Settings
from ..store import NO_STORE, LocalStore, ResultStore, S3Store, StoredObject, StoreError
from ..wiring import build_service
from ..worker import Worker
from .origin_verify import DEFAULT_HEADER as ORIGIN_HEADER
from .origin_verify import OriginVerify
from .request_log import RequestLogMiddleware
from .site import mount_site
from .tokens import UploadSigner

log = logger

STATIC = Path(__file__).parents[1] / "static"
_HASH = re.compile(r"^[0-9a-f]{64}$")
_RESULT_PATH = re.compile(
    r"^results/[0-9a-f]{16}/[0-9a-f]{64}(\.json|/pages/[1-9][0-9]{0,5}\.json"
    r"|/thumbs/[1-9][0-9]{0,5}\.jpg)$")
UPLOAD_TTL_S = 3600  # a presigned PUT (or local token) is good for an hour
MAX_INLINE_RESULT = 5 * 1024 * 1024  # larger results: 303 to the CDN (Lambda answers ≤ 6 MB)
_STATUS = {
    "unsupported_format": 415, "unsupported_media_type": 415,
    "too_large": 413, "too_many_bytes": 413, "too_many_pixels": 413, "too_many_pages": 413,
    "encrypted_document": 422, "processing_failed": 422, "invalid_upload_token": 403,
}


def status_for(code: str) -> int:
    """The HTTP status of an input error code (also for errors the worker recorded)."""
    return _STATUS.get(code, 400)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Base64Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_base64: str


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(gt=0)
    content_type: str = Field(min_length=1, max_length=200)


def create_app(
    settings: Settings | None = None,
    store: ResultStore | None = None,
    engine_factory: Callable[[], Any] | None = None,
    service: OcrService | None = None,
) -> FastAPI:
    """The app over a service (built from ``settings`` unless given). With a directory store
    an in-process worker reads uploads, as SQS + the worker Lambda do in AWS."""
    settings = settings or Settings()
    service = service or build_service(settings, store, engine_factory)
    store, pipeline, holder = service.store, service.pipeline, service.engine
    local = None
    if isinstance(store, LocalStore) and settings.local_worker:
        local = LocalWorker(Worker(service), store)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if local is not None:
            local.start()
        try:
            yield
        finally:
            if local is not None:
                local.stop()

    app = FastAPI(title="edgeocr", version=__version__, lifespan=lifespan,
                  description="OCR with immutable, edge-cached results.")
    app.state.settings, app.state.store, app.state.engine = settings, store, holder
    app.state.service, app.state.pipeline, app.state.local_worker = service, pipeline, local
    # the last added runs first: the request log sees every answer, CORS preflights too
    app.add_middleware(HeadWithoutBody)
    if settings.cors_origins:  # preflights answered here; a plain OPTIONS is a 405 below
        app.add_middleware(JsonCorsMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "HEAD", "POST", "PUT"],
                           allow_headers=["Content-Type"],
                           expose_headers=["ETag", "Location", "X-Edgeocr-Cache"])
    # outermost but the log: a request around CloudFront is refused before any route runs,
    # and still logged and counted
    app.add_middleware(OriginVerify, header_name=ORIGIN_HEADER, secret=settings.origin_secret)
    app.add_middleware(RequestLogMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(status_for(exc.code), exc.code, exc.message)

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        log.error("store failed", extra={"error": str(exc)})
        return _error(503, "store_unavailable", "result storage is unavailable; retry")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _first_error(exc.errors()))

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client went before its body was all sent (shorter than its Content-Length):
        # its fault, not ours, though nobody is left to read this answer
        return _error(400, "incomplete_body", "the connection closed before the whole body came")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method this path answers, not one route's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def result_url(request: Request, key: str) -> str:
        return f"{settings.cdn_base_url or base_url(request)}/{key}"

    def answer(request: Request, done: Answer) -> Response:
        url = result_url(request, done.key) if done.obj is not None else None
        if done.obj is not None and len(done.obj.body) > MAX_INLINE_RESULT:
            # over what one Lambda response carries: the client reads it from the CDN
            return Response(status_code=303, headers={"Location": url or ""})
        pages = [{**page, "thumbnail_url": result_url(request, page["thumbnail"])
                  if page.get("thumbnail") and done.obj is not None else None}
                 for page in done.result.get("pages", ())]
        body = {**done.result, "pages": pages, "cached": done.cached,
                "stored": done.obj is not None, "result_url": url, "timings_ms": done.timings}
        # no ETag: the body carries per-request fields (timings, cached), so no validator
        # describes it; the stored object at result_url has S3's own
        headers = {"X-Edgeocr-Cache": "hit" if done.cached else "miss",
                   "X-Edgeocr-Stored": "true" if done.obj is not None else "false"}
        if url:
            headers["Location"] = url
        return JSONResponse(body, headers=headers)

    def pending(request: Request, job: Pending) -> Response:
        status = job.status
        body = {"status": status["status"], "pages_done": status.get("pages_done", 0),
                "pages": status.get("pages"), "status_url": f"/ocr/{job.digest}",
                "result_url": result_url(request, service.key(job.digest))}
        return JSONResponse(body, status_code=202, headers={
            "Retry-After": "2", "Cache-Control": "no-store",
            "Location": body["status_url"]})

    def respond(request: Request, outcome: Answer | Pending) -> Response:
        return answer(request, outcome) if isinstance(outcome, Answer) else pending(
            request, outcome)

    @app.post("/ocr", summary="OCR an image or a document (raw body, multipart field "
              "`image`/`file`, or JSON `{\"image_base64\": …}`)")
    async def post_ocr(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            data = await _read_image(request, settings.max_bytes)
        except TooLarge as exc:
            raise TooLarge(f"{exc.message}: send larger files with POST /uploads (up to "
                           f"{settings.max_upload_bytes} bytes)", code=exc.code) from exc
        # hashing, storage and inference block: keep them off the event loop
        return respond(request, await run_in_threadpool(service.read, data, t0))

    @app.get("/ocr/{digest}", summary="The stored result for a hash, its progress (202), "
             "its error, or 404")
    def get_ocr(request: Request, digest: str) -> Response:
        if not _HASH.match(digest):
            raise ApiError(422, "invalid_hash", "the hash must be 64 lowercase hex characters")
        found = service.find(digest)
        if found is None or (isinstance(found, Pending) and _upload_lapsed(found.status)):
            raise ApiError(404, "not_found", "no stored result for this hash")
        return respond(request, found)

    uploads = UploadSigner(settings.upload_token_secret or secrets.token_hex(32))

    @app.post("/uploads", summary="Ask to upload a large file: its result if it is read "
              "already, else where to PUT it")
    def post_uploads(request: Request, body: UploadRequest) -> Response:
        if body.bytes > settings.max_upload_bytes:
            raise TooLarge(f"the file is {body.bytes} bytes; the limit is "
                           f"{settings.max_upload_bytes}", code="too_many_bytes")
        ctype = body.content_type.split(";")[0].strip().lower()
        if not _readable_type(ctype):
            raise UnsupportedFormat(f"unsupported content_type {ctype!r}: send image/*, "
                                    "application/pdf or application/octet-stream",
                                    code="unsupported_media_type")
        digest = service.digest_of(body.sha256)
        if not settings.hash_secret:  # private mode never tells whether a file was read
            try:
                found = service.find(digest)
            except StoredFailure as exc:
                if exc.code not in RETRYABLE_FAILURES:
                    raise
                found = None
            if isinstance(found, Pending) and "upload_expires_at" in found.status:
                found = None  # granted but the bytes never came (or not yet): grant again
            if found is not None:
                return respond(request, found)
        expires = int(time.time()) + UPLOAD_TTL_S
        key = upload_key(body.sha256)
        if isinstance(store, S3Store):
            url, headers = store.presign_put(key, content_type=ctype, length=body.bytes,
                                             sha256_b64=_b64_digest(body.sha256),
                                             expires_in=UPLOAD_TTL_S)
        else:
            token = uploads.sign(body.sha256, body.bytes, ctype, expires)
            url = f"{base_url(request)}/uploads/{body.sha256}?token={token}"
            headers = {"Content-Type": ctype}
        service.set_status(digest, "queued", upload_expires_at=expires)
        return JSONResponse({
            "upload": {"method": "PUT", "url": url, "headers": headers,
                       "expires_at": _iso(expires)},
            "status_url": f"/ocr/{digest}",
            "result_url": result_url(request, service.key(digest)),
        }, status_code=201, headers={"Cache-Control": "no-store"})

    @app.put("/uploads/{sha256}", summary="The local stand-in for the presigned S3 PUT")
    async def put_upload(request: Request, sha256: str, token: str = "") -> Response:
        if isinstance(store, S3Store) or not _HASH.match(sha256):
            raise ApiError(404, "not_found", "no such upload")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = uploads.check(token, sha256, ctype)
        data = await _read_capped(request, length)
        if len(data) != length or hashlib.sha256(data).hexdigest() != sha256:
            raise ApiError(400, "checksum_mismatch",
                           "the body does not match the declared length and SHA-256")
        digest = service.digest_of(sha256)
        await run_in_threadpool(_accept_upload, service, digest, sha256, data)
        return JSONResponse({"status": "queued", "status_url": f"/ocr/{digest}"},
                            status_code=200, headers={"Cache-Control": "no-store"})

    def get_result_object(request: Request, path: str) -> Response:
        """A stored object (result, page, thumbnail), as S3 serves it."""
        key = f"results/{path}"
        if not _RESULT_PATH.match(key):
            raise ApiError(404, "not_found", "no such result")
        obj = _get_or_503(store, key)
        if obj is None:
            raise ApiError(404, "not_found", "no such result")
        headers = {"ETag": obj.etag, "Cache-Control": obj.cache_control}
        if obj.last_modified:
            headers["Last-Modified"] = obj.last_modified
        if request.headers.get("if-none-match") == obj.etag:
            return Response(status_code=304, headers=headers)
        return Response(obj.body, media_type=obj.content_type, headers=headers)

    for method in ("GET", "HEAD"):
        app.add_api_route("/results/{path:path}", get_result_object, methods=[method],
                          operation_id=f"result_object_{method.lower()}",
                          summary="A stored object (result, page, thumbnail), as S3 serves it")

    @app.get("/healthz", summary="Liveness, pipeline id and whether the models are loaded")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "pipeline": pipeline, "models_loaded": holder.loaded,
                "hmac": bool(settings.hash_secret), "max_bytes": settings.max_bytes,
                "max_upload_bytes": settings.max_upload_bytes}

    mount_site(app, STATIC, {"pipeline": pipeline, "cdn_base": settings.cdn_base_url or "",
                             "hmac": bool(settings.hash_secret), "max_bytes": settings.max_bytes,
                             "max_upload_bytes": settings.max_upload_bytes})
    _serve_head_wherever_get(app)
    return app


def _serve_head_wherever_get(app: FastAPI) -> None:
    """A HEAD route beside each GET route that has none (FastAPI adds none by itself), as its
    own route so that each method keeps its own OpenAPI operation id."""
    routes = [r for r in app.router.routes if isinstance(r, APIRoute)]
    served = {(r.path, m) for r in routes for m in r.methods}
    for route in routes:
        if "GET" in route.methods and (route.path, "HEAD") not in served:
            app.add_api_route(route.path, route.endpoint, methods=["HEAD"], name=route.name,
                              summary=route.summary, include_in_schema=route.include_in_schema,
                              operation_id=f"{route.name}_head")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at this request's path (for a 405's ``Allow``)."""
    allowed: set[str] = set()
    scope = dict(request.scope)  # as the router first saw it (a mount moves root_path on)
    scope["root_path"] = scope.get("app_root_path", scope.get("root_path", ""))
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            allowed |= getattr(route, "methods", None) or {"GET", "HEAD"}  # a mount: files
    return sorted(allowed)


class HeadWithoutBody:
    """A HEAD answer carries the GET's headers (Content-Length included) and no body, whatever
    the server underneath (uvicorn drops it; Mangum would pass it on)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def no_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, no_body)


class JsonCorsMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as our JSON error (Starlette
    answers it in plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = _error(response.status_code, "cors_not_allowed",
                         bytes(response.body).decode("latin-1"))
        for name, value in response.headers.items():
            if name not in ("content-type", "content-length"):
                refused.headers.append(name, value)
        return refused


def _accept_upload(service: OcrService, digest: str, sha256: str, data: bytes) -> None:
    """Status first, then the bytes: the bytes' "created" event starts the worker."""
    service.set_status(digest, "queued")
    service.store.put_if_absent(upload_key(sha256), data, content_type="application/octet-stream",
                                cache_control=NO_STORE)


def _upload_lapsed(status: dict[str, Any]) -> bool:
    """An upload was granted, its URL has expired and the bytes never came."""
    expires = status.get("upload_expires_at")
    return status.get("status") == "queued" and isinstance(expires, int) and (
        time.time() > expires + 60)


def _readable_type(ctype: str) -> bool:
    return ctype.startswith("image/") or ctype in ("application/pdf", "application/octet-stream")


def _b64_digest(sha256: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256)).decode()


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    if ctype.startswith("image/") or ctype in ("application/octet-stream", "application/pdf"):
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
            f"unsupported Content-Type {ctype or '(none)'!r}: send image/*, application/pdf, "
            "application/octet-stream, multipart/form-data or application/json",
            code="unsupported_media_type",
        )
    if not data:
        raise ApiError(400, "empty_body", "the request carries no image bytes")
    return data


def _check_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")  # "²".isdigit(), but int("²") fails
    if length and length.isascii() and length.isdigit() and int(length) > limit:
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


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def _first_error(errors: Any) -> str:
    try:
        first = next(iter(errors))
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    except (StopIteration, TypeError, AttributeError):
        return "malformed request"
