"""The pipeline id covers everything that can change a result (DESIGN §2): a changed line of
code on the OCR path, or a library version, means new keys; a comment does not; restoring
the line restores the id. Checked on a copy of the package, never on the checkout itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgeocr import keys
from edgeocr.ocr.config import EngineSettings
from edgeocr.ocr.models import ModelSet
from edgeocr.settings import Settings

PACKAGE = Path(keys.__file__).resolve().parent
ROOT = PACKAGE.parents[2]


@pytest.fixture
def tree(tmp_path) -> Path:
    copy = tmp_path / "edgeocr"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    return copy


def digest(root: Path) -> str:
    return keys.source_digest.__wrapped__(root)


def edit(path: Path, old: str, new: str) -> str:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))
    return text


@pytest.mark.parametrize(("module", "old", "new"), [
    ("ocr/recognize.py", "HEIGHT = 48", "HEIGHT = 47"),
    ("ocr/detect.py", "import", "import math\nimport"),
    ("ocr/engine.py", "_SIDEWAYS_ASPECT = 1.5", "_SIDEWAYS_ASPECT = 1.6"),
    ("ocr/pages.py", "THUMBNAIL_QUALITY = 80", "THUMBNAIL_QUALITY = 81"),
    ("ocr/pdf.py", "def ", "def _unused():\n    return 1\n\n\ndef "),
    ("domain.py", '"\\f".join', '"\\n\\f".join'),
    ("reader.py", "1.0, t.box", "0.99, t.box"),
])
def test_a_changed_line_on_the_ocr_path_changes_the_id_and_restoring_restores_it(
        tree, module, old, new):
    before = digest(tree)
    assert before == keys.source_digest()  # the same sources, wherever they are
    original = edit(tree / module, old, new)
    assert digest(tree) != before, module
    (tree / module).write_text(original)
    assert digest(tree) == before


def test_comments_and_docstrings_do_not_change_the_id(tree):
    before = digest(tree)
    edit(tree / "ocr/recognize.py", '"""', '"""A docstring edit. ')
    edit(tree / "ocr/engine.py", "import time\n", "import time  # a comment\n# and another\n")
    assert digest(tree) == before


def test_code_off_the_ocr_path_does_not_change_the_id(tree):
    before = digest(tree)
    edit(tree / "http/app.py", "UPLOAD_TTL_S = 3600", "UPLOAD_TTL_S = 60")
    edit(tree / "cli.py", "def main(", "def _spare():\n    pass\n\n\ndef main(")
    assert digest(tree) == before


def test_library_versions_models_and_settings_feed_the_id():
    models = ModelSet.load(Settings().model_dir)
    libs = keys.library_versions()
    assert set(libs) == {"onnxruntime", "opencv-python-headless", "numpy", "pillow",
                         "pypdfium2"} and "absent" not in libs.values()
    base = keys.pipeline_id(models, EngineSettings(), {"pdf_dpi": 200})
    assert base == keys.pipeline_id(models, EngineSettings(), {"pdf_dpi": 200},
                                    libraries=dict(libs))
    for name in libs:
        bumped = {**libs, name: libs[name] + ".post1"}
        assert keys.pipeline_id(models, EngineSettings(), {"pdf_dpi": 200},
                                libraries=bumped) != base, name
    assert keys.pipeline_id(models, EngineSettings(), {"pdf_dpi": 150}) != base
    assert keys.pipeline_id(models, EngineSettings(det_thresh=0.31), {"pdf_dpi": 200}) != base
    other = ModelSet(models.directory, {**models.sha256, next(iter(models.sha256)): "0" * 64})
    assert keys.pipeline_id(other, EngineSettings(), {"pdf_dpi": 200}) != base


def test_python_312_digests_the_sources_as_311_does():
    """Lambda runs 3.12, the venv 3.11; their syntax trees differ in fields new in 3.12."""
    found = sorted(Path(p) for p in subprocess.run(
        ["bash", "-c", "ls -d $(pyenv root 2>/dev/null)/versions/3.12*/bin/python3 2>/dev/null"],
        capture_output=True, text=True).stdout.split())
    if not found:
        pytest.skip("no CPython 3.12 here")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from edgeocr.keys import source_digest; print(source_digest())")
    out = subprocess.run([str(found[-1]), "-S", "-E", "-c", code, str(PACKAGE.parent)],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == keys.source_digest()
