"""One JSON access-log line and one CloudWatch metric per request (Powertools).

The correlation id is the Lambda request id behind API Gateway, else the caller's
``X-Request-Id`` when it is a short run of visible ASCII, else a fresh one. Headers are read
through Starlette's ``Headers`` (Latin-1, as HTTP allows any byte 0x80-0xFF in a field value),
never decoded by hand: a header no client should send is still one the server must answer,
not a 500. Metrics go out as CloudWatch Embedded Metric Format on stdout, which Lambda ships
to CloudWatch without an API call: one ``Requests`` count per request, by outcome.
"""

from __future__ import annotations

import os
import re
import time
import uuid

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..observability import NAMESPACE, logger

# a caller's request id is echoed into a response header and every log line: visible ASCII
# only (no spaces, controls or bytes over 0x7E), at most 64 characters, else a fresh id
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


def request_id_for(caller: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is safe to echo and log as it is, else a new one."""
    if caller is not None and _REQUEST_ID.fullmatch(caller):
        return caller
    return uuid.uuid4().hex


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
        request_id = getattr(context, "aws_request_id", None) or request_id_for(
            Headers(raw=list(scope.get("headers", ()))).get("x-request-id"))
        logger.set_correlation_id(request_id)
        seen: dict[str, str | int | None] = {"status": 500, "cache": None, "stored": None}
        start = time.perf_counter()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message.setdefault("headers", [])
                out = MutableHeaders(scope=message)  # edits message["headers"] in place
                seen["cache"] = out.get("x-edgeocr-cache")
                seen["stored"] = out.get("x-edgeocr-stored")
                out.append("x-request-id", request_id)
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
