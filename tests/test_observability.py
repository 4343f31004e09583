"""Structured logs with request ids, EMF metrics by outcome, and nothing sensitive logged."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient

from edgeocr.http.app import create_app
from edgeocr.settings import Settings


@pytest.fixture
def client(tmp_path, engine, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    app = create_app(Settings(results_dir=tmp_path, hash_secret="topsecret-hmac-key"),
                     engine_factory=lambda: engine)
    with TestClient(app) as c:
        yield c


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.fixture
def log_stream():
    """The Powertools handler bound its stream at import; point it at a buffer for the test."""
    from edgeocr.observability import logger

    buf = io.StringIO()
    previous = logger.registered_handler.setStream(buf)
    yield buf
    logger.registered_handler.setStream(previous)


def test_logs_and_metrics_per_request(client, capfd, log_stream, eval_dir):
    data = (eval_dir / "images/peer_rapidocr_lines/text_rec.jpg").read_bytes()
    miss = client.post("/ocr", content=data, headers={"Content-Type": "image/jpeg",
                                                       "X-Request-Id": "req-123"})
    hit = client.post("/ocr", json={"image_base64": base64.b64encode(data).decode()})
    bad = client.post("/ocr", content=b"nope", headers={"Content-Type": "image/png"})
    assert (miss.status_code, hit.status_code, bad.status_code) == (200, 200, 415)
    assert miss.headers["x-request-id"] == "req-123"

    out = capfd.readouterr()
    text = out.out + out.err + log_stream.getvalue()
    records = json_lines(text)
    access = [r for r in records if r.get("message") == "request"]
    assert [r["outcome"] for r in access] == ["miss", "hit", "client_error"]
    assert access[0]["correlation_id"] == "req-123"
    assert all(r["service"] == "edgeocr" and r["level"] == "INFO" for r in access)
    assert len({r["correlation_id"] for r in access}) == 3

    emf = [r for r in records if "_aws" in r]
    assert [r["outcome"] for r in emf] == ["miss", "hit", "client_error"]
    assert all(r["Requests"] == [1.0] or r["Requests"] == 1.0 for r in emf)
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "edgeocr"

    # no image bytes, no base64 of them, no secret anywhere in the output
    assert "topsecret-hmac-key" not in text
    assert base64.b64encode(data[:48]).decode() not in text
    assert data[:16].decode("latin-1") not in text
