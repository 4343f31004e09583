"""The stand-in for `sam local invoke -e EVENT` (which needs Docker, and Docker does not run here).

Runs the artifact `sam build` made (``.aws-sam/build/OcrFunction`` plus its layers) the way
Lambda's python3.12 runtime does: CPython 3.12 running ``python -m awslambdaric app.handler``
(AWS's own runtime interface client) in the function directory, against a small Lambda Runtime
API served here on loopback. S3 is a moto server on loopback (or ``--s3-endpoint``).

- Layers: Lambda unpacks them into /opt, which we cannot mount, so each ``/opt/...`` value in
  the template's environment (``OCR_MODEL_DIR: /opt/model``) is pointed at the built layer
  directory that holds it, and a layer's ``python/`` directories go on PYTHONPATH, as in Lambda.
- Runtime: ``.venv-lambda/`` (made here on first use, for the 3.12 interpreter) holds what the
  managed runtime brings (awslambdaric, boto3); its site-packages come LAST on PYTHONPATH so the
  artifact's own packages win, and ``-S`` keeps the interpreter's own site-packages out, so an
  import that works here works because the artifact (or the runtime) ships it.
- Several events (``-e a.json -e b.json``) run in order in ONE runtime process, i.e. one
  execution environment: a repeated POST shows the cache miss and then the hit.

Output as `sam local invoke` prints it: each response payload on stdout (re-serialised with
``json.dumps(..., ensure_ascii=False)``, as SAM does), the runtime's logs on stderr, with
Lambda's START/END/REPORT lines (REPORT has Init Duration on the cold start, Duration, Max
Memory Used). Exit status: 0; 1 when any invocation ended in a function, init or runtime error
(its error payload is printed on stdout too); 124 on a timeout (the runtime is killed); 2 for
usage errors (no build, no CPython 3.12).

Usage: python scripts/invoke.py -e tests/events/post_raw_jpeg.json [-e MORE.json ...]
       [--build-dir .aws-sam/build] [--function OcrFunction] [--layer ModelLayer ...]
       [--env KEY=VALUE ...] [--timeout 60] [--json-lines] [--report FILE.json]
       [--s3-endpoint URL --bucket NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUILD_DIR = ROOT / ".aws-sam" / "build"
LAMBDA_VENV = ROOT / ".venv-lambda"
# What the managed python3.12 runtime brings besides the artifact. boto3 follows the dev venv so
# that the tests and this stand-in talk to S3 through the same SDK version.
RIC_REQUIREMENT = "awslambdaric==4.2.2"
API_PREFIX = "/2018-06-01/runtime"
REGION = "us-east-1"
ACCOUNT = "123456789012"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 124


class UsageError(Exception):
    """Something this script cannot run without (a build, a CPython 3.12); exit 2."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- the Runtime API server


@dataclass
class Invocation:
    """One event's trip through the Runtime API, with the times Lambda's REPORT line uses."""

    request_id: str
    event: bytes
    timeout_s: float
    submitted: float = field(default_factory=time.monotonic)
    dispatched: float | None = None  # the runtime fetched it (GET .../next)
    finished: float | None = None  # the runtime posted its response or error
    outcome: str | None = None  # "response" | "error"
    payload: bytes = b""
    error_type: str | None = None


class RuntimeAPI:
    """The Lambda Runtime API a runtime client talks to, on 127.0.0.1, fed from a queue.

    ``GET .../invocation/next`` long-polls (as in Lambda) until ``submit`` queues an event;
    responses, errors and an init error are recorded for ``wait``.
    """

    def __init__(self, function_arn: str, host: str = "127.0.0.1", port: int = 0,
                 on_dispatch: Callable[[Invocation], None] | None = None) -> None:
        self.function_arn = function_arn
        self.on_dispatch = on_dispatch
        self.first_poll: float | None = None  # init is over when the runtime first asks for work
        self.init_error: tuple[str | None, bytes] | None = None
        self.init_failed: float | None = None
        self._cond = threading.Condition()
        self._pending: deque[Invocation] = deque()
        self._invocations: dict[str, Invocation] = {}
        self._closed = False
        self._server = _QuietServer((host, port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="runtime-api", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> RuntimeAPI:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RuntimeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, event: bytes, timeout_s: float) -> Invocation:
        inv = Invocation(request_id=str(uuid.uuid4()), event=event, timeout_s=timeout_s)
        with self._cond:
            self._invocations[inv.request_id] = inv
            self._pending.append(inv)
            self._cond.notify_all()
        return inv

    def next_invocation(self, poll_s: float = 0.5) -> Invocation | None:
        """The next queued event, blocking; None once closed."""
        with self._cond:
            if self.first_poll is None:
                self.first_poll = time.monotonic()
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait(poll_s)
            inv = self._pending.popleft()
            inv.dispatched = time.monotonic()
        if self.on_dispatch:
            self.on_dispatch(inv)
        return inv

    def complete(self, request_id: str, outcome: str, payload: bytes,
                 error_type: str | None = None) -> bool:
        with self._cond:
            inv = self._invocations.get(request_id)
            if inv is None or inv.dispatched is None or inv.outcome is not None:
                return False
            inv.finished = time.monotonic()
            inv.outcome, inv.payload, inv.error_type = outcome, payload, error_type
            self._cond.notify_all()
        return True

    def fail_init(self, error_type: str | None, payload: bytes) -> None:
        with self._cond:
            self.init_error = (error_type, payload)
            self.init_failed = time.monotonic()
            self._cond.notify_all()

    def wait(self, inv: Invocation, timeout_s: float,
             alive: Callable[[], bool] = lambda: True) -> str:
        """Block until the invocation ends: "done", "init_error", "exited" or "timeout"."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if inv.outcome is not None:
                    return "done"
                if self.init_error is not None:
                    return "init_error"
                if not alive():
                    return "exited"
                left = deadline - time.monotonic()
                if left <= 0:
                    return "timeout"
                self._cond.wait(min(left, 0.05))


class _QuietServer(ThreadingHTTPServer):
    """A killed runtime resets its keep-alive connection: that is the end, not an error."""

    daemon_threads = True  # a runtime blocked in /next must not hold up close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _trace_id() -> str:
    return (f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
            f"Parent={uuid.uuid4().hex[:16]};Sampled=0")


def _handler_for(api: RuntimeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1: keep-alive, and `Expect: 100-continue` (which the runtime client's libcurl
        # sends for large POST bodies) is answered at once instead of after curl's 1 s wait.
        protocol_version = "HTTP/1.1"
        server_version = "edgeocr-runtime-api"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the runtime's own logs are what matters on stderr

        def do_GET(self) -> None:
            if self.path != f"{API_PREFIX}/invocation/next":
                self._reply(404, {"errorType": "NotFound", "errorMessage": self.path})
                return
            inv = api.next_invocation()
            if inv is None:  # shutting down
                self.close_connection = True
                self._reply(410, {"errorType": "ShuttingDown", "errorMessage": "closed"})
                return
            deadline_ms = int((time.time() + inv.timeout_s) * 1000)
            self._reply(200, inv.event, {
                "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                "Lambda-Runtime-Trace-Id": _trace_id(),
            })

        def do_POST(self) -> None:
            body = self._read_body()
            parts = self.path.removeprefix(API_PREFIX + "/").split("/")
            error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
            if parts == ["init", "error"]:
                api.fail_init(error_type, body)
                self._reply(202, {"status": "OK"})
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response",
                                                                                "error"):
                outcome = parts[2]
                if api.complete(parts[1], outcome, body, error_type):
                    self._reply(202, {"status": "OK"})
                else:
                    self._reply(400, {"errorType": "InvalidRequestID",
                                      "errorMessage": f"unknown or finished: {parts[1]}"})
            else:
                self._reply(404, {"errorType": "NotFound", "errorMessage": self.path})

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, body: bytes | dict,
                   headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


# ------------------------------------------------------------- CPython 3.12 and its runtime venv


def _is_python312(path: str) -> bool:
    try:
        proc = subprocess.run([path, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 12))"],
                              capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _pyenv_versions(root: Path) -> list[str]:
    found = root.glob("versions/3.12.*/bin/python3.12")
    return [str(p) for p in sorted(found, key=lambda p: _version_key(p.parts[-3]), reverse=True)]


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else -1 for x in text.split("."))


def find_python312() -> str:
    """The interpreter the python3.12 runtime needs: $PYTHON312, python3.12 on PATH, pyenv's.

    Each candidate must really run 3.12 (pyenv's shim named python3.12 fails when 3.12 is not
    the selected version, so being on PATH proves nothing).
    """
    explicit = os.environ.get("PYTHON312")
    if explicit:
        if _is_python312(explicit):
            return explicit
        raise UsageError(f"PYTHON312={explicit} is not a working CPython 3.12")
    candidates = [p for p in [shutil.which("python3.12")] if p]
    pyenv = shutil.which("pyenv")
    if pyenv:
        proc = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            candidates += _pyenv_versions(Path(proc.stdout.strip()))
    candidates += _pyenv_versions(Path.home() / ".pyenv")
    for candidate in dict.fromkeys(candidates):
        if _is_python312(candidate):
            return candidate
    raise UsageError(
        "no CPython 3.12 found (the function runs on Lambda's python3.12): set PYTHON312=/path/"
        "to/python3.12, put python3.12 on PATH, or `pyenv install 3.12`")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_lambda_venv(python: str, venv: Path = LAMBDA_VENV) -> Path:
    """Make (once) the venv with what the managed runtime brings; return its site-packages.

    The stamp records the interpreter and the pins, so a change of either rebuilds it; a lock
    lets two invocations (a test and `make invoke`) start at once.
    """
    requirements = [RIC_REQUIREMENT, f"boto3=={version('boto3')}"]
    stamp_text = json.dumps({"python": os.path.realpath(python), "requirements": requirements})
    stamp = venv / ".edgeocr-installed"
    site = venv / "lib" / "python3.12" / "site-packages"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _locked(venv.with_name(venv.name + ".lock")):
        if stamp.is_file() and stamp.read_text() == stamp_text and site.is_dir():
            return site
        log(f"invoke: creating {venv} ({python}; {', '.join(requirements)})")
        try:
            subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True,
                           stdout=sys.stderr)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", *requirements], check=True,
                           stdout=sys.stderr)
        except subprocess.CalledProcessError as exc:
            raise UsageError(f"could not make the runtime venv {venv}: {exc}") from exc
        stamp.write_text(stamp_text)
    return site


# ---------------------------------------------------------------- what the built template says


@dataclass
class FunctionConfig:
    """The parts of the built template's function that shape its execution environment."""

    name: str
    handler: str = "app.handler"
    memory_mb: int = 3008
    env: dict[str, str] = field(default_factory=lambda: {"OCR_MODEL_DIR": "/opt/model"})
    layers: list[str] = field(default_factory=lambda: ["ModelLayer"])


def load_cfn_yaml(path: Path) -> dict:
    import yaml  # PyYAML (dev venv); CloudFormation short-form tags read as their long form

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            return {name: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {name: loader.construct_sequence(node, deep=True)}
        return {name: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tag)
    return yaml.load(path.read_text(), Loader=Loader) or {}


def _literal(value: Any, params: dict) -> str | None:
    """A template value as `sam local` would resolve it offline, or None (e.g. a GetAtt)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"} and "Default" in params.get(
            value["Ref"], {}):
        return _literal(params[value["Ref"]]["Default"], params)
    return None


def load_function_config(build_dir: Path, function: str) -> FunctionConfig:
    """Handler, memory, environment and layers of `function` in the built template.

    Without a built template (an artifact assembled by hand) the defaults above apply.
    """
    config = FunctionConfig(name=function)
    template = build_dir / "template.yaml"
    if not template.is_file():
        return config
    doc = load_cfn_yaml(template)
    params = doc.get("Parameters") or {}
    glob = (doc.get("Globals") or {}).get("Function") or {}
    props = {**glob, **((doc.get("Resources") or {}).get(function) or {}).get("Properties", {})}
    config.handler = str(props.get("Handler") or config.handler)
    config.memory_mb = int(_literal(props.get("MemorySize"), params) or config.memory_mb)
    config.env = {}
    variables = {**((glob.get("Environment") or {}).get("Variables") or {}),
                 **((props.get("Environment") or {}).get("Variables") or {})}
    for key, value in variables.items():
        resolved = _literal(value, params)
        if resolved is not None:
            config.env[key] = resolved
    layers = [layer["Ref"] for layer in props.get("Layers") or []
              if isinstance(layer, dict) and set(layer) == {"Ref"}]
    if "Layers" in props:
        config.layers = layers
    return config


# ------------------------------------------------------------------ the runtime's environment


def layer_python_paths(layers: list[Path]) -> list[Path]:
    """/opt/python/lib/python3.12/site-packages and /opt/python, as Lambda adds them."""
    out = []
    for layer in layers:
        out += [p for p in (layer / "python" / "lib" / "python3.12" / "site-packages",
                            layer / "python") if p.is_dir()]
    return out


def map_opt(value: str, layers: list[Path]) -> str:
    """Point an /opt/... path at the built layer that provides it (layers merge into /opt)."""
    if value != "/opt" and not value.startswith("/opt/"):
        return value
    rest = value.removeprefix("/opt").lstrip("/")
    for layer in reversed(layers):  # a later layer's file wins in /opt
        if (layer / rest).exists():
            return str(layer / rest)
    return value


def runtime_env(config: FunctionConfig, python: str, fn_dir: Path, layers: list[Path],
                site: Path, api_address: str, s3_endpoint: str, bucket: str,
                overrides: dict[str, str]) -> dict[str, str]:
    """A fresh environment like Lambda's (nothing inherited from this shell) for the runtime."""
    name = config.name
    # Lambda's PATH starts with /var/lang/bin, where its python3.12 lives.
    bin_path = [str(Path(python).parent), "/usr/local/bin", "/usr/bin", "/bin"]
    python_path = [fn_dir, *layer_python_paths(layers), site]
    lib_path = [p for p in (fn_dir, fn_dir / "lib", *(layer / "lib" for layer in layers))
                if p.is_dir()]
    env = {
        "PATH": os.pathsep.join(bin_path),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LD_LIBRARY_PATH": os.pathsep.join(map(str, lib_path)),
        "PYTHONPATH": os.pathsep.join(map(str, python_path)),
        # /var/task is read-only in Lambda; don't let this run write __pycache__ into the build.
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(fn_dir),
        "LAMBDA_RUNTIME_DIR": str(site),
        "_HANDLER": config.handler,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **FAKE_CREDENTIALS,
    }
    env.update({k: map_opt(v, layers) for k, v in config.env.items()})
    env.pop("CDN_BASE_URL", None)  # a CloudFront domain cannot exist here
    env["RESULTS_BUCKET"] = bucket
    env["AWS_ENDPOINT_URL_S3"] = s3_endpoint
    env.update({k: map_opt(v, layers) for k, v in overrides.items()})
    return env


# -------------------------------------------------------------------------- the whole invoke


@contextlib.contextmanager
def s3_server(endpoint: str | None, bucket: str | None) -> Iterator[tuple[str, str]]:
    """The given S3 endpoint and bucket, or a moto server on loopback with a fresh bucket."""
    if endpoint:
        if not bucket:
            raise UsageError("--s3-endpoint needs --bucket")
        yield endpoint, bucket
        return
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log among the logs

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{server._server.server_port}"
        name = bucket or "edgeocr-results-local"
        boto3.client("s3", endpoint_url=url, region_name=REGION,
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=name)
        yield url, name
    finally:
        server.stop()


def start_runtime(python: str, fn_dir: Path, handler: str, env: dict[str, str]
                  ) -> subprocess.Popen:
    """`python3.12 -S -m awslambdaric HANDLER` in its own process group, logs to our stderr."""
    return subprocess.Popen([python, "-S", "-m", "awslambdaric", handler], cwd=fn_dir, env=env,
                            stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                            stderr=sys.stderr.fileno(), start_new_session=True)


def stop_runtime(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGTERM then SIGKILL to the runtime's whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)


def cpu_ms(pid: int) -> float | None:
    """User + system CPU the runtime has used so far: a cold-start figure that a busy shared
    machine distorts less than wall time."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    return None


def max_rss_mb(pid: int) -> float | None:
    """Peak resident memory of the runtime so far (Lambda's "Max Memory Used")."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def sam_format(payload: bytes) -> str:
    """The payload as `sam local invoke` prints it: json.dumps(json.loads(...)) or raw."""
    try:
        return json.dumps(json.loads(payload), ensure_ascii=False)
    except ValueError:
        return payload.decode("utf-8", "replace")


def _response_summary(payload: bytes) -> tuple[int | None, str | None]:
    """statusCode and X-Edgeocr-Cache of an API Gateway proxy response, when it is one."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    headers = {str(k).lower(): v for k, v in (doc.get("headers") or {}).items()}
    return doc.get("statusCode"), headers.get("x-edgeocr-cache")


def _error_payload(request_id: str, error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": f"RequestId: {request_id} Error: {message}",
                       "errorType": error_type}).encode()


@dataclass
class Record:
    """One invocation's outcome and timings, for stderr and --report."""

    event: str
    request_id: str
    outcome: str  # response | error | init_error | exited | timeout
    payload: bytes
    init_ms: float | None
    duration_ms: float | None
    cold_start_ms: float | None
    max_memory_mb: float | None
    cpu_ms: float | None  # the runtime's CPU time so far (all its threads)
    status_code: int | None = None
    cache: str | None = None

    def as_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "payload"}
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def invoke_one(api: RuntimeAPI, proc: subprocess.Popen, spawned: float | None,
               event_name: str, event: bytes, timeout_s: float) -> Record:
    """Run one event; `spawned` (the process start) is given for the cold one only."""
    inv = api.submit(event, timeout_s)
    state = api.wait(inv, timeout_s, alive=lambda: proc.poll() is None)
    memory, cpu = max_rss_mb(proc.pid), cpu_ms(proc.pid)
    init_ms = cold_ms = duration_ms = None
    init_end = api.first_poll or api.init_failed
    if spawned is not None and init_end is not None:
        init_ms = (init_end - spawned) * 1000
        cold_ms = (inv.finished - spawned) * 1000 if inv.finished else None
    if inv.finished and inv.dispatched:
        duration_ms = (inv.finished - inv.dispatched) * 1000
    if state == "done":
        outcome, payload = inv.outcome or "error", inv.payload
    elif state == "init_error":
        outcome, payload = "init_error", api.init_error[1] if api.init_error else b""
    elif state == "exited":
        outcome, payload = "exited", _error_payload(
            inv.request_id, "Runtime.ExitError",
            f"Runtime exited with error: exit status {proc.returncode}")
    else:
        outcome, payload = "timeout", _error_payload(
            inv.request_id, "Sandbox.Timedout", f"Task timed out after {timeout_s:.2f} seconds")
    record = Record(event_name, inv.request_id, outcome, payload, init_ms, duration_ms, cold_ms,
                    memory, cpu)
    if outcome == "response":
        record.status_code, record.cache = _response_summary(payload)
    return record


def report_lines(record: Record, memory_size: int) -> list[str]:
    """Lambda's END and REPORT lines, plus one line naming the event and what came back."""
    parts = [f"REPORT RequestId: {record.request_id}"]
    if record.duration_ms is not None:
        parts += [f"Duration: {record.duration_ms:.2f} ms",
                  f"Billed Duration: {int(-(-record.duration_ms // 1))} ms"]
    parts.append(f"Memory Size: {memory_size} MB")
    if record.max_memory_mb is not None:
        parts.append(f"Max Memory Used: {record.max_memory_mb:.0f} MB")
    if record.init_ms is not None:
        parts.append(f"Init Duration: {record.init_ms:.2f} ms")
    summary = f"invoke: {record.event}: {record.outcome}"
    if record.status_code is not None:
        summary += f", statusCode {record.status_code}"
    if record.cache:
        summary += f", X-Edgeocr-Cache {record.cache}"
    if record.cold_start_ms is not None:
        summary += (f"; cold start {record.cold_start_ms:.0f} ms (init {record.init_ms:.0f} + "
                    f"invoke {record.duration_ms:.0f})")
        if record.cpu_ms is not None:
            summary += f", {record.cpu_ms:.0f} ms CPU"
    elif record.duration_ms is not None:
        summary += f"; warm invoke {record.duration_ms:.0f} ms"
    return [f"END RequestId: {record.request_id}", "\t".join(parts), summary]


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def read_events(paths: list[str]) -> list[tuple[str, bytes]]:
    events = []
    for path in paths:
        try:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
            json.loads(data)
        except OSError as exc:
            raise UsageError(f"cannot read event {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise UsageError(f"event {path} is not JSON: {exc}") from exc
        events.append((path, data))
    return events


def run(args: argparse.Namespace) -> int:
    events = read_events(args.event)
    build_dir = Path(args.build_dir)
    fn_dir = (build_dir / args.function).resolve()
    if not fn_dir.is_dir():
        raise UsageError(f"no built function at {fn_dir}: run `make sam-build` first")
    config = load_function_config(build_dir, args.function)
    layer_names = args.layer if args.layer else config.layers
    layers = [(build_dir / name).resolve() for name in layer_names]
    missing = [str(p) for p in layers if not p.is_dir()]
    if missing:
        raise UsageError(f"no built layer at {', '.join(missing)}: run `make sam-build` first")
    overrides = parse_env(args.env)
    python = find_python312()
    site = ensure_lambda_venv(python, Path(args.lambda_venv))
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{config.name}"

    records: list[Record] = []
    with contextlib.ExitStack() as stack:
        endpoint, bucket = stack.enter_context(s3_server(args.s3_endpoint, args.bucket))
        api = stack.enter_context(RuntimeAPI(arn, on_dispatch=lambda inv: log(
            f"START RequestId: {inv.request_id} Version: $LATEST")))
        env = runtime_env(config, python, fn_dir, layers, site, api.address, endpoint, bucket,
                          overrides)
        spawned = time.monotonic()
        proc = start_runtime(python, fn_dir, config.handler, env)
        stack.callback(stop_runtime, proc)
        for index, (name, event) in enumerate(events):
            record = invoke_one(api, proc, None if index else spawned, name, event,
                                args.timeout)
            records.append(record)
            for line in report_lines(record, config.memory_mb):
                log(line)
            if record.outcome == "timeout":  # what `sam local invoke` says
                log(f"Function '{config.name}' timed out after {args.timeout:g} seconds")
            emit(record.payload, index, args.json_lines)
            if record.outcome in ("init_error", "exited", "timeout"):
                break  # this execution environment is gone
    if args.report:
        Path(args.report).write_text(json.dumps([r.as_json() for r in records], indent=1))
    if any(r.outcome == "timeout" for r in records):
        return EXIT_TIMEOUT
    return 0 if all(r.outcome == "response" for r in records) else EXIT_ERROR


def emit(payload: bytes, index: int, json_lines: bool) -> None:
    """stdout as SAM writes it (no newline after a lone payload); one per line if asked."""
    text = sam_format(payload)  # json.dumps without indent: one line
    sys.stdout.write(text + "\n" if json_lines else ("\n" if index else "") + text)
    sys.stdout.flush()
    log("")  # SAM ends each invocation with a newline on stderr


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-e", "--event", action="extend", nargs="+", required=True, metavar="FILE",
                   help="event JSON file(s), '-' for stdin; several run in ONE runtime process")
    p.add_argument("--build-dir", default=str(DEFAULT_BUILD_DIR), help="`sam build` output")
    p.add_argument("--function", default="OcrFunction", help="function logical id")
    p.add_argument("--layer", action="append", default=[], metavar="NAME",
                   help="layer logical id(s) (default: the function's layers in the template)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the function (last word)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds per invocation (the first includes init); default 60")
    p.add_argument("--json-lines", action="store_true", help="one response per stdout line")
    p.add_argument("--report", metavar="FILE", help="write per-invocation timings as JSON")
    p.add_argument("--s3-endpoint", metavar="URL", help="use this S3 endpoint, not a new moto")
    p.add_argument("--bucket", metavar="NAME", help="results bucket (required with --s3-endpoint)")
    p.add_argument("--lambda-venv", default=str(LAMBDA_VENV), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so the finally blocks stop the runtime


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        log(f"invoke: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        log("invoke: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
