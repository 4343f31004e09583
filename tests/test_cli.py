"""`edgeocr ocr --json FILE...` as DESIGN §2 specifies: one object per file and line, in input
order, failures on their own line and a non-zero exit at the end."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
import time
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


PAGES = [f"images/zh_pages_synth/zhsyn_dev_page_0{i}.jpg" for i in range(3)]


def documents(eval_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    from helpers import pdf_of

    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(pdf_of(*(eval_dir / p for p in PAGES)))
    tif = tmp_path / "scan.tif"
    first, *rest = [Image.open(eval_dir / p).convert("L") for p in PAGES[:2]]
    first.save(tif, save_all=True, append_images=rest, compression="tiff_lzw")
    return pdf, tif


def test_documents_print_one_result_per_file(eval_dir, tmp_path):
    pdf, tif = documents(eval_dir, tmp_path)
    proc = run("ocr", "--json", str(pdf), str(tif))
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(x) for x in proc.stdout.splitlines())
    assert first["file"] == str(pdf) and second["file"] == str(tif)
    assert first["document"] == {"format": "pdf", "bytes": pdf.stat().st_size, "pages": 3}
    assert [p["page"] for p in first["pages"]] == [1, 2, 3]
    assert all(p["dpi"] and p["points"] for p in first["pages"])
    assert first["text"] == "\f".join(p["text"] for p in first["pages"])
    assert second["document"]["format"] == "tiff" and len(second["pages"]) == 2
    assert "page" not in proc.stderr  # stderr is a pipe here: no progress
    # the TIFF's pages read as the PDF's first two (same images, other containers)
    for a, b in zip(first["pages"][:2], second["pages"], strict=True):
        assert a["text"].replace(" ", "") == b["text"].replace(" ", "") or bow_f1(
            a["text"], b["text"]) >= 0.95


def bow_f1(a: str, b: str) -> float:
    from scoring import bow_count

    return bow_count(a, b).f1


def test_progress_on_a_terminal(eval_dir, tmp_path):
    pdf, _ = documents(eval_dir, tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(EDGEOCR), "ocr", str(pdf)], stdout=subprocess.PIPE,
                            stderr=slave, cwd=ROOT)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    assert proc.returncode == 0
    shown = seen.decode(errors="replace")
    assert f"{pdf}: page 1/3" in shown and f"{pdf}: page 3/3" in shown
    assert "page" not in out.decode()  # progress never mixes into the results


def test_a_closed_pipe_and_ctrl_c_end_quietly(eval_dir, tmp_path):
    line = str(eval_dir / "images/peer_rapidocr_lines/text_rec.jpg")
    # `edgeocr ocr … | head -1`: the reader leaves after one line
    proc = subprocess.run(f"{EDGEOCR} ocr --json {line} {line} {line} | head -c 10",
                          shell=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    pdf, _ = documents(eval_dir, tmp_path)
    child = subprocess.Popen([str(EDGEOCR), "ocr", str(pdf), str(pdf), str(pdf)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    time.sleep(3)  # models loading or reading
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert b"Traceback" not in err, err.decode()[-2000:]
