"""Offline checks of the SAM template and of the bundle `sam build` makes.

The SAM CLI lives in its own venv (`make sam-venv`, created here when missing). Nothing here
needs AWS credentials or Docker; `sam build` needs PyPI only.

- cfn-lint on the SAM template, `sam validate --lint`, and cfn-lint on the template as SAM
  expands it (the one check that sees a circular dependency through generated resources);
- the template's contracts (runtime, handler, env, IAM scope, bucket lock-down, CloudFront);
- `sam build` + scripts/package_size.py: function + layers within our 240 MiB target, and the
  built artifact imports and reads a receipt under CPython 3.12 (marked slow: a few minutes,
  more if the minimal OpenCV wheel has to be compiled).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "template.yaml"
SAM_VENV = ROOT / ".venv-sam"
BUILD_DIR = ROOT / ".aws-sam" / "build"
TARGET_MIB = 240
RECEIPT = ROOT / ".." / "shared" / "eval" / "images" / "receipts_sroie" / "X51006329399.jpg"

CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env["SAM_CLI_TELEMETRY"] = "0"
    for key in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(key, None)  # prove the checks need no credentials
    return env


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, env=kw.pop("env", _env()), capture_output=True, text=True,
        timeout=timeout, **kw,
    )


@pytest.fixture(scope="session")
def sam_venv() -> Path:
    """The SAM CLI venv, made by the Makefile target (idempotent) when missing."""
    proc = _run(["make", "--no-print-directory", "sam-venv"], timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (SAM_VENV / "bin" / "sam").is_file()
    return SAM_VENV


def _cfn_lint(sam_venv: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(sam_venv / "bin" / "cfn-lint"), "--", str(path)])


def _expand(sam_venv: Path, template: Path, out: Path) -> dict:
    proc = _run([str(sam_venv / "bin" / "python"), str(ROOT / "infra" / "sam_translate.py"),
                 str(template), str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def expanded(sam_venv: Path, tmp_path_factory) -> dict:
    """The template as SAM expands it into plain CloudFormation (offline)."""
    return _expand(sam_venv, TEMPLATE, tmp_path_factory.mktemp("cfn") / "template.json")


# ---------------------------------------------------------------------------- offline linting


def test_cfn_lint_sam_template(sam_venv):
    proc = _cfn_lint(sam_venv, TEMPLATE)
    assert proc.returncode == 0, f"cfn-lint found problems:\n{proc.stdout}{proc.stderr}"


def test_sam_validate_lint(sam_venv):
    proc = _run([str(sam_venv / "bin" / "sam"), "validate", "--lint", "--template",
                 str(TEMPLATE)], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is a valid SAM Template" in proc.stdout + proc.stderr


def test_cfn_lint_expanded_template(sam_venv, expanded, tmp_path):
    path = tmp_path / "expanded.json"
    path.write_text(json.dumps(expanded))
    proc = _cfn_lint(sam_venv, path)
    assert proc.returncode == 0, f"cfn-lint on the expanded template:\n{proc.stdout}"


def test_cycle_check_catches_the_naive_wiring(sam_venv, tmp_path):
    """Control: routes as the function's HttpApi events (SAM writes the function's ARN into
    the API) + CDN_BASE_URL from the distribution is a cycle; the expanded check must see it,
    or a passing test_cfn_lint_expanded_template would mean nothing."""
    doc = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    res = doc["Resources"]
    res["HttpApi"]["Properties"].pop("DefinitionBody")
    res.pop("OcrInvokePermission")
    res["OcrFunction"]["Properties"]["Events"] = {
        "Post": {"Type": "HttpApi", "Properties": {
            "ApiId": {"Ref": "HttpApi"}, "Path": "/ocr", "Method": "POST"}},
    }
    naive = tmp_path / "naive.yaml"
    naive.write_text(json.dumps(doc))
    cfn = tmp_path / "naive.json"
    _expand(sam_venv, naive, cfn)
    proc = _cfn_lint(sam_venv, cfn)
    assert "E3004" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------ template contracts


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub...) into their long form."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
        return {name: value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _tag)


def _of_type(expanded: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in expanded["Resources"].items() if v["Type"] == kind}


def _one(expanded: dict, kind: str) -> dict:
    found = list(_of_type(expanded, kind).values())
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_function_contract(expanded):
    fn = _one(expanded, "AWS::Lambda::Function")["Properties"]
    assert fn["Runtime"] == "python3.12"
    assert fn["Handler"] == "app.handler"
    assert fn["Architectures"] == [{"Ref": "Architecture"}]
    assert 1024 <= fn["MemorySize"] <= 10240
    assert fn["Timeout"] <= 29, "API Gateway's HTTP API gives up at 30 s"
    env = fn["Environment"]["Variables"]
    assert env["RESULTS_BUCKET"] == {"Ref": "ResultsBucket"}
    assert env["OCR_MODEL_DIR"] == "/opt/model"
    assert "OCR_THREADS" in env
    assert "Distribution.DomainName" in json.dumps(env["CDN_BASE_URL"])
    assert len(fn["Layers"]) == 1
    params = expanded["Parameters"]["Architecture"]
    assert params["Default"] == "x86_64" and set(params["AllowedValues"]) == {"x86_64", "arm64"}


def test_build_methods_are_makefile():
    raw = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)["Resources"]
    assert raw["OcrFunction"]["Metadata"]["BuildMethod"] == "makefile"
    assert raw["ModelLayer"]["Metadata"]["BuildMethod"] == "makefile"
    assert raw["ModelLayer"]["Properties"]["ContentUri"] == "../layers/model"
    code = (TEMPLATE.parent / raw["OcrFunction"]["Properties"]["CodeUri"]).resolve()
    assert (code / "Makefile").is_file() and "build-OcrFunction:" in (code / "Makefile").read_text()


def test_iam_is_least_privilege(expanded):
    role = _one(expanded, "AWS::IAM::Role")["Properties"]
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    assert statements, "the function has no inline policy"
    for s in statements:
        assert s["Effect"] == "Allow"
        assert sorted(s["Action"]) == ["s3:GetObject", "s3:PutObject"], s
        assert s["Resource"] == {"Fn::Sub": "${ResultsBucket.Arn}/results/*"}, s
    # Only the basic logging policy besides (no S3/FullAccess managed policies).
    managed = json.dumps(role.get("ManagedPolicyArns", []))
    assert "AWSLambdaBasicExecutionRole" in managed
    assert "S3" not in managed and "FullAccess" not in managed


def test_bucket_is_private_and_tls_only(expanded):
    bucket = expanded["Resources"]["ResultsBucket"]["Properties"]
    pab = bucket["PublicAccessBlockConfiguration"]
    assert all(pab[k] is True for k in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    stmts = _one(expanded, "AWS::S3::BucketPolicy")["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in stmts if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in deny)
    grants = [s for s in stmts if s["Effect"] == "Allow"]
    assert len(grants) == 1
    grant = grants[0]
    assert grant["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert grant["Action"] == "s3:GetObject"
    assert grant["Resource"] == {"Fn::Sub": "${ResultsBucket.Arn}/results/*"}
    source = json.dumps(grant["Condition"]["StringEquals"]["AWS:SourceArn"])
    assert "distribution/${Distribution}" in source


def test_http_api_routes(expanded):
    api = _one(expanded, "AWS::ApiGatewayV2::Api")["Properties"]
    paths = api["Body"]["paths"]
    routes = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert {("POST", "/ocr"), ("GET", "/ocr/{hash}"), ("GET", "/healthz"), ("GET", "/"),
            ("GET", "/static/{proxy+}"), ("GET", "/docs"), ("GET", "/openapi.json")} <= routes
    perm = _one(expanded, "AWS::Lambda::Permission")["Properties"]
    assert perm["Principal"] == "apigateway.amazonaws.com"
    # The integration is built from the function's name, not a reference to the function:
    body = json.dumps(api["Body"])
    assert "OcrFunction" not in body


def test_cloudfront_behaviours(expanded):
    dist = _one(expanded, "AWS::CloudFront::Distribution")["Properties"]["DistributionConfig"]
    origins = {o["Id"]: o for o in dist["Origins"]}
    s3 = next(o for o in origins.values() if "S3OriginConfig" in o)
    assert s3["S3OriginConfig"]["OriginAccessIdentity"] == ""
    assert "OriginAccessControlId" in s3
    oac = _one(expanded, "AWS::CloudFront::OriginAccessControl")["Properties"]
    assert oac["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    api = next(o for o in origins.values() if "CustomOriginConfig" in o)
    assert api["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    behaviours = {b["PathPattern"]: b for b in dist["CacheBehaviors"]}
    results = behaviours["/results/*"]
    assert results["TargetOriginId"] == s3["Id"]
    assert results["CachePolicyId"] == CACHING_OPTIMIZED
    for pattern in ("/ocr*", "/healthz"):
        b = behaviours[pattern]
        assert b["TargetOriginId"] == api["Id"]
        assert b["CachePolicyId"] == CACHING_DISABLED
        assert b["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST
    assert "POST" in behaviours["/ocr*"]["AllowedMethods"]
    default = dist["DefaultCacheBehavior"]
    assert default["TargetOriginId"] == api["Id"]
    assert default["CachePolicyId"] == CACHING_DISABLED
    for b in (*dist["CacheBehaviors"], default):
        assert b["ViewerProtocolPolicy"] in ("redirect-to-https", "https-only")
    errors = {e["ErrorCode"]: e for e in dist["CustomErrorResponses"]}
    for code in (403, 404):
        assert errors[code]["ErrorCachingMinTTL"] <= 5
        assert "ResponsePagePath" not in errors[code], "would replace the API's JSON errors"


def test_outputs(expanded):
    assert {"ApiUrl", "CdnUrl", "BucketName"} <= set(expanded["Outputs"])


def test_samconfig_points_at_the_template():
    text = (ROOT / "infra" / "samconfig.toml").read_text()
    assert re.search(r"^\[default\.deploy\.parameters\]", text, re.M)
    assert "CAPABILITY_IAM" in text


# ------------------------------------------------------------------- the built artifact (slow)


def _python312() -> str | None:
    """A CPython 3.12 that runs: PYTHON312, python3.12 on PATH, or pyenv's newest 3.12
    (a pyenv shim on PATH may exist and still refuse to run)."""
    candidates = [os.environ.get("PYTHON312"), shutil.which("python3.12")]
    root = Path.home() / ".pyenv"
    if shutil.which("pyenv"):
        proc = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = Path(proc.stdout.strip()) if proc.returncode == 0 else root
    candidates += sorted(root.glob("versions/3.12.*/bin/python3.12"), reverse=True,
                         key=lambda p: [int(x) for x in p.parts[-3].split(".")[1:] if x.isdigit()])
    for c in filter(None, candidates):
        ok = subprocess.run([str(c), "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                            capture_output=True, check=False)
        if ok.returncode == 0:
            return str(c)
    return None


@pytest.fixture(scope="session")
def sam_build(sam_venv) -> dict:
    t0 = time.monotonic()
    proc = _run(["make", "--no-print-directory", "sam-build"], timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    took = time.monotonic() - t0
    size = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package_size.py"), "--build-dir",
         str(BUILD_DIR), "--json", "--target-mib", str(TARGET_MIB)],
        capture_output=True, text=True, check=False,
    )
    report = json.loads(size.stdout)
    report["returncode"] = size.returncode
    report["build_seconds"] = took
    return report


@pytest.mark.slow
def test_sam_build_fits_in_target(sam_build):
    (fn,) = sam_build["functions"]
    print(f"\nsam build {sam_build['build_seconds']:.0f} s; {fn['function']}: "
          f"{fn['total_mib']} MiB unzipped (target {TARGET_MIB} MiB)")
    assert fn["total_bytes"] <= TARGET_MIB * 1024 * 1024, json.dumps(fn, indent=1)
    assert sam_build["returncode"] == 0
    kinds = sorted(a["kind"] for a in fn["artifacts"])
    assert kinds == ["function", "layer"]
    parts = next(a for a in fn["artifacts"] if a["kind"] == "function")["parts"]
    for pkg in ("edgeocr/", "cv2/", "numpy/", "onnxruntime/", "PIL/", "fastapi/", "mangum/"):
        assert pkg in parts, f"{pkg} missing from the bundle"
    for absent in ("boto3/", "botocore/", "sympy/", "mpmath/"):
        assert absent not in parts, f"{absent} should not be bundled"


_SMOKE = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path[:0] = [sys.argv[1]]
import cv2, numpy, onnxruntime
from edgeocr.ocr.engine import Engine
from edgeocr.settings import Settings
t1 = time.perf_counter()
s = Settings.from_env()
engine = Engine(s.model_dir, s.engine, s.threads)
t2 = time.perf_counter()
out = engine.ocr(open(sys.argv[2], "rb").read())
print(json.dumps({"cv2": cv2.__file__, "cv2_version": cv2.__version__,
                  "numpy": numpy.__version__, "ort": onnxruntime.__version__,
                  "import_s": t1 - t0, "engine_s": t2 - t1, "lines": len(out.lines),
                  "text": out.text}))
"""


@pytest.mark.slow
def test_built_bundle_reads_a_receipt_under_python312(sam_build):
    py = _python312()
    if py is None:
        pytest.skip("no CPython 3.12 here to run the python3.12 bundle with")
    if not RECEIPT.is_file():
        pytest.skip(f"eval image {RECEIPT} not found")
    bundle = BUILD_DIR / "OcrFunction"
    models = BUILD_DIR / "ModelLayer" / "model"
    env = {"PATH": os.environ.get("PATH", ""), "OCR_MODEL_DIR": str(models),
           "OCR_THREADS": "2"}
    # -S -E: no site-packages, no PYTHON* variables: only what the bundle ships.
    proc = subprocess.run([py, "-S", "-E", "-c", _SMOKE, str(bundle), str(RECEIPT)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["cv2"].startswith(str(bundle))
    assert got["cv2_version"] == "4.11.0"
    assert got["lines"] >= 20, got
    assert "TOTAL" in got["text"].upper(), got["text"]
    if (bundle / "app.py").is_file():
        proc = subprocess.run(
            [py, "-S", "-E", "-c", f"import sys; sys.path[:0] = [{str(bundle)!r}]; import app; "
             "assert callable(app.handler)"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]


def test_cfn_loader_round_trip():
    """The tag loader used above keeps !GetAtt/!Sub meaning (guards the contract tests)."""
    doc = yaml.load("a: !GetAtt X.Arn\nb: !Sub '${Y}'\nc: !Ref Z\n", Loader=_CfnLoader)
    assert doc == {"a": {"Fn::GetAtt": ["X", "Arn"]}, "b": {"Fn::Sub": "${Y}"},
                   "c": {"Ref": "Z"}}
