"""scripts/invoke.py, the stand-in for `sam local invoke` (Docker does not run here).

- The Runtime API server alone, over real HTTP (fast).
- The script's helpers: SAM's stdout format, /opt mapping, reading the built template.
- The script on tiny hand-made artifacts under CPython 3.12 + awslambdaric: environment and
  paths as Lambda lays them out, several events in one process, function/init errors, and a
  timeout that kills the runtime's whole process group (a few seconds).
- End to end on what `make sam-build` made: a receipt POSTed twice and fetched by hash in one
  execution environment (miss, hit, 200), the result stored in a moto bucket the test reads.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType

import boto3
import pytest

from scoring import bow_count

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "invoke.py"
EVENTS = ROOT / "tests" / "events"
BUILD_DIR = ROOT / ".aws-sam" / "build"
RECEIPT_ID = "sroie_X51008123476"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgeocr_invoke", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


inv = _load_script()


# ------------------------------------------------------------------ the Runtime API server


def _request(address: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://{address}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


NEXT = "/2018-06-01/runtime/invocation/next"


def test_runtime_api_long_polls_then_takes_the_response():
    arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    with inv.RuntimeAPI(arn) as api:
        got: dict = {}
        poller = threading.Thread(target=lambda: got.update(r=_request(api.address, "GET", NEXT)))
        poller.start()
        time.sleep(0.2)
        assert poller.is_alive(), "GET /next must wait for an event"
        invocation = api.submit(b'{"hello": "world"}', timeout_s=30)
        poller.join(10)
        status, headers, body = got["r"]
        assert status == 200 and json.loads(body) == {"hello": "world"}
        assert headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
        assert headers["Lambda-Runtime-Invoked-Function-Arn"] == arn
        assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
        deadline = int(headers["Lambda-Runtime-Deadline-Ms"])
        assert 25_000 < deadline - time.time() * 1000 <= 30_000

        path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/response"
        assert _request(api.address, "POST", path, b'{"ok": true}')[0] == 202
        assert api.wait(invocation, 5) == "done"
        assert invocation.outcome == "response" and invocation.payload == b'{"ok": true}'
        assert invocation.submitted <= invocation.dispatched <= invocation.finished
        assert api.first_poll is not None
        # A second answer to the same request, or one to a request never made, is refused.
        assert _request(api.address, "POST", path, b"{}")[0] == 400
        assert _request(api.address, "POST", f"/2018-06-01/runtime/invocation/{uuid.uuid4()}"
                        "/response", b"{}")[0] == 400


def test_runtime_api_errors_and_chunked_bodies():
    with inv.RuntimeAPI("arn:aws:lambda:us-east-1:123456789012:function:f") as api:
        first = api.submit(b"{}", timeout_s=30)
        rid = _request(api.address, "GET", NEXT)[1]["Lambda-Runtime-Aws-Request-Id"]
        # libcurl may send a body chunked; the server must read it whole.
        conn = http.client.HTTPConnection(api.address, timeout=10)
        conn.request("POST", f"/2018-06-01/runtime/invocation/{rid}/error",
                     body=iter([b'{"errorType": ', b'"ValueError"}']),
                     headers={"Lambda-Runtime-Function-Error-Type": "ValueError"},
                     encode_chunked=True)
        assert conn.getresponse().status == 202
        assert api.wait(first, 5) == "done"
        assert first.outcome == "error" and first.error_type == "ValueError"
        assert json.loads(first.payload) == {"errorType": "ValueError"}

        second = api.submit(b"{}", timeout_s=30)
        assert api.wait(second, 0.2) == "timeout"  # nobody fetched it
        assert _request(api.address, "POST", "/2018-06-01/runtime/init/error", b'{"e": 1}',
                        {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportError"})[0] == 202
        assert api.wait(second, 5) == "init_error"
        assert api.init_error == ("Runtime.ImportError", b'{"e": 1}')
        assert api.wait(second, 5, alive=lambda: False) == "init_error"
        assert _request(api.address, "GET", "/nope")[0] == 404


# ------------------------------------------------------------------------------ helpers


def test_sam_format_is_what_sam_local_invoke_prints():
    payload = json.dumps({"statusCode": 200, "body": "ünï", "x": [1, 2]},
                         separators=(",", ":")).encode()
    # samcli/local/docker/container.py: json.dumps(json.loads(resp.content), ensure_ascii=False)
    assert inv.sam_format(payload) == '{"statusCode": 200, "body": "ünï", "x": [1, 2]}'
    assert inv.sam_format(b"not json") == "not json"


def test_opt_paths_point_at_the_layer_that_has_them(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    (a / "model").mkdir(parents=True)
    (b / "model").mkdir(parents=True)
    (b / "bin").mkdir()
    assert inv.map_opt("/opt/model", [a, b]) == str(b / "model")  # later layers win in /opt
    assert inv.map_opt("/opt/bin", [a, b]) == str(b / "bin")
    assert inv.map_opt("/opt/missing", [a, b]) == "/opt/missing"
    assert inv.map_opt("/optional", [a, b]) == "/optional"


def test_function_config_from_the_built_template(tmp_path):
    (tmp_path / "template.yaml").write_text(textwrap.dedent("""\
        Parameters:
          Threads: {Type: Number, Default: 2}
        Globals:
          Function:
            Environment:
              Variables: {FROM_GLOBALS: g}
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              Handler: app.handler
              MemorySize: 1024
              Layers: [!Ref Models, "arn:aws:lambda:us-east-1:1:layer:x:1"]
              Environment:
                Variables:
                  OCR_MODEL_DIR: /opt/model
                  OCR_THREADS: !Ref Threads
                  CDN_BASE_URL: !Sub "https://${Distribution.DomainName}"
                  FLAG: true
          Models: {Type: AWS::Serverless::LayerVersion}
        """))
    config = inv.load_function_config(tmp_path, "Fn")
    assert config.handler == "app.handler" and config.memory_mb == 1024
    assert config.layers == ["Models"]
    assert config.env == {"FROM_GLOBALS": "g", "OCR_MODEL_DIR": "/opt/model",
                          "OCR_THREADS": "2", "FLAG": "true"}
    # No built template (an artifact assembled by hand): the template's defaults.
    bare = inv.load_function_config(tmp_path / "elsewhere", "OcrFunction")
    assert bare.layers == ["ModelLayer"] and bare.env == {"OCR_MODEL_DIR": "/opt/model"}


def test_a_broken_python312_setting_is_an_error(monkeypatch):
    monkeypatch.setenv("PYTHON312", sys.executable if sys.version_info[:2] != (3, 12)
                       else "/nonexistent/python3.12")
    with pytest.raises(inv.UsageError, match=r"not a working CPython 3\.12"):
        inv.find_python312()


def test_missing_build_says_how_to_make_it(tmp_path):
    proc = _run_script(["-e", str(EVENTS / "get_by_hash.json"), "--build-dir", str(tmp_path)])
    assert proc.returncode == 2
    assert "run `make sam-build` first" in proc.stderr
    assert proc.stdout == ""


# ------------------------------------------------------ the script on hand-made artifacts


@pytest.fixture(scope="session")
def python312() -> str:
    try:
        return inv.find_python312()
    except inv.UsageError as exc:
        pytest.skip(f"needs CPython 3.12 to run the python3.12 function: {exc}")


def _run_script(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


FAKE_APP = """\
import json, os, subprocess, sys, time
import layer_helper  # from the layer's python/ dir
if os.environ.get("FAIL_AT_INIT"):
    raise RuntimeError("broken at import")
CALLS = 0

def handler(event, context):
    global CALLS
    CALLS += 1
    print(f"log line {CALLS}", file=sys.stderr)
    if event.get("raise"):
        raise ValueError("asked to fail")
    if event.get("hang"):
        child = subprocess.Popen(["sleep", "300"])
        with open(os.environ["PIDFILE"], "w") as fh:
            fh.write(f"{os.getpid()} {child.pid}")
        time.sleep(300)
    if event.get("s3"):
        import boto3
        s3 = boto3.client("s3")
        s3.put_object(Bucket=os.environ["RESULTS_BUCKET"], Key="k", Body=b"v")
        assert s3.get_object(Bucket=os.environ["RESULTS_BUCKET"], Key="k")["Body"].read() == b"v"
    return {"calls": CALLS, "pid": os.getpid(), "event": event, "sys_path": sys.path,
            "env": {k: v for k, v in os.environ.items()}, "helper": layer_helper.NAME,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "request_id": context.aws_request_id, "arn": context.invoked_function_arn}
"""


@pytest.fixture
def fake_build(tmp_path: Path) -> Path:
    """A build dir laid out like `sam build`'s: Fake/ (function) and Models/ (layer)."""
    build = tmp_path / "build"
    (build / "Fake").mkdir(parents=True)
    (build / "Fake" / "app.py").write_text(FAKE_APP)
    (build / "Models" / "python").mkdir(parents=True)
    (build / "Models" / "python" / "layer_helper.py").write_text('NAME = "layer"\n')
    (build / "Models" / "model").mkdir()
    return build


def _events(tmp_path: Path, *events: dict) -> list[str]:
    paths = []
    for i, event in enumerate(events):
        path = tmp_path / f"event{i}.json"
        path.write_text(json.dumps(event))
        paths += ["-e", str(path)]
    return paths


def _fake_args(build: Path, *extra: str, s3: bool = False) -> list[str]:
    """Args for the hand-made build; without `s3`, a dead endpoint instead of a moto server."""
    no_s3 = [] if s3 else ["--s3-endpoint", "http://127.0.0.1:9", "--bucket", "unused"]
    return ["--build-dir", str(build), "--function", "Fake", "--layer", "Models", *no_s3,
            *extra]


def test_fake_function_sees_a_lambda_environment(python312, fake_build, tmp_path):
    report = tmp_path / "report.json"
    proc = _run_script([*_events(tmp_path, {"n": 1}, {"n": 2, "s3": True}),
                        *_fake_args(fake_build, "--env", "EXTRA=1", "--report", str(report),
                                   s3=True)],
                       timeout=300)
    assert proc.returncode == 0, proc.stderr
    # Exactly SAM's stdout: each payload as json.dumps prints it; no newline after the last.
    lines = proc.stdout.split("\n")
    assert len(lines) == 2 and not proc.stdout.endswith("\n")
    first, second = (json.loads(line) for line in lines)
    assert lines[0] == json.dumps(first, ensure_ascii=False)
    assert (first["calls"], second["calls"]) == (1, 2) and first["pid"] == second["pid"]
    assert first["event"] == {"n": 1}
    fn_dir = str((fake_build / "Fake").resolve())
    env = first["env"]
    assert env["LAMBDA_TASK_ROOT"] == fn_dir and env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "Fake"
    assert env["OCR_MODEL_DIR"] == str((fake_build / "Models" / "model").resolve())
    assert env["EXTRA"] == "1" and env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:") and env["RESULTS_BUCKET"]
    assert "VIRTUAL_ENV" not in env and "PYTEST_CURRENT_TEST" not in env  # nothing inherited
    # The artifact first, then the layer's python/, the runtime's packages last; the
    # interpreter's own site-packages not at all.
    path = [p for p in first["sys_path"] if p]
    assert path.index(fn_dir) < path.index(str((fake_build / "Models" / "python").resolve()))
    assert path[path.index(str((fake_build / "Models" / "python").resolve())) + 1].endswith(
        ".venv-lambda/lib/python3.12/site-packages")
    assert not any(p.endswith("site-packages") and ".venv-lambda" not in p for p in path)
    assert first["helper"] == "layer"
    assert 0 < first["remaining_ms"] <= 60_000
    assert first["arn"].endswith(":function:Fake")
    # Logs and Lambda's report lines on stderr; timings in the report.
    assert "log line 1" in proc.stderr and "log line 2" in proc.stderr
    assert proc.stderr.count("REPORT RequestId:") == 2
    assert proc.stderr.count("Init Duration:") == 1
    records = json.loads(report.read_text())
    assert [r["outcome"] for r in records] == ["response", "response"]
    assert records[0]["init_ms"] > 0 and records[0]["cold_start_ms"] >= records[0]["init_ms"]
    assert records[1]["init_ms"] is None and records[1]["duration_ms"] > 0


def test_function_error_exits_nonzero_and_the_environment_lives_on(python312, fake_build,
                                                                   tmp_path):
    proc = _run_script([*_events(tmp_path, {"raise": True}, {"n": 2}), *_fake_args(fake_build),
                        "--json-lines"], timeout=300)
    assert proc.returncode == 1, proc.stderr
    error, after = (json.loads(line) for line in proc.stdout.splitlines())
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "asked to fail"
    assert after["calls"] == 2  # same process: Python's runtime survives a handler exception


def test_init_error_is_reported(python312, fake_build, tmp_path):
    proc = _run_script([*_events(tmp_path, {}, {}), *_fake_args(fake_build),
                        "--env", "FAIL_AT_INIT=1"], timeout=300)
    assert proc.returncode == 1
    error = json.loads(proc.stdout)  # one payload: the environment never came up
    assert error["errorType"] == "RuntimeError" and "broken at import" in error["errorMessage"]
    assert "Init Duration:" in proc.stderr


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_timeout_kills_the_runtime_and_its_children(python312, fake_build, tmp_path):
    pidfile = tmp_path / "pids"
    t0 = time.monotonic()
    proc = _run_script([*_events(tmp_path, {"hang": True}), *_fake_args(fake_build),
                        "--timeout", "3", "--env", f"PIDFILE={pidfile}"], timeout=120)
    assert proc.returncode == 124, proc.stderr
    assert time.monotonic() - t0 < 60
    assert json.loads(proc.stdout)["errorType"] == "Sandbox.Timedout"
    pids = [int(p) for p in pidfile.read_text().split()]
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in pids), "runtime or its child survived"


# --------------------------------------------------------- end to end on the sam-built artifact

# What `make sam-build` reads (functions/ocr includes the cached minimal OpenCV wheel).
BUILD_INPUTS = ["infra/template.yaml", "functions/ocr", "layers/model", "scripts/build_opencv.sh"]
NOT_INPUTS = {"__pycache__", "build", ".cache"}  # layers/model/build is the local model copy


def _newest_input() -> float:
    newest = 0.0
    for rel in BUILD_INPUTS:
        path = ROOT / rel
        files = [path] if path.is_file() else [
            p for p in path.rglob("*") if p.is_file()
            and not NOT_INPUTS.intersection(p.relative_to(path).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)]
        newest = max([newest, *(p.stat().st_mtime for p in files)])
    return newest


@pytest.fixture(scope="session")
def sam_artifact(python312) -> Path:
    """`.aws-sam/build`, reused when newer than every build input, else `make sam-build`.

    (`sam build` redoes the whole bundle each time; tests/test_template.py builds too.)
    """
    built = BUILD_DIR / "template.yaml"
    fresh = (built.is_file() and (BUILD_DIR / "OcrFunction" / "app.py").is_file()
             and (BUILD_DIR / "ModelLayer" / "model").is_dir()
             and built.stat().st_mtime >= _newest_input())
    if not fresh:
        proc = subprocess.run(["make", "--no-print-directory", "sam-build"], cwd=ROOT,
                              capture_output=True, text=True, timeout=3600, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return BUILD_DIR


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"edgeocr-invoke-{uuid.uuid4().hex[:12]}"
    _s3(moto_endpoint).create_bucket(Bucket=name)
    return name


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_sam_built_function_miss_hit_get(sam_artifact, moto_endpoint, bucket, manifest,
                                         tmp_path):
    raw = EVENTS / "post_raw_jpeg.json"
    report = tmp_path / "report.json"
    proc = _run_script(["-e", str(raw), str(raw), str(EVENTS / "get_by_hash.json"),
                        "--build-dir", str(sam_artifact), "--s3-endpoint", moto_endpoint,
                        "--bucket", bucket, "--json-lines", "--report", str(report),
                        "--timeout", "300"], timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    miss, hit, get = (json.loads(line) for line in proc.stdout.splitlines())
    digest = hashlib.sha256(base64.b64decode(json.loads(raw.read_text())["body"])).hexdigest()

    assert miss["statusCode"] == 200, miss
    assert miss["headers"]["x-edgeocr-cache"] == "miss"
    result = json.loads(miss["body"])
    assert result["hash"] == digest and result["cached"] is False and result["stored"] is True
    text = result["text"].upper()
    for token in ("DION", "REALTIES", "KUALA", "LUMPUR", "PARKING", "TOTAL", "THANK"):
        assert token in text, f"{token!r} not read:\n{result['text']}"
    assert bow_count(result["text"], manifest[RECEIPT_ID]["text"]).f1 >= 0.85

    assert hit["statusCode"] == 200 and hit["headers"]["x-edgeocr-cache"] == "hit"
    cached = json.loads(hit["body"])
    assert cached["cached"] is True and cached["text"] == result["text"]

    assert get["statusCode"] == 200
    assert json.loads(get["body"])["hash"] == digest

    key = f"results/{result['pipeline']}/{digest}.json"
    stored = _s3(moto_endpoint).get_object(Bucket=bucket, Key=key)
    assert stored["ContentType"] == "application/json"
    assert "immutable" in stored["CacheControl"]
    assert json.loads(stored["Body"].read())["text"] == result["text"]

    records = json.loads(report.read_text())
    assert [r["cache"] for r in records] == ["miss", "hit", "hit"]
    assert records[0]["init_ms"] > 0 and records[0]["cold_start_ms"] > records[0]["init_ms"]
    print(f"\ninvoke (sam-built): init {records[0]['init_ms']:.0f} ms, miss "
          f"{records[0]['duration_ms']:.0f} ms, hit {records[1]['duration_ms']:.0f} ms, "
          f"get {records[2]['duration_ms']:.0f} ms, max RSS {records[-1]['max_memory_mb']} MB")


def test_make_invoke_prints_only_the_payload(sam_artifact):
    """`make invoke`: stdout is the one payload, as SAM prints it (here a 404: a fresh bucket)."""
    proc = subprocess.run(["make", "--no-print-directory", "invoke",
                           f"EVENT={EVENTS / 'get_by_hash.json'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    response = json.loads(proc.stdout)
    assert proc.stdout == json.dumps(response, ensure_ascii=False)
    assert response["statusCode"] == 404, response
    assert "Init Duration:" in proc.stderr


def test_sam_built_function_refuses_a_body_just_over_the_limit(sam_artifact, moto_endpoint,
                                                               bucket, eval_dir, tmp_path):
    """A JPEG one byte over the default OCR_MAX_BYTES, in an event that still fits Lambda's
    6 MB: the built function answers our 413 JSON, pointing at POST /uploads."""
    from edgeocr.settings import LAMBDA_PAYLOAD_BYTES, MAX_REQUEST_BYTES

    event = json.loads((EVENTS / "post_raw_jpeg.json").read_text())
    jpeg = (eval_dir / "images/receipts_sroie/X51008123476.jpg").read_bytes()
    body = jpeg + b"\0" * (MAX_REQUEST_BYTES + 1 - len(jpeg))  # a JPEG with trailing bytes
    event["body"] = base64.b64encode(body).decode()
    event["headers"]["content-length"] = str(len(body))
    assert len(json.dumps(event)) <= LAMBDA_PAYLOAD_BYTES  # it does reach the function
    proc = _run_script([*_events(tmp_path, event), "--build-dir", str(sam_artifact),
                        "--s3-endpoint", moto_endpoint, "--bucket", bucket, "--json-lines",
                        "--timeout", "120"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    answer = json.loads(proc.stdout.splitlines()[-1])
    assert answer["statusCode"] == 413, answer
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "too_many_bytes" and "POST /uploads" in error["message"]
