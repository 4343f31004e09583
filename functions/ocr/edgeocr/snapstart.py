"""SnapStart runtime hooks for the API function (``snapshot-restore-py``).

With SnapStart (infra/template.yaml: ``SnapStart: ApplyOn: PublishedVersions`` on the
``live`` alias) Lambda runs the init once when a version is published, snapshots the
microVM, and resumes every later cold start from that snapshot. So:

- **before the snapshot** (:func:`before_checkpoint`): do now what a first request would
  otherwise pay for, so that it is in the snapshot: import the modules of the cache-hit path
  (the store's botocore exceptions and parsers, the service, JSON), build the engine (the three
  ONNX Runtime sessions, ~0.3 GB, about a second), and read one small generated line with
  it, so that detection, classification and recognition have each run once (their first-run
  allocations and OpenCV's lazy initialisation are in the snapshot too). No network call: nothing
  is fetched, signed or stored, and no credentials are cached in the snapshot.
- **after restore** (:func:`after_restore`, which must finish within Lambda's 10 s): re-seed
  what must differ between execution environments resumed from one snapshot. What exists in
  this process:

  - ``random``'s Mersenne Twister, seeded from ``os.urandom`` once at import: every restored
    environment would draw the same sequence. Re-seeded here. (numpy's legacy global
    generator likewise, when numpy is loaded; the engine itself draws no random numbers.)
  - ``secrets``, ``os.urandom`` and ``uuid.uuid4`` (the request-id fallback in
    observability.py) read the kernel's CSPRNG on every call and keep no state of their
    own, so they stay unique after a restore; nothing to do.
  - the local upload-token secret (``secrets.token_hex(32)`` in ``create_app``, when
    ``OCR_UPLOAD_TOKEN_SECRET`` is unset) is drawn once at init, so it is the same in every
    restored environment. In AWS it is never used (POST /uploads presigns S3 PUTs, and the
    local ``PUT /uploads/{sha256}`` answers 404 with the S3 store), so it is harmless there;
    an entry point that wants it fresh anyway passes a re-keying callable in ``also``.
  - the boto3 S3 client made at init: its pooled connections may be dead after a restore
    (botocore retries a reset connection, standard mode), and its credentials come from
    the Lambda container credentials endpoint, refreshed as they expire.

:func:`register` registers both hooks when ``snapshot_restore_py`` is importable (the Lambda
bundle pins it; the managed runtime ships it as well) and does nothing otherwise (local runs,
tests), so this module always imports cleanly.
"""

from __future__ import annotations

import importlib
import logging
import random
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# The modules a cache hit (GET /ocr/{hash}, a repeated POST /ocr) runs through, beyond what
# importing the app already pulls in.
HIT_PATH_MODULES = (
    "json",
    "botocore.exceptions",
    "botocore.parsers",
    "botocore.response",
    "edgeocr.keys",
    "edgeocr.service",
    "edgeocr.store",
)


def warm_image() -> bytes:
    """A small PNG of one printed line, so that detection, classification and recognition
    all run once (Pillow's bundled font: no font file needed)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (480, 96), 255)
    try:
        font = ImageFont.load_default(size=40)
    except (TypeError, OSError):  # a Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(img).text((16, 24), "edgeocr 1234", fill=0, font=font)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def before_checkpoint(service: Any) -> dict[str, Any]:
    """Import the hit path and build (and exercise) the engine of ``service``, an
    ``OcrService``; returns what it did, for the log and for tests."""
    done: dict[str, Any] = {"imported": [], "engine": False, "warm_lines": None}
    for name in HIT_PATH_MODULES:
        try:
            importlib.import_module(name)
            done["imported"].append(name)
        except ImportError:  # botocore is absent in some local setups
            pass
    engine = service.engine.get()
    done["engine"] = True
    ocr = getattr(engine, "ocr", None)
    if callable(ocr):
        try:
            done["warm_lines"] = len(ocr(warm_image()).lines)
        except Exception as exc:  # a warm-up failure must not stop the snapshot
            log.warning("snapstart warm-up inference failed: %s", exc)
    return done


def after_restore(also: Iterable[Callable[[], Any]] = ()) -> None:
    """Re-seed per-process randomness (see the module docstring), then run ``also``."""
    random.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed()
    for fn in also:
        fn()


def register(service: Any, also: Iterable[Callable[[], Any]] = ()) -> bool:
    """Register both hooks with ``snapshot_restore_py``; False (and nothing registered) when
    the package is not installed."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_checkpoint, service)
    register_after_restore(after_restore, tuple(also))
    return True
