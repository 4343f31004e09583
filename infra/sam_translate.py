"""Expand the SAM template into the plain CloudFormation that AWS would deploy, offline.

cfn-lint 1.x checks SAM templates against SAM's schema *without* expanding them, so it cannot
see problems that only exist after the transform, above all a circular dependency through
resources SAM generates (e.g. the function's ARN written into the HTTP API's body while the
function's environment points at a distribution in front of that API). Running cfn-lint on
this script's output catches those (E3004).

Runs with the SAM CLI's own venv (it ships ``samtranslator``); no credentials, no network:
local CodeUri/ContentUri paths are replaced by placeholder S3 URIs, as `sam package` would.

Usage: .venv-sam/bin/python infra/sam_translate.py infra/template.yaml OUT.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

_LOCAL_URIS = ("CodeUri", "ContentUri")


class _NoManagedPolicies:
    """The template names no managed policies by name, so nothing needs looking up in IAM."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template: Path) -> dict:
    doc = yaml_parse(template.read_text())
    for name, resource in doc.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        for key in _LOCAL_URIS:
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://placeholder-bucket/{name}.zip"
    return transform(doc, {}, _NoManagedPolicies())


def main() -> None:
    # The translator wants a region for its partition lookup; nothing here depends on which.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if len(sys.argv) != 3:
        sys.exit("usage: sam_translate.py TEMPLATE OUT.json")
    out = translate(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
