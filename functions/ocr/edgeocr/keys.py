"""Content-addressed keys: who may derive a key, and where each object of a result lives."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
from functools import cache
from importlib import metadata
from pathlib import Path

from .domain import SCHEMA
from .ocr.config import EngineSettings
from .ocr.models import MODEL_NAMES, ModelSet

_PACKAGE = Path(__file__).resolve().parent
# Everything that computes a result: the engine package, the schema, the page → result code.
OCR_PATH = ("ocr", "domain.py", "reader.py")
# The libraries that compute it (versions from package metadata: nothing heavy is imported).
OCR_LIBRARIES = ("onnxruntime", "opencv-python-headless", "numpy", "pillow", "pypdfium2")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(data: bytes, secret: str | None = None) -> str:
    """The result's hash for these bytes (see ``key_hash``)."""
    return key_hash(sha256_hex(data), secret)


def key_hash(sha256: str, secret: str | None = None) -> str:
    """The SHA-256 itself, or HMAC(secret, SHA-256) in private mode: the server can derive it
    from the SHA-256 a client declares, nobody without the secret can."""
    if secret:
        return hmac.new(secret.encode(), sha256.encode(), hashlib.sha256).hexdigest()
    return sha256


def pipeline_id(models: ModelSet, engine: EngineSettings, extra: dict | None = None, *,
                sources: str | None = None, libraries: dict[str, str] | None = None) -> str:
    """A short digest over everything that can change a result: model checksums, the
    result-affecting settings, the schema, the OCR-path sources and library versions. Any
    change means new keys, so an immutable key never serves a stale result."""
    material = json.dumps(
        {"schema": SCHEMA, "models": models.sha256, "names": MODEL_NAMES,
         "engine": engine.fingerprint(), "settings": extra or {},
         "sources": sources if sources is not None else source_digest(),
         "libraries": libraries if libraries is not None else library_versions()},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@cache
def source_digest(root: Path = _PACKAGE, parts: tuple[str, ...] = OCR_PATH) -> str:
    """SHA-256 over the syntax trees of the OCR-path modules, docstrings left out: a changed
    line of code changes it, a comment or docstring edit does not (so it costs no user a
    recomputation). The trees are written out field by field, leaving out empty fields, so
    that Python 3.11 (the venv) and 3.12 (Lambda), whose trees differ only in fields new in
    3.12 that are empty here, give the same digest."""
    files: list[Path] = []
    for part in parts:
        path = root / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(_normalised_source(path.read_text(encoding="utf-8")).encode() + b"\0")
    return h.hexdigest()


def _normalised_source(text: str) -> str:
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant
            ) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return _dump(tree)


def _dump(node: object) -> str:
    if isinstance(node, ast.AST):
        fields = [f"{name}={_dump(value)}" for name, value in ast.iter_fields(node)
                  if value not in (None, [])]
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_dump(item) for item in node) + "]"
    return repr(node)


@cache
def library_versions(names: tuple[str, ...] = OCR_LIBRARIES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def result_key(pipeline: str, digest: str) -> str:
    return f"results/{pipeline}/{digest}.json"


def page_key(pipeline: str, digest: str, page: int) -> str:
    return f"results/{pipeline}/{digest}/pages/{page}.json"


def thumb_key(pipeline: str, digest: str, page: int) -> str:
    return f"results/{pipeline}/{digest}/thumbs/{page}.jpg"


def status_key(pipeline: str, digest: str) -> str:
    return f"status/{pipeline}/{digest}.json"


def upload_key(sha256: str) -> str:
    return f"uploads/{sha256}"
