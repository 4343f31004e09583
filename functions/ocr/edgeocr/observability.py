"""Structured logs and CloudWatch metrics (Powertools), one JSON line per request.

Logs carry a correlation id (the Lambda request id behind API Gateway, else the caller's
``X-Request-Id``, else a fresh one) and never the image bytes, the body or the HMAC secret.
Metrics go out as CloudWatch Embedded Metric Format on stdout, which Lambda ships to
CloudWatch without an API call: one ``Requests`` count per request, by outcome.
"""

from __future__ import annotations

import os
import time
import uuid

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICE = "edgeocr"
NAMESPACE = "edgeocr"
logger = Logger(service=SERVICE)


def outcome(status: int, cache: str | None, stored: str | None) -> str:
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    if stored == "false":
        return "store_failure"
    return cache or "ok"


class RequestLogMiddleware:
    """Pure ASGI middleware (streams bodies untouched): correlation id, access log, metric."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = scope.get("aws.context")
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        request_id = (getattr(context, "aws_request_id", None) or headers.get("x-request-id")
                      or uuid.uuid4().hex)[:64]
        logger.set_correlation_id(request_id)
        seen: dict[str, str | int | None] = {"status": 500, "cache": None, "stored": None}
        start = time.perf_counter()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                out = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
                seen["cache"] = out.get("x-edgeocr-cache")
                seen["stored"] = out.get("x-edgeocr-stored")
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            status = int(seen["status"] or 500)
            result = outcome(status, seen["cache"], seen["stored"])  # type: ignore[arg-type]
            logger.info("request", extra={
                "method": scope.get("method"), "path": scope.get("path"), "status": status,
                "outcome": result, "duration_ms": round((time.perf_counter() - start) * 1000, 1),
            })
            if not _metrics_disabled():
                with single_metric(name="Requests", unit=MetricUnit.Count, value=1,
                                   namespace=NAMESPACE) as metric:
                    metric.add_dimension(name="outcome", value=result)


def _metrics_disabled() -> bool:
    """Powertools' own switch; ``single_metric`` does not consult it, so we do."""
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() in {"1", "true", "yes"}
