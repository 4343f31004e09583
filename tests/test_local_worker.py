"""`make serve`'s embedded defaults as a real process: uploads and progress on disk, and a
server killed mid-document finishes it after a restart, with no page lost or redone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import httpx

from helpers import pdf_of
from servers import edgeocr_process, free_port

PAGES = [f"images/zh_pages_synth/zhsyn_dev_page_{i:02d}.jpg" for i in range(8)]


def test_restart_resumes_an_unfinished_document(tmp_path, eval_dir):
    doc = pdf_of(*(eval_dir / p for p in PAGES))
    sha = hashlib.sha256(doc).hexdigest()
    results, log = tmp_path / "results", tmp_path / "serve.log"
    port = free_port()
    with edgeocr_process(results, log, port) as (url, proc):
        offer = httpx.post(f"{url}/uploads", json={"sha256": sha, "bytes": len(doc),
                                                   "content_type": "application/pdf"}).json()
        up = offer["upload"]
        assert httpx.put(up["url"], content=doc, headers=up["headers"]).status_code == 200
        deadline = time.monotonic() + 120
        while True:
            status = httpx.get(f"{url}{offer['status_url']}")
            assert status.status_code == 202, status.text
            if status.json()["pages_done"] >= 2:
                break
            assert time.monotonic() < deadline, status.text
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-document: no chance to clean up
        proc.wait()
    pipeline = offer["result_url"].rsplit("/", 2)[-2]
    pages_dir = results / "results" / pipeline / sha / "pages"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in pages_dir.iterdir()
              if not p.name.startswith(".")}
    assert 2 <= len(before) < len(PAGES), before
    assert not (results / "results" / pipeline / f"{sha}.json").exists()

    with edgeocr_process(results, log, port) as (url, _proc):
        deadline = time.monotonic() + 180
        while (got := httpx.get(f"{url}{offer['status_url']}")).status_code == 202:
            assert time.monotonic() < deadline, got.text
            time.sleep(0.2)
        assert got.status_code == 200, got.text
        result = got.json()
    assert [p["page"] for p in result["pages"]] == list(range(1, len(PAGES) + 1))
    assert all(p["text"] for p in result["pages"])
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in pages_dir.iterdir()
             if not p.name.startswith(".")}
    assert {k: after[k] for k in before} == before  # stored pages were never rewritten
    assert len(after) == len(PAGES)
    stored = json.loads((pages_dir / "1.json").read_text())
    assert stored == {k: v for k, v in result["pages"][0].items() if k != "thumbnail_url"}
