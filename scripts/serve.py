"""`make serve`: run the local service, optionally on moto S3 and behind an nginx edge.

    scripts/serve.py --port 8000                 edgeocr serve on 127.0.0.1:8000
    scripts/serve.py --port 8000 --s3 moto       ... storing results in a bucket on a moto server
    scripts/serve.py --port 8000 --edge          nginx on :8000 caching /results/* (the local
                                                 CloudFront), edgeocr serve behind it on a free port
    (both flags combine)

Each piece is a subprocess in its own process group, so that a Ctrl-C in the terminal reaches
only this launcher, which then stops them in order (edge, app, S3) and always cleans up; if one
piece dies, the others are stopped too, since a half-running stack would only mislead. The
children also get SIGTERM if this launcher is killed outright (Linux parent-death signal).

``edgeocr serve`` itself stays the plain app server: everything here is local plumbing that
stands in for AWS (moto for S3, nginx for CloudFront, DESIGN §4).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "edge" / "nginx.conf.template"
HOST = "127.0.0.1"  # everything listens on loopback only
NEGATIVE_TTL = "1s"  # infra/template.yaml: CustomErrorResponses 403/404 ErrorCachingMinTTL: 1
DEFAULT_BUCKET = "edgeocr-local"
FAKE_AWS = {  # moto accepts anything; fake values keep real credentials off the wire
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
INSTALL_HINT = ("nginx is not installed: `make nginx` (scripts/ensure_deb.sh), or "
                "`apt-get install nginx-light`")
PR_SET_PDEATHSIG = 1


class LauncherError(RuntimeError):
    """A piece could not start; the message says which and why."""


class Stop(Exception):
    """Raised from signal handlers so that the ``finally`` blocks stop every child."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path | None = None  # where its output goes when not the terminal

    def tail(self, chars: int = 3000) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Stack:
    """What is running, for the summary and the ``--ready-file``."""

    url: str = ""
    origin: str = ""
    edge: str | None = None
    s3_endpoint: str | None = None
    bucket: str | None = None
    store: str = ""
    run_dir: str = ""
    children: list[Child] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"url": self.url, "origin": self.origin, "edge": self.edge,
                "s3_endpoint": self.s3_endpoint, "bucket": self.bucket, "store": self.store,
                "run_dir": self.run_dir,
                "pids": {c.name: c.proc.pid for c in self.children},
                "launcher_pid": os.getpid()}


# ---- processes -------------------------------------------------------------------------------

def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (the usual small race)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the launcher dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, cmd: list[str], env: dict[str, str], log: Path | None = None) -> Child:
    """Start ``cmd`` in its own session (so its process group is its pid)."""
    out = log.open("ab") if log else None
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        if out:
            out.close()
    return Child(name, proc, log)


def terminate(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM a single process, SIGKILL it after a grace period, and reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop(child: Child, grace_s: float = 10.0) -> None:
    """SIGTERM the child's whole process group (nginx workers too), SIGKILL after a grace."""
    proc = child.proc
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # stragglers in the group (a worker whose master already exited)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_until(ready: Callable[[], bool], child: Child, timeout_s: float) -> None:
    """Poll ``ready`` until true; fail early, with the child's log, if the child exits."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if child.proc.poll() is not None:
            raise LauncherError(f"{child.name} exited with code {child.proc.returncode}\n"
                                f"{child.tail()}")
        if time.monotonic() > deadline:
            raise LauncherError(f"{child.name} did not come up in {timeout_s:.0f} s\n"
                                f"{child.tail()}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    """True once anything HTTP answers at ``url`` (an error status counts: it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# ---- the pieces ------------------------------------------------------------------------------

def start_moto(env: dict[str, str], run_dir: Path, bucket: str) -> tuple[Child, str]:
    """A moto S3 server on loopback with ``bucket`` created; returns it and its endpoint."""
    import boto3  # the dev venv's; imported here so plain `make serve` does not need it

    port = free_port()
    child = spawn("moto", [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                  env, log=run_dir / "moto.log")
    endpoint = f"http://{HOST}:{port}"
    wait_until(lambda: answers(f"{endpoint}/"), child, timeout_s=60)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                      aws_session_token=env["AWS_SESSION_TOKEN"])
    s3.create_bucket(Bucket=bucket)
    return child, endpoint


def setup_uploads_queue(env: dict[str, str], endpoint: str, bucket: str,
                        visibility_s: int = 10) -> str:
    """The AWS shape on moto: an uploads queue with a DLQ after 3 receives, and the bucket's
    S3 → SQS notification on ``uploads/`` only (infra/template.yaml). A short visibility
    timeout, so a failed attempt comes back within seconds here. Returns the queue URL."""
    import boto3

    creds = {"endpoint_url": endpoint, "region_name": env["AWS_DEFAULT_REGION"],
             "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
             "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
             "aws_session_token": env["AWS_SESSION_TOKEN"]}
    sqs, s3 = boto3.client("sqs", **creds), boto3.client("s3", **creds)
    dlq = sqs.create_queue(QueueName=f"{bucket}-uploads-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=f"{bucket}-uploads", Attributes={
        "VisibilityTimeout": str(visibility_s),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
    })["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{  # browser PUTs
        "AllowedMethods": ["PUT"], "AllowedOrigins": ["*"], "ExposeHeaders": ["ETag"],
        "AllowedHeaders": ["Content-Type", "Content-Length", "x-amz-checksum-sha256"]}]})
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [
                                     {"Name": "prefix", "Value": "uploads/"}]}}}]})
    return url


def start_poller(env: dict[str, str], run_dir: Path) -> Child:
    """The loopback stand-in for Lambda's SQS event source mapping (scripts/sqs_poller.py)."""
    child = spawn("worker", [sys.executable, str(ROOT / "scripts" / "sqs_poller.py"),
                             "--queue-url", env["UPLOADS_QUEUE_URL"]], env,
                  log=run_dir / "worker.log")
    wait_until(lambda: "polling" in child.tail(), child, timeout_s=120)
    return child


def edgeocr_command() -> list[str]:
    script = Path(sys.executable).with_name("edgeocr")  # the console script in this venv
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeocr.cli"]


def start_app(env: dict[str, str], port: int, timeout_s: float) -> Child:
    """``edgeocr serve`` with its output on the terminal; ready once /healthz answers."""
    child = spawn("app", [*edgeocr_command(), "serve", "--host", HOST, "--port", str(port)],
                  {**env, "PORT": str(port)})
    wait_until(lambda: healthy(f"http://{HOST}:{port}"), child, timeout_s)
    return child


def find_nginx() -> str:
    """nginx from PATH or Debian's /usr/sbin (not on every user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise LauncherError(INSTALL_HINT)
    return found


def max_body(env: dict[str, str]) -> str:
    """The largest upload the app may accept: base64 JSON is 4/3 of OCR_MAX_BYTES, + slack."""
    raw = env.get("OCR_MAX_BYTES", "").strip()
    limit = int(raw) if raw.isdigit() else 10 * 1024 * 1024
    return f"{(limit * 4 // 3 + 1024 * 1024) // 1024}k"


def user_directive() -> str:
    """When started as root, nginx would hand its workers to ``nobody``, who cannot enter a
    private temp dir: keep them as the launching user, like every other process here."""
    if os.geteuid() != 0:
        return "# not root: workers run as the launching user"
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};"


def render_nginx_conf(run_dir: Path, edge_port: int, origin: str, body_limit: str,
                      template: Path = TEMPLATE) -> Path:
    """Fill the ``{{NAME}}`` placeholders and write ``run_dir/nginx.conf``."""
    values = {"RUN_DIR": str(run_dir), "EDGE_PORT": str(edge_port), "ORIGIN": origin,
              "MAX_BODY": body_limit, "NEGATIVE_TTL": NEGATIVE_TTL,
              "USER_DIRECTIVE": user_directive()}
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise LauncherError(f"unfilled placeholder in {template}: "
                            f"{text[text.index('{{'):][:40]!r}")
    for sub in ("tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi",
                "cache"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(text)
    return conf


def start_edge(nginx: str, env: dict[str, str], run_dir: Path, edge_port: int,
               origin_port: int, timeout_s: float = 30) -> Child:
    """nginx in front of the app: ready once /healthz answers through it."""
    conf = render_nginx_conf(run_dir, edge_port, f"{HOST}:{origin_port}", max_body(env))
    check = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-p", str(run_dir), "-c",
                            str(conf)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise LauncherError(f"nginx rejected {conf}:\n{check.stderr}")
    child = spawn("nginx", [nginx, "-e", "stderr", "-p", str(run_dir), "-c", str(conf)], env,
                  log=run_dir / "nginx.log")
    wait_until(lambda: healthy(f"http://{HOST}:{edge_port}"), child, timeout_s)
    return child


# ---- orchestration ---------------------------------------------------------------------------

def app_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment every child inherits, with the moto S3 settings when asked for."""
    env = dict(os.environ)
    if args.s3 == "moto":
        env.update(FAKE_AWS)
        env["RESULTS_BUCKET"] = env.get("RESULTS_BUCKET") or DEFAULT_BUCKET
    return env


def describe_store(env: dict[str, str]) -> str:
    if env.get("RESULTS_BUCKET"):
        where = env.get("AWS_ENDPOINT_URL_S3") or "AWS"
        return f"S3 bucket {env['RESULTS_BUCKET']} at {where}"
    results = env.get("OCR_RESULTS_DIR") or str(Path.home() / ".cache" / "edgeocr" / "results")
    return f"local directory {results} (kept across restarts)"


@contextlib.contextmanager
def run_directory(given: Path | None) -> Iterator[Path]:
    """``--run-dir`` as given (kept), or a fresh temp dir removed afterwards."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="edgeocr-serve-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_all(args: argparse.Namespace, run_dir: Path, stack: Stack) -> None:
    """Start S3 (if asked), the app, then the edge (if asked), appending to ``stack``."""
    env = app_env(args)
    nginx = find_nginx() if args.edge else ""  # before anything starts: fail fast
    if args.s3 == "moto":
        moto, endpoint = start_moto(env, run_dir, env["RESULTS_BUCKET"])
        stack.children.append(moto)
        env["AWS_ENDPOINT_URL_S3"] = env["AWS_ENDPOINT_URL_SQS"] = endpoint
        env["UPLOADS_QUEUE_URL"] = setup_uploads_queue(env, endpoint, env["RESULTS_BUCKET"])
        stack.s3_endpoint, stack.bucket = endpoint, env["RESULTS_BUCKET"]
        stack.children.append(start_poller(env, run_dir))
    elif env.get("RESULTS_BUCKET"):
        stack.s3_endpoint, stack.bucket = env.get("AWS_ENDPOINT_URL_S3"), env["RESULTS_BUCKET"]
    origin_port = (args.origin_port or free_port()) if args.edge else args.port
    edge_url = f"http://{HOST}:{args.port}"
    if args.edge:
        env["CDN_BASE_URL"] = edge_url  # result_url points at the edge, as in AWS
    stack.store = describe_store(env)
    stack.children.append(start_app(env, origin_port, args.app_timeout))
    stack.origin = f"http://{HOST}:{origin_port}"
    stack.url = stack.origin
    if args.edge:
        stack.children.append(start_edge(nginx, env, run_dir, args.port, origin_port))
        stack.edge = stack.url = edge_url


def summary(stack: Stack) -> str:
    lines = [f"edgeocr: ready at {stack.url}/"]
    if stack.edge:
        lines.append(f"  edge   nginx (local CloudFront): {stack.edge}/  caches /results/*, "
                     "answers X-Cache-Status")
        lines.append(f"  origin edgeocr serve: {stack.origin}/")
    lines.append(f"  store  {stack.store}")
    if stack.s3_endpoint and stack.children[0].name == "moto":
        lines.append(f"  s3     moto at {stack.s3_endpoint} (in memory: gone when it stops), "
                     "S3 → SQS → worker (scripts/sqs_poller.py)")
    if len(stack.children) > 1:  # nginx and moto log there; the app logs here
        lines.append(f"  logs   {stack.run_dir}")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def write_ready_file(path: Path, stack: Stack) -> None:
    """Atomically, so a poller never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stack.as_json(), indent=1))
    tmp.replace(path)


def supervise(stack: Stack) -> int:
    """Wait until a child exits (an error: the stack is broken) or a signal arrives."""
    while True:
        for child in stack.children:
            code = child.proc.poll()
            if code is not None:
                print(f"edgeocr: {child.name} exited with code {code}; stopping the rest\n"
                      f"{child.tail()}", file=sys.stderr, flush=True)
                return 1
        time.sleep(0.5)


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    stack = Stack()
    with run_directory(args.run_dir) as run_dir:
        stack.run_dir = str(run_dir)
        try:
            start_all(args, run_dir, stack)
            print(summary(stack), flush=True)
            if args.ready_file:
                write_ready_file(args.ready_file, stack)
            return supervise(stack)
        except LauncherError as exc:
            print(f"edgeocr: {exc}", file=sys.stderr, flush=True)
            return 1
        except Stop:
            return 0
        finally:
            # a second Ctrl-C must not cut the cleanup short
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            for child in reversed(stack.children):
                stop(child)
            if args.ready_file:
                args.ready_file.unlink(missing_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000),
                   help="the port users open: the app's, or the edge's with --edge")
    p.add_argument("--s3", choices=["moto"], help="store results in a bucket on a moto server")
    p.add_argument("--edge", action="store_true", help="nginx in front, caching /results/*")
    p.add_argument("--origin-port", type=int, default=0,
                   help="with --edge, the app's own port (default: a free one)")
    p.add_argument("--run-dir", type=Path,
                   help="nginx config, cache and logs go here (default: a temp dir, removed)")
    p.add_argument("--ready-file", type=Path,
                   help="write the URLs and child pids here as JSON once everything is up")
    p.add_argument("--app-timeout", type=float, default=120,
                   help="seconds to wait for edgeocr serve to answer /healthz")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
