"""Refuse requests that did not come through CloudFront (the origin-verify header).

In AWS, CloudFront adds ``X-Origin-Verify: <secret>`` to every request it sends to the HTTP
API (an origin custom header; a viewer's header of that name is overwritten), and the function
gets the same secret as ``OCR_ORIGIN_SECRET``. A request without it, or with another value,
came to the execute-api URL directly, around the CDN's caching and edge checks: it gets 403
``{"error": {"code": "forbidden", ...}}`` before any route runs. Locally there is no secret
(``None``) and the middleware passes everything through unchanged.

Pure ASGI (no Starlette request object), so it neither buffers nor touches bodies, and the
comparison is constant-time.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_HEADER = "x-origin-verify"


class OriginVerify:
    """``OriginVerify(app, header_name, secret)``: off when ``secret`` is None or empty."""

    def __init__(self, app: ASGIApp, header_name: str = DEFAULT_HEADER,
                 secret: str | None = None) -> None:
        self.app = app
        self.header = header_name.lower().encode("latin-1")
        self.secret = secret.encode() if secret else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.secret is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", ()) if k.lower() == self.header]
        # Exactly one value, equal to the secret: a repeated header is not CloudFront's.
        if len(values) == 1 and hmac.compare_digest(values[0], self.secret):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {
            "code": "forbidden",
            "message": "requests must come through the CDN; use its URL, not the API's own",
        }}).encode()
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body})
