"""Real servers on loopback for tests: ``edgeocr serve`` and the ``scripts/serve.py`` launcher.

Shared by tests/test_web.py and tests/test_edge.py so that both start, wait for and stop
their servers the same way: a free ephemeral port, an environment without the caller's
AWS/CDN/HMAC settings (a developer's shell must not change what the tests see), output in a
log file whose tail explains a failure, and a stop that happens even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve import (  # scripts/serve.py; scripts/ is on sys.path (conftest)
    free_port,
    healthy,
    terminate,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "scripts" / "serve.py"
# settings from the caller's shell that would change what a test server does
FOREIGN = {"OCR_HASH_SECRET", "RESULTS_BUCKET", "CDN_BASE_URL", "AWS_ENDPOINT_URL_S3"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(extra)
    return env


def _edgeocr() -> list[str]:
    script = Path(sys.executable).with_name("edgeocr")  # the console script in this venv
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeocr.cli"]


def _log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@contextmanager
def edgeocr_serve(results_dir: Path, log_path: Path, port: int | None = None,
                  timeout_s: float = 60, **env: str) -> Iterator[str]:
    """``edgeocr serve`` on a free loopback port over ``results_dir``; yields its base URL."""
    with edgeocr_process(results_dir, log_path, port, timeout_s, **env) as (url, _proc):
        yield url


@contextmanager
def edgeocr_process(results_dir: Path, log_path: Path, port: int | None = None,
                    timeout_s: float = 60, **extra: str
                    ) -> Iterator[tuple[str, subprocess.Popen]]:
    """As ``edgeocr_serve``, yielding the process too (for tests that kill it)."""
    port = port or free_port()
    env = clean_env(OCR_RESULTS_DIR=str(results_dir), PORT=str(port), **extra)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([*_edgeocr(), "serve", "--port", str(port)], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"edgeocr serve did not come up:\n{_log_tail(log_path)}")
                time.sleep(0.1)
            yield url, proc
        finally:
            if proc.poll() is None:
                terminate(proc)


@dataclass(frozen=True)
class Launched:
    """What ``scripts/serve.py --ready-file`` reported, plus the launcher process itself."""

    info: dict
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def child_pids(self) -> dict[str, int]:
        return self.info["pids"]


def process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (it no longer runs or holds a port)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def group_gone(pgid: int) -> bool:
    """No live process left in the group (each launcher child leads its own group)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def _kill_groups(pids: dict[str, int]) -> None:
    """Last resort after a failed test: the launcher should have done this itself."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def stop_launcher(launched: Launched, timeout_s: float = 30) -> int:
    """SIGTERM the launcher as Ctrl-C/`kill` would, and wait; returns its exit code."""
    proc = launched.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextmanager
def launcher(args: list[str], tmp: Path, env: dict[str, str] | None = None,
             timeout_s: float = 180) -> Iterator[Launched]:
    """``scripts/serve.py ARGS`` with a ready file; yields once everything answers.

    Always stops it afterwards (SIGTERM, as a user would), and kills anything it left behind,
    so a failing test never leaks an nginx, a moto or an app server.
    """
    ready = tmp / "ready.json"
    log_path = tmp / "launcher.log"
    cmd = [sys.executable, str(LAUNCHER), *args, "--ready-file", str(ready),
           "--run-dir", str(tmp / "run")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env if env is not None else clean_env(), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
    launched: Launched | None = None
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"scripts/serve.py did not come up:\n{_log_tail(log_path)}")
            time.sleep(0.1)
        launched = Launched(json.loads(ready.read_text()), proc, log_path)
        yield launched
    finally:
        if launched is None:
            launched = Launched({"pids": {}}, proc, log_path)
        stop_launcher(launched)
        _kill_groups({k: v for k, v in launched.child_pids.items() if not group_gone(v)})
