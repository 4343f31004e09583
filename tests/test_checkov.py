"""checkov on infra/template.yaml: no failed check unless infra/checkov-skips.yaml says why.

checkov pins much of its own world, so it lives in ``.venv-checkov/`` (``make
checkov-venv``). It runs offline: ``--skip-download`` and ``BC_SKIP_MAPPING`` keep it from
calling home for guidelines and severities, which this scan does not need.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
TEMPLATE = "infra/template.yaml"
SKIPS_FILE = ROOT / "infra" / "checkov-skips.yaml"

Finding = tuple[str, str]  # (check id, resource)


def load_skips() -> list[dict[str, str]]:
    skips = yaml.safe_load(SKIPS_FILE.read_text())["skips"]
    for entry in skips:
        assert set(entry) == {"check", "resource", "status", "why"}, entry
        assert entry["status"] in ("accepted", "pending"), entry
        assert entry["why"].strip() and "\n" not in entry["why"].strip(), entry
    return skips


SKIPS = load_skips()
PENDING = {(s["check"], s["resource"]) for s in SKIPS if s["status"] == "pending"}
ACCEPTED = {(s["check"], s["resource"]) for s in SKIPS if s["status"] == "accepted"}


def review(failed: set[Finding], accepted: set[Finding], pending: set[Finding]
           ) -> dict[str, set[Finding]]:
    """What the skips file says about checkov's failed checks:
    - ``unlisted``: failing with no entry (fix the template, or add an entry with a reason);
    - ``stale``: an ``accepted`` entry whose check passes now (delete it);
    - ``done``: a ``pending`` entry whose check passes now: the fix landed (delete it).
    A ``pending`` entry whose check still fails is allowed, for now."""
    return {"unlisted": failed - accepted - pending, "stale": accepted - failed,
            "done": pending - failed}


@pytest.fixture(scope="module")
def checkov() -> dict[str, Any]:
    """checkov's JSON report for the template (one framework: one report object)."""
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} missing: `make test` runs `make checkov-venv` first")
        pytest.skip("checkov is not installed: run `make checkov-venv`")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    proc = subprocess.run(
        [str(CHECKOV), "-f", TEMPLATE, "--framework", "cloudformation", "-o", "json",
         "--skip-download", "--compact"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report.get("check_type") == "cloudformation", proc.stdout[:500]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] > 0, summary
    return report


def findings(report: dict[str, Any]) -> dict[Finding, dict[str, Any]]:
    return {(f["check_id"], f["resource"]): f for f in report["results"]["failed_checks"]}


def describe(found: dict[Finding, dict[str, Any]], keys: set[Finding]) -> str:
    return "\n".join(f"  {c} {r} (lines {found[(c, r)]['file_line_range']}): "
                     f"{found[(c, r)]['check_name']}" for c, r in sorted(keys))


def test_no_unlisted_findings(checkov: dict[str, Any]):
    found = findings(checkov)
    unlisted = review(set(found), ACCEPTED, PENDING)["unlisted"]
    assert not unlisted, (
        "checkov findings on the template that infra/checkov-skips.yaml does not list "
        "(fix the template, or add an entry with a reason):\n" + describe(found, unlisted))


def test_no_stale_accepted_skips(checkov: dict[str, Any]):
    stale = review(set(findings(checkov)), ACCEPTED, PENDING)["stale"]
    assert not stale, f"these checks pass now: delete them from checkov-skips.yaml: {stale}"


def test_no_pending_fix_has_landed_unnoticed(checkov: dict[str, Any]):
    """Each ``pending`` entry must still be failing: once its fix lands this goes red (per
    entry, not only when all are fixed) so that the entry gets deleted. With no pending
    entries it has nothing to check; test_review_of_a_made_up_report keeps the rule honest."""
    done = review(set(findings(checkov)), ACCEPTED, PENDING)["done"]
    assert not done, f"these pending checks pass now: delete them from checkov-skips.yaml: {done}"


def test_review_of_a_made_up_report():
    """The rules on a report where every case occurs (the real file has no pending entry
    today, so without this the pending rule would never be exercised)."""
    still, fixed, new = ("CKV_1", "A.Still"), ("CKV_2", "A.Fixed"), ("CKV_3", "A.New")
    kept, gone = ("CKV_4", "A.Kept"), ("CKV_5", "A.Gone")
    got = review(failed={still, new, kept}, accepted={kept, gone}, pending={still, fixed})
    assert got == {"unlisted": {new}, "stale": {gone}, "done": {fixed}}
    assert review(failed={kept}, accepted={kept}, pending=set()) == {
        "unlisted": set(), "stale": set(), "done": set()}
