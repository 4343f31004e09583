"""edgeocr/snapstart.py: SnapStart hooks that register only where snapshot_restore_py exists.

Lambda calls the before-snapshot hooks when it publishes a version and the after-restore
hooks when it resumes an environment from the snapshot; here a stand-in module records the
registrations and the tests call them as the runtime would. The built bundle with the real
library is exercised in tests/test_template.py (test_built_bundle_runs_the_snapstart_hooks).
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edgeocr import snapstart

ROOT = Path(__file__).resolve().parents[1]


class FakeEngine:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[bytes] = []
        self.fail = fail

    def ocr(self, data: bytes):
        self.calls.append(data)
        if self.fail:
            raise RuntimeError("no sessions")
        return types.SimpleNamespace(lines=["edgeocr 1234"])


class FakeHolder:
    def __init__(self, engine) -> None:
        self.engine, self.built = engine, 0

    def get(self):
        self.built += 1
        return self.engine


def fake_service(engine=None):
    return types.SimpleNamespace(engine=FakeHolder(engine or FakeEngine()))


@pytest.fixture
def runtime(monkeypatch):
    """A stand-in for snapshot_restore_py (its API: two register functions and two
    getters), so the tests need not install it."""
    mod = types.ModuleType("snapshot_restore_py")
    mod.before, mod.after = [], []
    mod.register_before_snapshot = lambda f, *a, **k: mod.before.append((f, a, k)) or f
    mod.register_after_restore = lambda f, *a, **k: mod.after.append((f, a, k)) or f
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", mod)
    return mod


def test_no_library_no_hooks(monkeypatch):
    """Locally (no snapshot_restore_py) the module imports and register() does nothing."""
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import raises
    service = fake_service()
    assert snapstart.register(service) is False
    assert service.engine.built == 0


def test_register_then_run_as_the_runtime_would(runtime):
    service = fake_service()
    ran = []
    assert snapstart.register(service, also=[lambda: ran.append("rekey")]) is True
    (before, args, kwargs), = runtime.before
    (after, aargs, akwargs), = runtime.after
    assert service.engine.built == 0, "nothing happens at registration"
    done = before(*args, **kwargs)
    assert service.engine.built == 1
    assert done["engine"] is True and done["warm_lines"] == 1
    assert set(done["imported"]) >= {"json", "edgeocr.service", "edgeocr.store"}
    (warm,) = service.engine.engine.calls
    assert warm == snapstart.warm_image()
    after(*aargs, **akwargs)
    assert ran == ["rekey"]


def test_hit_path_modules_are_in_sys_modules_after_the_hook():
    snapstart.before_checkpoint(fake_service())
    for name in snapstart.HIT_PATH_MODULES:
        assert name in sys.modules, name


def test_a_failed_warm_up_does_not_stop_the_snapshot(caplog):
    service = fake_service(FakeEngine(fail=True))
    done = snapstart.before_checkpoint(service)
    assert done["engine"] is True and done["warm_lines"] is None
    assert "warm-up inference failed" in caplog.text


def test_an_engine_without_ocr_is_only_built():
    service = fake_service(object())
    assert snapstart.before_checkpoint(service)["engine"] is True


def test_after_restore_reseeds_random():
    """Environments resumed from one snapshot share random's state: after_restore must
    draw a new seed (from the kernel), so the sequences part."""
    random.seed(1234)
    snapshot_state = random.getstate()
    expected = random.random()
    random.setstate(snapshot_state)
    snapstart.after_restore()
    assert random.random() != expected


def test_after_restore_reseeds_numpy_when_loaded():
    np = pytest.importorskip("numpy")
    np.random.seed(1234)
    expected = np.random.random()
    np.random.seed(1234)
    snapstart.after_restore()
    assert np.random.random() != expected


def test_warm_image_is_a_small_png_of_text():
    from PIL import Image

    img = Image.open(io.BytesIO(snapstart.warm_image()))
    assert img.format == "PNG" and img.size == (480, 96)
    assert img.getextrema()[0] < 64, "some ink on it"


def test_warm_up_reads_its_line_with_the_real_engine():
    """The hook as the API function runs it: the real engine built, one line read."""
    from edgeocr.settings import Settings
    from edgeocr.store import MemoryStore
    from edgeocr.wiring import build_service

    service = build_service(Settings(), MemoryStore())
    assert not service.engine.loaded
    done = snapstart.before_checkpoint(service)
    assert service.engine.loaded
    assert done["warm_lines"] == 1


_IMPORT_APP = r"""
import json, sys, types
mod = types.ModuleType("snapshot_restore_py")
mod.before, mod.after = [], []
mod.register_before_snapshot = lambda f, *a, **k: mod.before.append(f.__qualname__)
mod.register_after_restore = lambda f, *a, **k: mod.after.append(f.__qualname__)
sys.modules["snapshot_restore_py"] = mod
sys.path.insert(0, sys.argv[1])
import app
print(json.dumps({"before": mod.before, "after": mod.after}))
"""


def test_app_registers_the_hooks(tmp_path):
    """app.py (the Lambda composition root) registers both hooks at import."""
    env = {**os.environ, "OCR_RESULTS_DIR": str(tmp_path)}
    for key in ("RESULTS_BUCKET", "OCR_HASH_SECRET", "AWS_ENDPOINT_URL_S3"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-c", _IMPORT_APP, str(ROOT / "functions" / "ocr")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {"before": ["before_checkpoint"], "after": ["after_restore"]}
