"""Unzipped size of each built Lambda function plus its layers, against Lambda's limit.

Reads what `sam build` left in the build directory (default ``.aws-sam/build``): the built
``template.yaml`` says which directory holds each function and which layers it uses. Lambda
counts the uncompressed size of the function's deployment package plus all of its layers,
at most 262,144,000 bytes ("250 MB", which is 250 MiB); we aim for 240 MiB to keep headroom.

Prints a breakdown by top-level package (``numpy``, ``numpy.libs``, ``cv2``... for the
function; each layer's top-level folders) and exits 1 when a function is over the target
(2 when over Lambda's limit). ``--json`` prints the same figures as one JSON object.

Usage: python scripts/package_size.py [--build-dir .aws-sam/build] [--target-mib 240] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from invoke import load_cfn_yaml  # scripts/invoke.py: the one CloudFormation YAML reader

MIB = 1024 * 1024
LAMBDA_LIMIT_BYTES = 262_144_000  # 250 MiB: "Unzipped size must be smaller than 262144000 bytes"
DEFAULT_TARGET_MIB = 240


@dataclass
class Artifact:
    name: str  # logical id
    kind: str  # "function" | "layer"
    path: Path
    parts: dict[str, int] = field(default_factory=dict)  # top-level entry -> bytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def tree_size(path: Path) -> int:
    """Sum of file sizes (what the zip holds uncompressed); symlinks counted as their target."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = Path(root, f)
            if p.exists():  # a dangling symlink is not packaged
                total += p.stat().st_size
    return total


def measure(name: str, kind: str, path: Path) -> Artifact:
    art = Artifact(name, kind, path)
    meta = 0
    for entry in sorted(path.iterdir()):
        size = tree_size(entry)
        if entry.name.endswith((".dist-info", ".egg-info")):
            meta += size
        else:
            art.parts[entry.name + ("/" if entry.is_dir() else "")] = size
    if meta:
        art.parts["*.dist-info"] = meta
    return art


def _local(build: Path, uri: object) -> Path | None:
    if isinstance(uri, str) and not uri.startswith("s3://"):
        p = (build / uri).resolve()
        return p if p.is_dir() else None
    return None


def _ref(value: object) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key, target = next(iter(value.items()))
        if key == "Ref" and isinstance(target, str):
            return target
    return None


def discover(build: Path) -> list[tuple[Artifact, list[Artifact]]]:
    """(function, its layers) for every function in the built template."""
    template = build / "template.yaml"
    resources = load_cfn_yaml(template).get("Resources", {}) if template.is_file() else {}
    layers: dict[str, Artifact] = {}
    for lid, res in resources.items():
        if res.get("Type") in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            props = res.get("Properties") or {}
            path = _local(build, props.get("ContentUri") or props.get("Content"))
            if path:
                layers[lid] = measure(lid, "layer", path)
    result = []
    for fid, res in resources.items():
        if res.get("Type") not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            continue
        props = res.get("Properties") or {}
        path = _local(build, props.get("CodeUri") or props.get("Code"))
        if not path:
            continue
        used = [layers[r] for r in map(_ref, props.get("Layers") or []) if r in layers]
        result.append((measure(fid, "function", path), used))
    return result


def mib(n: int) -> str:
    return f"{n / MIB:7.1f} MiB"


def report(build: Path, target_mib: float, as_json: bool) -> int:
    found = discover(build)
    if not found:
        print(f"package_size: no built function found under {build} (run `make sam-build`)",
              file=sys.stderr)
        return 3
    target = int(target_mib * MIB)
    worst = 0
    out = []
    for fn, layers in found:
        total = fn.total + sum(layer.total for layer in layers)
        status = 2 if total >= LAMBDA_LIMIT_BYTES else 1 if total > target else 0
        worst = max(worst, status)
        out.append({
            "function": fn.name,
            "total_bytes": total,
            "total_mib": round(total / MIB, 2),
            "limit_bytes": LAMBDA_LIMIT_BYTES,
            "target_bytes": target,
            "status": {0: "ok", 1: "over target", 2: "over Lambda's limit"}[status],
            "artifacts": [
                {"name": a.name, "kind": a.kind, "path": str(a.path), "bytes": a.total,
                 "parts": dict(sorted(a.parts.items(), key=lambda kv: -kv[1]))}
                for a in (fn, *layers)
            ],
        })
        if as_json:
            continue
        print(f"{fn.name}: function + {len(layers)} layer(s), unzipped")
        for art in (fn, *layers):
            print(f"  {art.kind} {art.name:<24} {mib(art.total)}   ({art.path})")
            for part, size in sorted(art.parts.items(), key=lambda kv: -kv[1]):
                if size >= 100 * 1024:
                    print(f"      {part:<34} {mib(size)}")
            small = [s for s in art.parts.values() if s < 100 * 1024]
            if small:
                print(f"      {f'{len(small)} entries < 0.1 MiB':<34} {mib(sum(small))}")
        print(f"  {'total':<33} {mib(total)}   ({total:,} bytes)")
        print(f"  {'target':<33} {mib(target)}   headroom {mib(target - total).strip()}")
        print(f"  {'Lambda limit':<33} {mib(LAMBDA_LIMIT_BYTES)}   "
              f"headroom {mib(LAMBDA_LIMIT_BYTES - total).strip()}")
        print(f"  => {out[-1]['status'].upper()}")
    if as_json:
        print(json.dumps({"functions": out}, indent=1))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    ap.add_argument("--target-mib", type=float, default=DEFAULT_TARGET_MIB)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    return report(args.build_dir, args.target_mib, args.json)


if __name__ == "__main__":
    sys.exit(main())
