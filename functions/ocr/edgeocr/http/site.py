"""The web page, its assets and its config, shaped to be served from the edge.

- Assets get fingerprinted names (``/static/app.<digest>.js``) and one-year immutable
  caching: a new build means new names, never a stale script.
- The page and ``/config.json`` carry what the browser needs to find a stored result on the
  CDN by itself (the pipeline id of the function that is running, the CDN base, HMAC mode):
  they are cacheable for ``PAGE_TTL_S``, so an edge location asks the function for them at
  most once per TTL, and a second device that picks a file already read makes no request
  that reaches a Lambda. Nothing is published at build time: the running function's
  pipeline id is always the one the page carries.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

PAGE_TTL_S = 60
IMMUTABLE = "public, max-age=31536000, immutable"
PAGE_CACHE = f"public, max-age={PAGE_TTL_S}"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8"}
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           b'<rect width="16" height="16" rx="3" fill="#1d4ed8"/></svg>')
_ASSET_REF = re.compile(r'"/static/([A-Za-z0-9_-]+)\.(js|css)"')


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def fingerprinted(name: str, body: bytes) -> str:
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"


def mount_site(app: FastAPI, static: Path, config: dict) -> None:
    """Routes for ``/``, ``/config.json``, ``/static/*`` and ``/favicon.ico``."""
    assets: dict[str, Asset] = {}
    names: dict[str, str] = {}
    for path in sorted(static.glob("*")) if static.is_dir() else []:
        if path.suffix in (".js", ".css"):
            body = path.read_bytes()
            names[path.name] = fingerprinted(path.name, body)
            assets[names[path.name]] = Asset(body, _TYPES[path.suffix])
    config_json = json.dumps(config, separators=(",", ":"))
    page = _page(static / "index.html", names, config_json)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        if page is None:
            return JSONResponse({"service": "edgeocr", "docs": "/docs"})
        return Response(page, media_type=_TYPES[".html"],
                        headers={"Cache-Control": PAGE_CACHE})

    @app.get("/config.json", include_in_schema=False)
    def site_config() -> Response:
        return Response(config_json, media_type="application/json",
                        headers={"Cache-Control": PAGE_CACHE})

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name in assets:
            found = assets[name]
            return Response(found.body, media_type=found.content_type,
                            headers={"Cache-Control": IMMUTABLE})
        if name in names:  # the plain name still works, briefly cached: it can change
            found = assets[names[name]]
            return Response(found.body, media_type=found.content_type,
                            headers={"Cache-Control": PAGE_CACHE})
        return JSONResponse({"error": {"code": "not_found", "message": "no such asset"}},
                            status_code=404)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # browsers ask for it whatever the page says: answer once, cacheable at the edge
        return Response(FAVICON, media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


def _page(path: Path, names: dict[str, str], config_json: str) -> bytes | None:
    if not path.is_file():
        return None
    html = path.read_text(encoding="utf-8")
    def swap(m: re.Match[str]) -> str:
        name = f"{m[1]}.{m[2]}"
        return f'"/static/{names.get(name, name)}"'

    html = _ASSET_REF.sub(swap, html)
    safe = config_json.replace("<", "\\u003c")  # never closes the script element
    html = html.replace("<!--CONFIG-->", f'<script id="edgeocr-config" type="application/json">'
                                         f"{safe}</script>")
    return html.encode()
