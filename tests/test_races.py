"""32 concurrent identical requests through the app, S3 on a moto server over real HTTP:
one stored object, one inference, the same text in every answer, no 5xx."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
from fastapi.testclient import TestClient

from edgeocr.http.app import create_app
from edgeocr.settings import Settings
from helpers import CountingEngine


def test_32_identical_concurrent_requests(s3_env, engine, eval_dir):
    counting = CountingEngine(engine)
    # 32 requests at once on 2 shared cores: moto answers slower than S3 does, so the
    # store gets more time than the Lambda defaults give it
    app = create_app(Settings(results_bucket=s3_env, s3_read_timeout=10, s3_attempts=4),
                     engine_factory=lambda: counting)
    data = (eval_dir / "images/peer_rapidocr_lines/en_rec.jpg").read_bytes()
    with TestClient(app) as client, ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(
            lambda _: client.post("/ocr", content=data, headers={"Content-Type": "image/jpeg"}),
            range(32),
        ))
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    bodies = [r.json() for r in responses]
    assert len({b["text"] for b in bodies}) == 1 and bodies[0]["text"].startswith("To facilitate")
    assert all(b["stored"] for b in bodies)
    assert sum(not b["cached"] for b in bodies) == 1
    assert counting.calls == 1
    listing = boto3.client("s3").list_objects_v2(Bucket=s3_env)
    keys = sorted(o["Key"] for o in listing["Contents"])
    assert len(keys) == 2 and keys[0].endswith(".json") and keys[1].endswith("/thumbs/1.jpg")
