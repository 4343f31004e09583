"""`edgeocr ocr --json FILE...` as DESIGN §2 specifies: one object per file and line, in input
order, failures on their own line and a non-zero exit at the end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEOCR = Path(sys.executable).parent / "edgeocr"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EDGEOCR), *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def test_json_lines_in_order_with_per_file_errors(eval_dir, tmp_path):
    line = eval_dir / "images/peer_rapidocr_lines/text_rec.jpg"
    page = eval_dir / "images/en_pages_tesseract/phototest.tif"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    missing = tmp_path / "missing.jpg"

    proc = run("ocr", "--json", str(line), str(broken), str(page), str(missing))
    assert proc.returncode != 0
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(line), str(broken), str(page), str(missing)]

    first, bad, third, gone = rows
    assert first["text"] == "韩国小馆"
    assert first["hash"] == hashlib.sha256(line.read_bytes()).hexdigest()
    assert first["schema"] == "edgeocr.result/2" and len(first["pipeline"]) == 16
    assert first["document"] == {"format": "jpeg", "bytes": line.stat().st_size, "pages": 1}
    assert first["pages"][0]["text"] == "韩国小馆" and first["pages"][0]["thumbnail"] is None
    assert bad["error"]["code"] == "corrupt_image" and "text" not in bad
    assert third["text"].startswith("This is a lot of 12 point text")
    assert third["document"]["format"] == "tiff"
    assert gone["error"]["code"] == "unreadable_file"


def test_plain_text_output_and_success_exit(eval_dir):
    proc = run("ocr", str(eval_dir / "images/peer_rapidocr_lines/text_rec.jpg"))
    assert proc.returncode == 0
    assert proc.stdout.strip() == "韩国小馆"
