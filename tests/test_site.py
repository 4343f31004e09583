"""The page, its config and assets are shaped for the edge (issue 9 part 2): fingerprinted
immutable assets, a page and config cacheable for a minute that carry the running pipeline."""

from __future__ import annotations

import hashlib
import json
import re

from fastapi.testclient import TestClient

from edgeocr.http.app import STATIC, create_app
from edgeocr.settings import Settings


def refuse():
    raise AssertionError("the page never needs the engine")


def test_page_config_and_assets(tmp_path):
    app = create_app(Settings(results_dir=tmp_path, cdn_base_url="https://cdn.example"),
                     engine_factory=refuse)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["cache-control"] == "public, max-age=60"
        html = page.text
        config = json.loads(re.search(
            r'<script id="edgeocr-config" type="application/json">(.*?)</script>', html)[1])
        assert config == {"pipeline": app.state.pipeline, "cdn_base": "https://cdn.example",
                          "hmac": False, "max_bytes": app.state.settings.max_bytes,
                          "max_upload_bytes": app.state.settings.max_upload_bytes}
        assert client.get("/config.json").json() == config
        assert client.get("/config.json").headers["cache-control"] == "public, max-age=60"
        for name in ("app.js", "style.css"):
            body = (STATIC / name).read_bytes()
            stem, ext = name.split(".")
            fingerprinted = f"/static/{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"
            assert f'"{fingerprinted}"' in html and f'"/static/{name}"' not in html
            asset = client.get(fingerprinted)
            assert asset.content == body
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
            plain = client.get(f"/static/{name}")
            assert plain.content == body and "immutable" not in plain.headers["cache-control"]
        assert client.get("/static/nope.js").status_code == 404
        icon = client.get("/favicon.ico")
        assert icon.status_code == 200 and "max-age" in icon.headers["cache-control"]
        assert app.state.engine.loaded is False


def test_config_cannot_close_the_script_element(tmp_path):
    app = create_app(Settings(results_dir=tmp_path, cdn_base_url="https://x/</script><b>"),
                     engine_factory=refuse)
    with TestClient(app) as client:
        html = client.get("/").text
    assert "</script><b>" not in html and "\\u003c/script>" in html
