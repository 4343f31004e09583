"""Content-addressed keys: who may derive a key, and where a result lives."""

from __future__ import annotations

import hashlib
import hmac
import json

from .ocr.models import MODEL_NAMES, ModelSet
from .settings import EngineSettings

SCHEMA = "edgeocr.result/1"


def content_hash(data: bytes, secret: str | None = None) -> str:
    """SHA-256 of the exact bytes, or HMAC-SHA256 when a secret is configured so that nobody
    without the secret can derive (and probe for) the key of an image."""
    if secret:
        return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def pipeline_id(models: ModelSet, engine: EngineSettings) -> str:
    """A short digest over everything that can change a result: model checksums, the
    result-affecting settings and the schema. New models or settings mean new keys."""
    material = json.dumps(
        {"schema": SCHEMA, "models": models.sha256, "names": MODEL_NAMES,
         "engine": engine.fingerprint()},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def result_key(pipeline: str, digest: str) -> str:
    return f"results/{pipeline}/{digest}.json"
