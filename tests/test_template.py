"""Offline checks of the SAM template and of the bundle `sam build` makes.

The SAM CLI lives in its own venv (`make sam-venv`, created here when missing). Nothing here
needs AWS credentials or Docker; `sam build` needs PyPI only.

- cfn-lint on the SAM template, `sam validate --lint`, and cfn-lint on the template as SAM
  expands it (the one check that sees a circular dependency through generated resources);
- the template's contracts (runtime, handlers, env, IAM scope, bucket lock-down, CloudFront,
  the uploads/ -> SQS -> worker wiring, lifecycle rules, CORS);
- `sam build` + scripts/package_size.py: each function + layers within our 240 MiB target, the
  two functions ship the same bundle, and the built artifact imports and reads a receipt under
  CPython 3.12 (marked slow: a few minutes, more if the minimal OpenCV wheel has to be
  compiled).
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


def _raw() -> dict:
    """The SAM template as written (short-form tags in their long form)."""
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


# Settings both functions must agree on: the pipeline id covers OCR_PDF_DPI and OCR_MAX_PIXELS,
# the hash covers OCR_HASH_SECRET, and both read the same bucket and limits.
SHARED_SETTINGS = ("RESULTS_BUCKET", "CDN_BASE_URL", "OCR_MODEL_DIR", "OCR_THREADS",
                   "OCR_HASH_SECRET", "OCR_MAX_UPLOAD_BYTES", "OCR_MAX_PAGES", "OCR_SYNC_PAGES",
                   "OCR_PDF_DPI", "OCR_MAX_PIXELS")


def test_function_contract(expanded):
    fn = expanded["Resources"]["OcrFunction"]["Properties"]
    assert fn["Runtime"] == "python3.12"
    assert fn["Handler"] == "app.handler"
    assert fn["Architectures"] == [{"Ref": "Architecture"}]
    assert 1024 <= fn["MemorySize"] <= 10240
    assert fn["Timeout"] <= 29, "API Gateway's HTTP API gives up at 30 s"
    env = fn["Environment"]["Variables"]
    assert env["RESULTS_BUCKET"] == {"Ref": "ResultsBucket"}
    assert env["OCR_MODEL_DIR"] == "/opt/model"
    assert "Distribution.DomainName" in json.dumps(env["CDN_BASE_URL"])
    assert set(SHARED_SETTINGS) <= set(env), set(SHARED_SETTINGS) - set(env)
    assert "UPLOADS_QUEUE_URL" not in env, "the API hands documents over through S3, not SQS"
    params = expanded["Parameters"]
    for var, param, default in (("OCR_MAX_UPLOAD_BYTES", "MaxUploadBytes", 500 * 1024 * 1024),
                                ("OCR_MAX_PAGES", "MaxPages", 2000),
                                ("OCR_SYNC_PAGES", "SyncPages", 4),
                                ("OCR_PDF_DPI", "PdfDpi", 200),
                                ("OCR_MAX_PIXELS", "MaxPixels", 40_000_000)):
        assert env[var] == {"Ref": param}, var
        assert int(params[param]["Default"]) == default, (param, "the settings' own default")
    assert fn["Layers"] == [{"Ref": next(iter(_of_type(expanded, "AWS::Lambda::LayerVersion")))}]
    arch = params["Architecture"]
    assert arch["Default"] == "x86_64" and set(arch["AllowedValues"]) == {"x86_64", "arm64"}


def test_worker_function_contract(expanded):
    """app.worker on the same bundle, layer and memory as the API; a timeout of minutes (long
    documents continue in new messages); fed by the uploads queue one document at a time,
    answering batchItemFailures."""
    res = expanded["Resources"]
    api, fn = res["OcrFunction"]["Properties"], res["WorkerFunction"]["Properties"]
    assert fn["Handler"] == "app.worker"
    for key in ("Runtime", "Architectures", "Layers", "MemorySize"):
        assert fn[key] == api[key], key
    assert 60 <= fn["Timeout"] <= 600, "minutes, not Lambda's 15: long documents continue"
    assert fn["ReservedConcurrentExecutions"] == {"Fn::If": [
        "HasWorkerReservedConcurrency", {"Ref": "WorkerReservedConcurrency"},
        {"Ref": "AWS::NoValue"}]}
    param = expanded["Parameters"]["WorkerReservedConcurrency"]
    assert param["Type"] == "Number" and int(param["Default"]) == 0 and int(param["MinValue"]) == 0
    assert expanded["Conditions"]["HasWorkerReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WorkerReservedConcurrency"}, 0]}]}
    env = fn["Environment"]["Variables"]
    assert env["UPLOADS_QUEUE_URL"] == {"Ref": "UploadsQueue"}, "continuations go back to it"
    (esm,) = _of_type(expanded, "AWS::Lambda::EventSourceMapping").values()
    esm = esm["Properties"]
    assert esm["FunctionName"] == {"Ref": "WorkerFunction"}
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["BatchSize"] == 1, "one document per invocation"
    # A reserved concurrency below the event source's would throttle SQS invocations, and
    # each throttle counts as a receive (documents in the DLQ for nothing).
    assert esm["ScalingConfig"] == {"Fn::If": [
        "HasWorkerReservedConcurrency",
        {"MaximumConcurrency": {"Ref": "WorkerReservedConcurrency"}}, {"Ref": "AWS::NoValue"}]}
    assert "WorkerReservedConcurrency" in json.dumps(expanded["Rules"]), "1 is not allowed"


def test_both_functions_see_the_same_settings(expanded):
    """A different OCR_PDF_DPI (say) in the worker would store the document under another
    pipeline id than the one the API answers with."""
    res = expanded["Resources"]
    api = res["OcrFunction"]["Properties"]["Environment"]["Variables"]
    worker = res["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert set(SHARED_SETTINGS) <= set(worker), set(SHARED_SETTINGS) - set(worker)
    for var in SHARED_SETTINGS:
        assert worker[var] == api[var], var
    # the worker's own: where to continue, and its longer S3 waits (it has minutes)
    assert set(worker) - set(api) == {"UPLOADS_QUEUE_URL", "OCR_S3_ATTEMPTS",
                                      "OCR_S3_CONNECT_TIMEOUT", "OCR_S3_READ_TIMEOUT"}


def test_build_methods_are_makefile():
    raw = _raw()["Resources"]
    for fid in ("OcrFunction", "WorkerFunction"):
        assert raw[fid]["Metadata"]["BuildMethod"] == "makefile", fid
    assert raw["ModelLayer"]["Metadata"]["BuildMethod"] == "makefile"
    assert raw["ModelLayer"]["Properties"]["ContentUri"] == "../layers/model"
    uri = raw["OcrFunction"]["Properties"]["CodeUri"]
    assert raw["WorkerFunction"]["Properties"]["CodeUri"] == uri, "one package for both"
    code = (TEMPLATE.parent / uri).resolve()
    makefile = code / "Makefile"
    assert makefile.is_file()
    # SAM runs build-<LogicalId> for each makefile function (it never shares those builds):
    # both targets must run the very same recipe, so both functions ship the same bundle.
    recipes = {}
    for fid in ("OcrFunction", "WorkerFunction"):
        proc = subprocess.run(["make", "--no-print-directory", "-n", "-f", str(makefile),
                               f"build-{fid}", "ARTIFACTS_DIR=/nonexistent/bundle"],
                              cwd=code, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        recipes[fid] = proc.stdout
    assert "pip install" in recipes["OcrFunction"]
    assert recipes["WorkerFunction"] == recipes["OcrFunction"]


def test_queue_visibility_is_six_times_the_worker_timeout(expanded):
    """SQS event sources want visibility >= 6 x the function's timeout (DESIGN section 4)."""
    res = expanded["Resources"]
    timeout = res["WorkerFunction"]["Properties"]["Timeout"]
    queue = res["UploadsQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == 6 * timeout


def test_dead_letter_queue(expanded):
    res = expanded["Resources"]
    queue, dlq = res["UploadsQueue"]["Properties"], res["UploadsDeadLetterQueue"]["Properties"]
    assert res["UploadsDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 3}
    # A standard queue keeps a message's first enqueue time in the DLQ: keep it longer there.
    assert dlq["MessageRetentionPeriod"] > queue.get("MessageRetentionPeriod", 345600)
    assert dlq["MessageRetentionPeriod"] >= 7 * 86400
    # Encrypted (checkov's CKV_AWS_27 knows only KMS: infra/checkov-skips.yaml relies on this),
    # with SSE-SQS, to which S3 can deliver.
    for q in (queue, dlq):
        assert q.get("SqsManagedSseEnabled") is True
        assert "KmsMasterKeyId" not in q


def test_uploads_notify_the_queue(expanded):
    """uploads/ only (the worker's writes must never wake it); the bucket waits for the queue
    policy (S3 checks the destination); the policy names the bucket without referencing it."""
    res = expanded["Resources"]
    bucket = res["ResultsBucket"]
    notif = bucket["Properties"]["NotificationConfiguration"]
    assert set(notif) == {"QueueConfigurations"}, "no Lambda or SNS notifications"
    (config,) = notif["QueueConfigurations"]
    assert config["Event"] == "s3:ObjectCreated:*"
    assert config["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert config["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}}
    depends = bucket.get("DependsOn", [])
    assert "UploadsQueuePolicy" in ([depends] if isinstance(depends, str) else depends)

    name = bucket["Properties"]["BucketName"]["Fn::Sub"]
    assert name.startswith("${AWS::StackName}-${AWS::AccountId}-")
    assert re.fullmatch(r"[a-z0-9.${}:-]+", name.replace("AWS::StackName", "").replace(
        "AWS::AccountId", "").replace("AWS::Region", "")), "the rest must be lowercase-safe"
    policy = res["UploadsQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "UploadsQueue"}]
    (stmt,) = policy["PolicyDocument"]["Statement"]
    assert stmt["Effect"] == "Allow"
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Action"] == "sqs:SendMessage"
    assert stmt["Resource"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    cond = stmt["Condition"]
    assert cond["ArnEquals"]["aws:SourceArn"] == {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{name}"}
    assert cond["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert "ResultsBucket" not in json.dumps(policy), "a reference would be a cycle"


def test_stack_name_makes_a_valid_bucket_name():
    """CloudFormation cannot lower-case: the stack name must fit <stack>-<account>-<region>."""
    text = (ROOT / "infra" / "samconfig.toml").read_text()
    stack = re.search(r'^stack_name\s*=\s*"([^"]+)"', text, re.M).group(1)
    bucket = f"{stack}-123456789012-ap-southeast-1"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket), bucket


def test_lifecycle_rules(expanded):
    rules = expanded["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert all(r["Status"] == "Enabled" for r in rules)
    expiring = {r.get("Prefix", ""): r["ExpirationInDays"] for r in rules
                if "ExpirationInDays" in r}
    assert set(expiring) == {"uploads/", "status/"}, "results/ is never expired"
    assert 1 <= expiring["uploads/"] <= 30
    assert expiring["uploads/"] * 86400 >= expanded["Resources"]["UploadsQueue"]["Properties"][
        "MessageRetentionPeriod"], "a queued message must not outlive its upload"
    assert 1 <= expiring["status/"] <= 90
    abort = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert abort and not abort[0].get("Prefix"), "abort incomplete uploads everywhere"
    assert abort[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7


def test_upload_cors(expanded):
    """Browsers PUT to uploads/ with the presigned URL's headers; origins from a parameter
    (the distribution's domain would be a cycle: the bucket is its origin)."""
    cors = expanded["Resources"]["ResultsBucket"]["Properties"]["CorsConfiguration"]
    (rule,) = cors["CorsRules"]
    assert rule["AllowedMethods"] == ["PUT"]
    assert rule["AllowedOrigins"] == {"Ref": "UploadOrigins"}
    assert expanded["Parameters"]["UploadOrigins"]["Type"] == "CommaDelimitedList"
    assert {h.lower() for h in rule["AllowedHeaders"]} == {
        "content-type", "content-length", "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm"}
    assert rule["ExposedHeaders"] == ["ETag"]


# What each function's code does in S3 and SQS, path by path: (action, key prefix or queue).
CODE_PATHS: dict[str, dict[tuple[str, str], str]] = {
    "OcrFunction": {
        ("s3:GetObject", "results/*"): "lookup by hash: POST /ocr, GET /ocr/{hash}, POST /uploads",
        ("s3:PutObject", "results/*"): "synchronous path: the result (If-None-Match), thumbnails",
        ("s3:GetObject", "status/*"): "GET /ocr/{hash} and POST /uploads: progress, final errors",
        ("s3:PutObject", "status/*"): "POST /uploads and POST /ocr's 202 hand-off: queued",
        ("s3:PutObject", "uploads/*"): "POST /uploads presigns the browser's PUT; POST /ocr hands "
                                       "a long document to the worker by storing it there",
    },
    "WorkerFunction": {
        ("s3:GetObject", "uploads/*"): "read the uploaded document",
        ("s3:GetObject", "results/*"): "skip a known document, resume from stored pages, read "
                                       "the winner after a 412",
        ("s3:PutObject", "results/*"): "store each page, its thumbnail, then the result",
        ("s3:GetObject", "status/*"): "progress so far",
        ("s3:PutObject", "status/*"): "running, pages_done, failed on the last receive",
        ("sqs:SendMessage", "queue:UploadsQueue"): "continue a long document near the deadline",
    },
}
LAMBDA_BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
SQS_EVENT_SOURCE = "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
MANAGED = {"OcrFunction": {LAMBDA_BASIC}, "WorkerFunction": {LAMBDA_BASIC, SQS_EVENT_SOURCE}}


def _grant_target(resource: object, queues: set[str]) -> str:
    """`results/*` for "${ResultsBucket.Arn}/results/*", `queue:X` for queue X's ARN; anything
    else (the bucket itself, "${ResultsBucket.Arn}/*", "*", another bucket) fails."""
    if isinstance(resource, dict) and set(resource) == {"Fn::Sub"}:
        m = re.fullmatch(r"\$\{ResultsBucket\.Arn\}/((?:results|status|uploads)/\*)",
                         resource["Fn::Sub"])
        if m:
            return m.group(1)
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}:
        target, attr = resource["Fn::GetAtt"]
        if attr == "Arn" and target in queues:
            return f"queue:{target}"
    raise AssertionError(f"a grant broader than one prefix or queue: {resource!r}")


def test_iam_grants_exactly_what_the_code_paths_use(expanded):
    """Each function's role grants exactly the (action, key prefix) pairs its code paths
    make (CODE_PATHS), and nothing broader: no wildcard actions, no bucket-wide or "*"
    resources, no NotAction/NotResource, no managed policies beyond MANAGED.

    A read-the-template test on purpose: moto enforces no IAM, so the S3 and worker tests
    pass whatever the role allows; a missing grant would only show as AccessDenied in AWS.
    The event source's receive/delete come from SAM's managed SQS policy (MANAGED)."""
    res = expanded["Resources"]
    queues = set(_of_type(expanded, "AWS::SQS::Queue"))
    for fid, wanted in CODE_PATHS.items():
        role_id = res[fid]["Properties"]["Role"]["Fn::GetAtt"][0]
        role = res[role_id]["Properties"]
        granted: set[tuple[str, str]] = set()
        for policy in role.get("Policies", []):
            for s in policy["PolicyDocument"]["Statement"]:
                assert s["Effect"] == "Allow", s
                assert not {"NotAction", "NotResource", "NotPrincipal"} & set(s), s
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
                for action in actions:
                    assert "*" not in action, f"{fid}: wildcard action {action}"
                    granted |= {(action, _grant_target(r, queues)) for r in resources}
        assert granted == set(wanted), (
            f"{fid}: granted but unused {sorted(granted - set(wanted))}, "
            f"used but not granted {sorted(set(wanted) - granted)}")
        assert set(role.get("ManagedPolicyArns", [])) == MANAGED[fid], fid


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
    assert {("POST", "/ocr"), ("GET", "/ocr/{hash}"), ("POST", "/uploads"), ("GET", "/healthz"),
            ("GET", "/"), ("GET", "/config.json"), ("GET", "/favicon.ico"),
            ("GET", "/static/{proxy+}"), ("GET", "/docs"), ("GET", "/openapi.json")} <= routes
    # HEAD wherever GET, as the app serves it (otherwise API Gateway answers its own 404)
    gets = {path for method, path in routes if method == "GET"}
    assert gets and gets == {path for method, path in routes if method == "HEAD"}
    perm = _one(expanded, "AWS::Lambda::Permission")["Properties"]
    assert perm["Principal"] == "apigateway.amazonaws.com"
    assert perm["SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:"
                                            "${AWS::AccountId}:${HttpApi}/*"}
    # The integration is built from the function's name, not a reference to the function:
    body = json.dumps(api["Body"])
    assert "OcrFunction" not in body


# Every cache behaviour: path pattern -> (origin, cache policy). The page, its config, the
# favicon and the fingerprinted assets are cached from the API (they must carry the running
# function's pipeline id); results come from S3; every other API path is uncached.
PAGE, IMMUTABLE = {"Ref": "PageCachePolicy"}, {"Ref": "ImmutableCachePolicy"}
BEHAVIOURS = {
    "/results/*": ("results", CACHING_OPTIMIZED),
    "/static/*": ("api", IMMUTABLE),
    "/config.json": ("api", PAGE),
    "/favicon.ico": ("api", PAGE),
    "/ocr*": ("api", CACHING_DISABLED),
    "/uploads*": ("api", CACHING_DISABLED),
    "/healthz": ("api", CACHING_DISABLED),
    "/docs*": ("api", CACHING_DISABLED),
    "/openapi.json": ("api", CACHING_DISABLED),
    "/redoc": ("api", CACHING_DISABLED),
}


def _distribution(expanded: dict) -> dict:
    return _one(expanded, "AWS::CloudFront::Distribution")["Properties"]["DistributionConfig"]


def _behaviour_for(dist: dict, path: str) -> dict:
    """The behaviour CloudFront applies to ``path``: the first whose pattern matches (``*``
    any characters, ``?`` one; the leading slash optional), else the default."""
    for b in dist["CacheBehaviors"]:
        pattern = "/" + b["PathPattern"].lstrip("/")
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        if re.fullmatch(rx, path):
            return b
    return dist["DefaultCacheBehavior"]


def test_cloudfront_behaviours(expanded):
    dist = _distribution(expanded)
    origins = {o["Id"]: o for o in dist["Origins"]}
    s3 = next(o for o in origins.values() if "S3OriginConfig" in o)
    assert s3["Id"] == "results"
    assert s3["S3OriginConfig"]["OriginAccessIdentity"] == ""
    assert "OriginAccessControlId" in s3
    oac = _one(expanded, "AWS::CloudFront::OriginAccessControl")["Properties"]
    assert oac["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    api = next(o for o in origins.values() if "CustomOriginConfig" in o)
    assert api["Id"] == "api"
    assert api["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    got = {b["PathPattern"]: (b["TargetOriginId"], b["CachePolicyId"])
           for b in dist["CacheBehaviors"]}
    assert got == BEHAVIOURS
    for b in dist["CacheBehaviors"]:
        if b["CachePolicyId"] == CACHING_DISABLED:
            # uncached API paths get every viewer header (Origin, Content-Type...) but Host
            assert b["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST, b["PathPattern"]
        else:
            # cached paths forward only their cache key: nothing a viewer adds makes a miss
            assert "OriginRequestPolicyId" not in b, b["PathPattern"]
            assert b["AllowedMethods"] in (["GET", "HEAD"], ["GET", "HEAD", "OPTIONS"])
    assert {"POST", "OPTIONS"} <= set(_behaviour_for(dist, "/ocr")["AllowedMethods"])
    assert {"POST", "PUT"} <= set(_behaviour_for(dist, "/uploads")["AllowedMethods"])
    # The page itself: CloudFront has no pattern for "/" alone, so it is the default.
    default = dist["DefaultCacheBehavior"]
    assert default["TargetOriginId"] == "api"
    assert default["CachePolicyId"] == PAGE
    assert default["AllowedMethods"] == ["GET", "HEAD"]
    assert "OriginRequestPolicyId" not in default
    for b in (*dist["CacheBehaviors"], default):
        assert b["ViewerProtocolPolicy"] in ("redirect-to-https", "https-only")
        assert b["Compress"] is True
    errors = {e["ErrorCode"]: e for e in dist["CustomErrorResponses"]}
    for code in (403, 404):
        assert errors[code]["ErrorCachingMinTTL"] <= 5
        assert "ResponsePagePath" not in errors[code], "would replace the API's JSON errors"
    for code in (500, 502, 503, 504):
        assert errors[code]["ErrorCachingMinTTL"] == 0


def test_cache_policies_really_cache(expanded):
    """The page and config: the origin's Cache-Control decides (MinTTL 0), 60 s or more when
    it says nothing, keyed on the path alone; assets: a year (fingerprinted names)."""
    res = expanded["Resources"]
    for name in ("PageCachePolicy", "ImmutableCachePolicy"):
        assert res[name]["Type"] == "AWS::CloudFront::CachePolicy"
        config = res[name]["Properties"]["CachePolicyConfig"]
        key = config["ParametersInCacheKeyAndForwardedToOrigin"]
        assert key["CookiesConfig"] == {"CookieBehavior": "none"}, name
        assert key["HeadersConfig"] == {"HeaderBehavior": "none"}, name
        assert key["QueryStringsConfig"] == {"QueryStringBehavior": "none"}, name
        assert key["EnableAcceptEncodingGzip"] and key["EnableAcceptEncodingBrotli"], name
    page = res["PageCachePolicy"]["Properties"]["CachePolicyConfig"]
    assert page["MinTTL"] == 0, "a shorter max-age from the app must win"
    assert page["DefaultTTL"] >= 60, "at most one answer per minute per edge location"
    assert page["MaxTTL"] >= page["DefaultTTL"]
    assert page["MaxTTL"] <= 86400, "the page must follow a deploy within a day at worst"
    static = res["ImmutableCachePolicy"]["Properties"]["CachePolicyConfig"]
    assert static["DefaultTTL"] == static["MaxTTL"] == 31536000
    assert static["MinTTL"] >= 1


# The app's routes that reach the function in AWS, with the reason for those that do not.
NOT_IN_AWS = {
    ("PUT", "/uploads/{}"): "local stand-in for the presigned S3 PUT (S3 takes it in AWS)",
    ("GET", "/results/{}"): "served by CloudFront from S3",
    ("HEAD", "/results/{}"): "served by CloudFront from S3",
    ("GET", "/docs/oauth2-redirect"): "FastAPI's OAuth2 helper page; the API has no OAuth",
}
CACHED_PATHS = {"/", "/config.json", "/favicon.ico", "/static/{}"}


def _app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of the real app, path parameters as ``{}``."""
    from fastapi.routing import APIRoute
    from starlette.routing import Mount

    from edgeocr.http.app import create_app
    from edgeocr.settings import Settings
    from edgeocr.store import MemoryStore

    app = create_app(Settings(local_worker=False), store=MemoryStore())
    routes = set()
    for route in app.routes:
        path = re.sub(r"\{[^}]*\}", "{}", getattr(route, "path", ""))
        if isinstance(route, Mount):
            routes.add(("GET", path + "/{}"))
        elif isinstance(route, APIRoute) or hasattr(route, "methods"):
            routes |= {(m, path) for m in (route.methods or ()) if m != "HEAD" or
                       ("HEAD", path) in NOT_IN_AWS}
    return routes


def test_every_app_route_has_an_api_route_and_the_right_behaviour(expanded):
    """No drift between the app and the HTTP API's explicit routes (a route the API lacks is
    API Gateway's non-JSON 404 in AWS), and every dynamic path lands in an uncached
    behaviour while the page, config, favicon and assets land in cached ones."""
    api = _one(expanded, "AWS::ApiGatewayV2::Api")["Properties"]["Body"]["paths"]
    api_routes = {(m.upper(), re.sub(r"\{[^}]*\}", "{}", p)) for p, ops in api.items()
                  for m in ops if not m.startswith("x-")}
    app_routes = _app_routes()
    assert ("POST", "/ocr") in app_routes and ("GET", "/static/{}") in app_routes
    missing = app_routes - api_routes - set(NOT_IN_AWS)
    assert not missing, f"app routes the HTTP API does not route: {sorted(missing)}"
    dist = _distribution(expanded)
    for method, path in sorted(app_routes - set(NOT_IN_AWS)):
        sample = path.replace("{}", "a" * 64 if path.startswith("/ocr") else "x.js")
        b = _behaviour_for(dist, sample)
        if path in CACHED_PATHS:
            assert b["CachePolicyId"] != CACHING_DISABLED, path
        else:
            assert b["CachePolicyId"] == CACHING_DISABLED, f"{method} {path} would be cached"
            assert method in b["AllowedMethods"], (method, path)
    assert _behaviour_for(dist, "/results/p/h.json")["TargetOriginId"] == "results"
    assert _behaviour_for(dist, "/")["CachePolicyId"] == PAGE


def test_cdn_never_serves_uploads_or_status(expanded):
    """Only /results/* reaches the S3 origin, and OAC may read results/* alone: uploads/ and
    status/ (private, mutable) never come from the edge."""
    dist = _one(expanded, "AWS::CloudFront::Distribution")["Properties"]["DistributionConfig"]
    s3_ids = {o["Id"] for o in dist["Origins"] if "S3OriginConfig" in o}
    to_s3 = [b["PathPattern"] for b in dist["CacheBehaviors"] if b["TargetOriginId"] in s3_ids]
    assert to_s3 == ["/results/*"]
    assert dist["DefaultCacheBehavior"]["TargetOriginId"] not in s3_ids
    stmts = _one(expanded, "AWS::S3::BucketPolicy")["Properties"]["PolicyDocument"]["Statement"]
    for s in stmts:
        if s["Effect"] == "Allow":
            assert s["Resource"] == {"Fn::Sub": "${ResultsBucket.Arn}/results/*"}, s


def test_outputs(expanded):
    outputs = expanded["Outputs"]
    assert {"ApiUrl", "CdnUrl", "BucketName"} <= set(outputs)
    assert outputs["UploadsQueueUrl"]["Value"] == {"Ref": "UploadsQueue"}
    assert outputs["DeadLetterQueueName"]["Value"] == {
        "Fn::GetAtt": ["UploadsDeadLetterQueue", "QueueName"]}


def test_samconfig_points_at_the_template():
    """``sam build``/``validate`` (run from the repository root) read infra/template.yaml,
    build where the Makefile builds, ``sam deploy`` deploys what ``sam build`` wrote, and
    every parameter override names a parameter the template has (with an allowed value)."""
    import tomllib

    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text())["default"]
    for command in ("build", "validate"):
        path = config[command]["parameters"]["template_file"]
        assert (ROOT / path).resolve() == TEMPLATE.resolve(), (command, path)
    build_dir = config["build"]["parameters"]["build_dir"]
    assert (ROOT / build_dir).resolve() == BUILD_DIR.resolve()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^SAM_BUILD_DIR := {re.escape(build_dir)}$", makefile, re.M)
    assert re.search(rf"^TEMPLATE := {re.escape(path)}$", makefile, re.M)
    deploy = config["deploy"]["parameters"]
    assert (ROOT / deploy["template_file"]).resolve() == (BUILD_DIR / "template.yaml").resolve()
    assert "CAPABILITY_IAM" in deploy["capabilities"].split()
    parameters = _raw()["Parameters"]
    for where in (config["build"]["parameters"], deploy):
        for override in where["parameter_overrides"].split():
            name, value = override.split("=", 1)
            assert name in parameters, f"{override}: the template has no parameter {name}"
            allowed = parameters[name].get("AllowedValues")
            assert allowed is None or value in allowed, (override, allowed)


# ----------------------------------------------------- SnapStart, throttling, logs (issue 9)


def test_api_runs_the_snapstart_alias(expanded):
    """SnapStart snapshots published versions only (DESIGN section 4): the function publishes
    the `live` alias on every change, and the integration and the invoke permission name
    the alias; an unqualified integration would run $LATEST and ignore the snapshot."""
    raw = _raw()["Resources"]["OcrFunction"]["Properties"]
    assert raw["AutoPublishAlias"] == "live"
    assert raw["AutoPublishAliasAllProperties"] is True, "a new layer must publish a version"
    res = expanded["Resources"]
    fn = res["OcrFunction"]["Properties"]
    assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert fn["EphemeralStorage"]["Size"] <= 512, "SnapStart allows 512 MB of /tmp at most"
    assert fn["Runtime"] in ("python3.12", "python3.13"), "SnapStart for Python needs 3.12+"
    (alias_id, alias), = _of_type(expanded, "AWS::Lambda::Alias").items()
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionName"] == {"Ref": "OcrFunction"}
    version_id = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
    assert res[version_id]["Type"] == "AWS::Lambda::Version"
    assert res[version_id]["Properties"]["FunctionName"] == {"Ref": "OcrFunction"}
    body = _one(expanded, "AWS::ApiGatewayV2::Api")["Properties"]["Body"]
    uri = body["components"]["x-amazon-apigateway-integrations"]["ocr"]["uri"]["Fn::Sub"]
    assert uri.endswith(":function:${AWS::StackName}-ocr:live/invocations"), uri
    assert fn["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-ocr"}, "the URI spells it"
    perm = _one(expanded, "AWS::Lambda::Permission")["Properties"]
    assert perm["FunctionName"] == {"Ref": alias_id}
    # The worker: no SnapStart (its 1 GB /tmp rules it out; SQS-driven, no user waits).
    worker = res["WorkerFunction"]["Properties"]
    assert "SnapStart" not in worker
    assert "AutoPublishAlias" not in _raw()["Resources"]["WorkerFunction"]["Properties"]


def test_http_api_throttling(expanded):
    (stage,) = _of_type(expanded, "AWS::ApiGatewayV2::Stage").values()
    routes = stage["Properties"]["DefaultRouteSettings"]
    assert routes["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert routes["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurstLimit"}
    params = expanded["Parameters"]
    rate = int(params["ThrottlingRateLimit"]["Default"])
    burst = int(params["ThrottlingBurstLimit"]["Default"])
    assert 1 <= rate <= burst, (rate, burst)
    assert int(params["ThrottlingRateLimit"]["MinValue"]) >= 1, "0 would refuse everything"


def test_access_logs_and_json_function_logs(expanded):
    res = expanded["Resources"]
    (stage,) = _of_type(expanded, "AWS::ApiGatewayV2::Stage").values()
    logs = stage["Properties"]["AccessLogSettings"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(logs["Format"])  # one JSON object per request
    assert {"requestId", "status", "routeKey", "integrationError", "error"} <= set(fields)
    assert all(v.startswith("$context.") for v in fields.values()), fields
    group = res["ApiAccessLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    for fid in ("OcrFunction", "WorkerFunction"):
        config = res[fid]["Properties"]["LoggingConfig"]
        assert config["LogFormat"] == "JSON", fid
        group_id = config["LogGroup"]["Ref"]
        assert res[group_id]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# ------------------------------------------------------------------------------ alarms


def _alarms(expanded: dict) -> dict[str, dict]:
    return _of_type(expanded, "AWS::CloudWatch::Alarm")


def _dims(alarm: dict) -> dict[str, object]:
    return {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}


def test_alarms_only_with_a_topic(expanded):
    conds = expanded["Conditions"]
    assert conds["HasAlarms"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    assert conds["InUsEast1"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    assert conds["HasCdnAlarm"] == {"Fn::And": [{"Condition": "HasAlarms"},
                                                {"Condition": "InUsEast1"}]}
    assert expanded["Parameters"]["AlarmTopicArn"]["Default"] == ""
    alarms = _alarms(expanded)
    assert len(alarms) == 10, sorted(alarms)  # 3 per function, 2 EMF, DLQ, CloudFront
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        cloudfront = props["Namespace"] == "AWS/CloudFront"
        assert alarm["Condition"] == ("HasCdnAlarm" if cloudfront else "HasAlarms"), name
        assert props["AlarmActions"] == [{"Ref": "AlarmTopicArn"}], name
        assert props["OKActions"] == [{"Ref": "AlarmTopicArn"}], name
        assert props["TreatMissingData"] == "notBreaching", name
    # The regional limit of CloudFront's metrics is explained where the alarm is.
    text = TEMPLATE.read_text()
    note = text[text.index("CloudFront's 5xxErrorRate"):text.index("  CdnErrorRateAlarm:")]
    assert "us-east-1" in note and "put-metric-alarm" in note


def test_lambda_alarms(expanded):
    """Errors and throttles of both functions; p99 duration at 80 % of each timeout."""
    res = expanded["Resources"]
    found: dict[tuple[str, str], dict] = {}
    for alarm in _alarms(expanded).values():
        props = alarm["Properties"]
        if props["Namespace"] == "AWS/Lambda":
            (fid,) = [v["Ref"] for v in _dims(alarm).values()]
            found[(fid, props["MetricName"])] = props
    assert set(found) == {(f, m) for f in ("OcrFunction", "WorkerFunction")
                          for m in ("Errors", "Throttles", "Duration")}
    for fid in ("OcrFunction", "WorkerFunction"):
        for metric in ("Errors", "Throttles"):
            props = found[(fid, metric)]
            assert props["Statistic"] == "Sum" and props["Threshold"] == 1, (fid, metric)
            assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        duration = found[(fid, "Duration")]
        assert duration["ExtendedStatistic"] == "p99"
        timeout_ms = res[fid]["Properties"]["Timeout"] * 1000
        assert duration["Threshold"] == 0.8 * timeout_ms, (fid, duration["Threshold"])
        assert duration["ComparisonOperator"] == "GreaterThanThreshold"


def _emitted_metric(capsys, monkeypatch, status: int, headers: list) -> dict:
    """The EMF line RequestLogMiddleware prints for one response, as Lambda would see it."""
    import asyncio

    from edgeocr.http.request_log import RequestLogMiddleware

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    scope = {"type": "http", "method": "POST", "path": "/ocr", "headers": []}
    capsys.readouterr()
    asyncio.run(RequestLogMiddleware(app)(scope, receive, send))
    for line in capsys.readouterr().out.splitlines():
        doc = json.loads(line) if line.startswith("{") else {}
        if "_aws" in doc:
            return doc
    raise AssertionError("no EMF line printed")


@pytest.mark.parametrize(("outcome", "status", "headers"), [
    ("server_error", 503, []),
    ("store_failure", 200, [(b"x-edgeocr-cache", b"miss"), (b"x-edgeocr-stored", b"false")]),
])
def test_emf_alarms_match_what_the_app_emits(expanded, capsys, monkeypatch, outcome, status,
                                             headers):
    """CloudWatch matches a metric's dimension set exactly: the alarm must name every
    dimension the app's EMF line carries (outcome, and the service Powertools adds from
    POWERTOOLS_SERVICE_NAME), with the template's own service name."""
    env = expanded["Globals"]["Function"]["Environment"]["Variables"] if "Globals" in expanded \
        else _raw()["Globals"]["Function"]["Environment"]["Variables"]
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", env["POWERTOOLS_SERVICE_NAME"])
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    doc = _emitted_metric(capsys, monkeypatch, status, headers)
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    (dims,) = directive["Dimensions"]
    emitted = {name: doc[name] for name in dims}
    assert emitted["outcome"] == outcome
    (metric,) = [m["Name"] for m in directive["Metrics"]]
    matches = [a for a in _alarms(expanded).values()
               if a["Properties"]["Namespace"] == directive["Namespace"]
               and a["Properties"]["MetricName"] == metric and _dims(a) == emitted]
    assert len(matches) == 1, (directive["Namespace"], metric, emitted)
    props = matches[0]["Properties"]
    assert props["Statistic"] == "Sum" and props["Threshold"] >= 1


def test_dead_letter_and_cdn_alarms(expanded):
    alarms = {a["Properties"]["Namespace"]: a for a in _alarms(expanded).values()
              if a["Properties"]["Namespace"] in ("AWS/SQS", "AWS/CloudFront")}
    dlq = alarms["AWS/SQS"]["Properties"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert _dims(alarms["AWS/SQS"]) == {
        "QueueName": {"Fn::GetAtt": ["UploadsDeadLetterQueue", "QueueName"]}}
    assert dlq["Threshold"] == 0 and dlq["ComparisonOperator"] == "GreaterThanThreshold"
    cdn = alarms["AWS/CloudFront"]["Properties"]
    assert cdn["MetricName"] == "5xxErrorRate"
    assert _dims(alarms["AWS/CloudFront"]) == {"DistributionId": {"Ref": "Distribution"},
                                                "Region": "Global"}
    assert 0 < cdn["Threshold"] <= 10 and cdn["Statistic"] == "Average"


# -------------------------------------------------------------------------------- secrets


def _resolve(secret_sub: str) -> dict:
    return {"Fn::Sub": "{{resolve:secretsmanager:${" + secret_sub + "}:SecretString}}"}


def test_hash_secret_comes_from_secrets_manager(expanded):
    """No plain (NoEcho) parameter holds a secret: the HMAC key is resolved from Secrets
    Manager at deploy time, named by a parameter; empty = plain SHA-256."""
    params = expanded["Parameters"]
    assert not [p for p, v in params.items() if v.get("NoEcho")], "a secret as a parameter"
    assert "HashSecret" not in params
    assert params["HashSecretName"]["Default"] == ""
    assert expanded["Conditions"]["HasHashSecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "HashSecretName"}, ""]}]}
    for fid in ("OcrFunction", "WorkerFunction"):
        env = expanded["Resources"][fid]["Properties"]["Environment"]["Variables"]
        assert env["OCR_HASH_SECRET"] == {"Fn::If": [
            "HasHashSecret", _resolve("HashSecretName"), {"Ref": "AWS::NoValue"}]}, fid


ORIGIN_HEADER = "X-Origin-Verify"


def test_cloudfront_sends_the_origin_secret_the_function_expects(expanded):
    res = expanded["Resources"]
    secret = res["OriginVerifySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Condition"] == "HasOriginVerify"
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and generated["ExcludePunctuation"] is True
    assert expanded["Parameters"]["OriginVerify"]["Default"] == "enabled"
    assert expanded["Conditions"]["HasOriginVerify"] == {
        "Fn::Equals": [{"Ref": "OriginVerify"}, "enabled"]}
    api = next(o for o in _distribution(expanded)["Origins"] if o["Id"] == "api")
    assert api["OriginCustomHeaders"] == {"Fn::If": [
        "HasOriginVerify",
        [{"HeaderName": ORIGIN_HEADER, "HeaderValue": _resolve("OriginVerifySecret")}],
        {"Ref": "AWS::NoValue"}]}
    env = res["OcrFunction"]["Properties"]["Environment"]["Variables"]
    assert env["OCR_ORIGIN_SECRET"] == {"Fn::If": [
        "HasOriginVerify", _resolve("OriginVerifySecret"), {"Ref": "AWS::NoValue"}]}
    worker = res["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert "OCR_ORIGIN_SECRET" not in worker, "the worker serves no HTTP"


def _asgi_client(secret: str | None):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from edgeocr.http.origin_verify import OriginVerify

    async def ok(request):
        return JSONResponse({"ok": True, "body": (await request.body()).decode()})

    inner = Starlette(routes=[Route("/x", ok, methods=["GET", "POST"])])
    return TestClient(OriginVerify(inner, ORIGIN_HEADER, secret))


def test_origin_verify_middleware_checks_the_templates_header():
    """The header the distribution adds (ORIGIN_HEADER, checked above) is the one the
    middleware reads: missing, wrong or repeated -> 403 JSON forbidden; right -> through,
    body intact; no secret (local) -> everything through."""
    client = _asgi_client("s3cret-value")
    for headers in ({}, {ORIGIN_HEADER: "wrong"}, {ORIGIN_HEADER.lower(): "s3cret-valu"},
                    [(ORIGIN_HEADER, "s3cret-value"), (ORIGIN_HEADER, "s3cret-value")]):
        resp = client.get("/x", headers=headers)
        assert resp.status_code == 403, headers
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["cache-control"] == "no-store"
        assert resp.json()["error"]["code"] == "forbidden"
        assert resp.json()["error"]["message"]
    resp = client.post("/x", content=b"payload", headers={ORIGIN_HEADER.lower(): "s3cret-value"})
    assert resp.status_code == 200 and resp.json() == {"ok": True, "body": "payload"}
    for secret in (None, ""):
        assert _asgi_client(secret).get("/x").status_code == 200


def test_app_refuses_requests_without_the_origin_header(monkeypatch):
    from starlette.testclient import TestClient

    from edgeocr.http.app import create_app
    from edgeocr.settings import Settings
    from edgeocr.store import MemoryStore

    monkeypatch.setenv("OCR_ORIGIN_SECRET", "s3cret-value")
    settings = Settings.from_env()
    client = TestClient(create_app(settings, store=MemoryStore()))
    assert client.get("/healthz").status_code == 403
    assert client.get("/healthz", headers={ORIGIN_HEADER: "s3cret-value"}).status_code == 200
    monkeypatch.delenv("OCR_ORIGIN_SECRET")
    local = TestClient(create_app(Settings.from_env(), store=MemoryStore()))
    assert local.get("/healthz").status_code == 200, "off locally"


# --------------------------------------------------------------------------------- CORS


def test_cors_is_api_gateways_and_matches_the_app(expanded):
    """CORS works end to end or not at all: with CorsOrigins set, API Gateway answers the
    preflight and sets the headers (x-amazon-apigateway-cors), allowing what the app's own
    CORSMiddleware allows, and the app gets the same origins (OCR_CORS_ORIGINS)."""
    from starlette.middleware.cors import CORSMiddleware

    from edgeocr.http.app import create_app
    from edgeocr.settings import Settings
    from edgeocr.store import MemoryStore

    assert expanded["Conditions"]["HasCors"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "CorsOrigins"}]}, ""]}]}
    assert expanded["Parameters"]["CorsOrigins"]["Type"] == "CommaDelimitedList"
    assert expanded["Parameters"]["CorsOrigins"]["Default"] == "", "same-origin by default"
    body = _one(expanded, "AWS::ApiGatewayV2::Api")["Properties"]["Body"]
    cond, cors, otherwise = body["x-amazon-apigateway-cors"]["Fn::If"]
    assert (cond, otherwise) == ("HasCors", {"Ref": "AWS::NoValue"})
    assert cors["allowOrigins"] == {"Ref": "CorsOrigins"}
    env = expanded["Resources"]["OcrFunction"]["Properties"]["Environment"]["Variables"]
    assert env["OCR_CORS_ORIGINS"] == {"Fn::If": [
        "HasCors", {"Fn::Join": [",", {"Ref": "CorsOrigins"}]}, {"Ref": "AWS::NoValue"}]}
    app = create_app(Settings(cors_origins=("https://example.org",), local_worker=False),
                     store=MemoryStore())
    (mw,) = [m for m in app.user_middleware if issubclass(m.cls, CORSMiddleware)]
    opts = mw.kwargs

    def low(values):
        return {v.lower() for v in values}

    # PUT is the local upload stand-in's (PUT /uploads/{sha256}); in AWS the browser PUTs to
    # S3, whose own CORS rule (UploadOrigins) allows it.
    assert low(cors["allowMethods"]) == low(opts["allow_methods"]) - {"put"}
    assert low(cors["allowHeaders"]) == low(opts["allow_headers"])
    assert low(cors["exposeHeaders"]) == low(opts["expose_headers"])
    assert 0 < cors["maxAge"] <= 86400


# --------------------------------------------------------------- the edge's 413 (POST /ocr)

EDGE_JS = ROOT / "infra" / "edge" / "viewer_request.js"
LAMBDA_PAYLOAD = 6_291_556  # bytes: Lambda's synchronous invoke payload limit ("6 MB")


def _edge_limit() -> int:
    return int(re.search(r"var MAX_INVOKE_BODY = (\d+);", EDGE_JS.read_text()).group(1))


def test_body_limit_function_is_the_file_and_is_on_post_ocr(expanded):
    res = expanded["Resources"]
    fn = res["OcrBodyLimitFunction"]
    assert fn["Type"] == "AWS::CloudFront::Function"
    props = fn["Properties"]
    assert props["FunctionCode"] == EDGE_JS.read_text(), (
        "infra/template.yaml's FunctionCode and infra/edge/viewer_request.js differ: paste "
        "the file into the template (indented under FunctionCode: |)")
    assert props["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"
    assert props["AutoPublish"] is True, "an unpublished function cannot be associated"
    dist = _distribution(expanded)
    assert _behaviour_for(dist, "/ocr")["FunctionAssociations"] == [{
        "EventType": "viewer-request",
        "FunctionARN": {"Fn::GetAtt": ["OcrBodyLimitFunction", "FunctionMetadata.FunctionARN"]}}]
    others = [b["PathPattern"] for b in dist["CacheBehaviors"] if "FunctionAssociations" in b]
    assert others == ["/ocr*"]
    # What can reach Lambda: base64 (4/3) plus headroom for the event's headers and context.
    limit = _edge_limit()
    assert limit * 4 / 3 + 16 * 1024 <= LAMBDA_PAYLOAD, limit
    assert limit >= 4_400_000, "DESIGN section 4: about 4.4 MB of raw image must get through"


_NODE_RUNNER = r"""
const fs = require('fs'), vm = require('vm');
const code = fs.readFileSync(process.argv[1], 'utf8');
const ctx = {};
vm.createContext(ctx);
vm.runInContext(code, ctx);
const events = JSON.parse(fs.readFileSync(0, 'utf8'));
console.log(JSON.stringify(events.map((e) => ctx.handler(e))));
"""


def _cf_event(method: str, uri: str, length: int | None) -> dict:
    headers = {"host": {"value": "d111111abcdef8.cloudfront.net"}}
    if length is not None:
        headers["content-length"] = {"value": str(length)}
    return {"version": "1.0", "context": {"eventType": "viewer-request"},
            "viewer": {"ip": "198.51.100.7"},
            "request": {"method": method, "uri": uri, "querystring": {}, "headers": headers,
                        "cookies": {}}}


def test_body_limit_function_under_node():
    """The function's logic on sample events, run by node as CloudFront would call it: our
    JSON 413 for POST /ocr over the limit; everything else returned unchanged."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (Debian nodejs) to run the CloudFront Function")
    limit = _edge_limit()
    cases = [("POST", "/ocr", limit + 1, True), ("POST", "/ocr", 50 * 1024 * 1024, True),
             ("POST", "/ocr", limit, False), ("POST", "/ocr", 1000, False),
             ("POST", "/ocr", None, False),  # chunked: no Content-Length
             ("GET", "/ocr/" + "a" * 64, limit + 1, False),
             ("POST", "/ocrx", limit + 1, False), ("POST", "/uploads", limit + 1, False)]
    events = [_cf_event(m, u, n) for m, u, n, _ in cases]
    proc = subprocess.run([node, "-e", _NODE_RUNNER, str(EDGE_JS)], input=json.dumps(events),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    for (method, uri, length, refused), event, got in zip(cases, events, answers, strict=True):
        if not refused:
            assert got == event["request"], (method, uri, length)
            continue
        assert got["statusCode"] == 413, (method, uri, length)
        assert got["headers"]["content-type"] == {"value": "application/json"}
        assert got["headers"]["cache-control"] == {"value": "no-store"}
        assert got["body"]["encoding"] == "text"
        err = json.loads(got["body"]["data"])["error"]
        assert err["code"] == "too_many_bytes"
        assert "POST /uploads" in err["message"] and str(length) in err["message"]


def _settings_max_bytes() -> int:
    from edgeocr.settings import Settings

    return Settings().max_bytes


def test_app_limit_is_below_the_edge_limit():
    """Bodies the app refuses itself must be ones that reach it: OCR_MAX_BYTES's default,
    even as multipart (a few hundred bytes more) or base64 JSON (4/3, checked by the app
    against max_bytes * 4/3), stays under the edge's limit and Lambda's payload."""
    max_bytes = _settings_max_bytes()
    assert max_bytes + 64 * 1024 <= _edge_limit()


# ------------------------------------------------------------------ boto3 in the bundle


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "functions" / "ocr" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_bundle_pins_boto3_with_conditional_writes():
    """boto3/botocore ship in the bundle, pinned to the dev venv's versions: PutObject's
    IfNoneMatch (write-once results) exists from botocore 1.35 on and a runtime's own copy
    may predate it; their whole closure is pinned too (pip installs with --no-deps)."""
    from importlib.metadata import requires, version

    from botocore.loaders import Loader
    from packaging.requirements import Requirement

    pins = _requirements()
    for pkg in ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six",
                "urllib3", "snapshot-restore-py"):
        assert pkg in pins, f"{pkg} is not pinned in requirements.txt"
    # The dev venv runs the bundle's client where pyproject.toml pins it exactly (as it should:
    # then tests exercise what production runs), and never contradicts the bundle's pin.
    project = (ROOT / "pyproject.toml").read_text()
    (boto3_spec,) = re.findall(r'"(boto3[^"]*)"', project)
    assert Requirement(boto3_spec).specifier.contains(pins["boto3"]), boto3_spec
    if "==" in boto3_spec:
        for pkg in ("boto3", "botocore", "s3transfer"):
            assert pins[pkg] == version(pkg), (pkg, pins[pkg], version(pkg))
    for pkg in ("boto3", "botocore", "s3transfer", "python-dateutil"):
        for spec in requires(pkg) or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                name = req.name.lower().replace("_", "-")
                assert name in pins, f"{pkg} needs {name}, which requirements.txt lacks"
                assert req.specifier.contains(pins[name], prereleases=True), (pkg, req)
    model = Loader().load_service_model("s3", "service-2")
    members = model["shapes"]["PutObjectRequest"]["members"]
    assert {"IfNoneMatch", "ChecksumSHA256"} <= set(members)



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
    fns = {fn["function"]: fn for fn in sam_build["functions"]}
    assert set(fns) == {"OcrFunction", "WorkerFunction"}
    assert sam_build["returncode"] == 0
    for fn in fns.values():
        print(f"\nsam build {sam_build['build_seconds']:.0f} s; {fn['function']}: "
              f"{fn['total_mib']} MiB unzipped (target {TARGET_MIB} MiB)")
        assert fn["total_bytes"] <= TARGET_MIB * 1024 * 1024, json.dumps(fn, indent=1)
        kinds = sorted(a["kind"] for a in fn["artifacts"])
        assert kinds == ["function", "layer"]
        parts = next(a for a in fn["artifacts"] if a["kind"] == "function")["parts"]
        for pkg in ("edgeocr/", "cv2/", "numpy/", "onnxruntime/", "PIL/", "fastapi/", "mangum/",
                    # bundled on purpose, not the runtime's: IfNoneMatch on PutObject needs
                    # botocore >= 1.35 (see test_bundle_pins_boto3_with_conditional_writes)
                    "boto3/", "botocore/", "s3transfer/", "snapshot_restore_py.py"):
            assert pkg in parts, f"{pkg} missing from the bundle"
        for absent in ("sympy/", "mpmath/"):
            assert absent not in parts, f"{absent} should not be bundled"


@pytest.mark.slow
def test_built_bundle_has_the_pinned_botocore(sam_build):
    """The bundle's botocore is the pin, and its S3 model has PutObject's IfNoneMatch (the
    write-once store) and ChecksumSHA256 (presigned uploads)."""
    import gzip

    bundle = BUILD_DIR / "OcrFunction"
    pins = _requirements()
    for pkg, dist in (("boto3", "boto3"), ("botocore", "botocore"), ("s3transfer", "s3transfer")):
        assert (bundle / f"{dist}-{pins[pkg]}.dist-info").is_dir(), f"{pkg} {pins[pkg]}"
    model_dir = bundle / "botocore" / "data" / "s3" / "2006-03-01"
    (model,) = [p for p in model_dir.iterdir() if p.name.startswith("service-2.json")]
    raw = model.read_bytes()
    shapes = json.loads(gzip.decompress(raw) if model.suffix == ".gz" else raw)["shapes"]
    assert {"IfNoneMatch", "ChecksumSHA256"} <= set(shapes["PutObjectRequest"]["members"])


def _files(bundle: Path) -> dict[str, int]:
    """Relative path -> size, byte code left out (marshal output is not reproducible)."""
    return {str(p.relative_to(bundle)): p.stat().st_size for p in bundle.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_both_functions_ship_the_same_bundle(sam_build):
    api, worker = BUILD_DIR / "OcrFunction", BUILD_DIR / "WorkerFunction"
    a, w = _files(api), _files(worker)
    assert a == w, sorted(set(a.items()) ^ set(w.items()))[:20]
    for name in ("app.py", "edgeocr/settings.py"):
        assert (api / name).read_bytes() == (worker / name).read_bytes(), name


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
    # The handlers the template names: app.handler (OcrFunction), app.worker (WorkerFunction).
    for fid, handler in (("OcrFunction", "handler"), ("WorkerFunction", "worker")):
        code = BUILD_DIR / fid
        proc = subprocess.run(
            [py, "-S", "-E", "-c", f"import sys; sys.path[:0] = [{str(code)!r}]; import app; "
             f"assert callable(app.{handler}), 'app.{handler}'"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]


_SNAPSTART = r"""
import json, sys
sys.path[:0] = [sys.argv[1]]
import snapshot_restore_py
from snapshot_restore_py import get_after_restore, get_before_snapshot
from edgeocr import snapstart
from edgeocr.settings import Settings
from edgeocr.store import MemoryStore
from edgeocr.wiring import build_service
service = build_service(Settings.from_env(), MemoryStore())
assert snapstart.register(service)
(before, args, kwargs), = get_before_snapshot()
done = before(*args, **kwargs)
(after, aargs, akwargs), = get_after_restore()
after(*aargs, **akwargs)
print(json.dumps({"lib": snapshot_restore_py.__file__, "done": done,
                  "loaded": service.engine.loaded}))
"""


@pytest.mark.slow
def test_built_bundle_runs_the_snapstart_hooks(sam_build):
    """Under CPython 3.12 with only the bundle: the pinned snapshot_restore_py registers
    edgeocr/snapstart.py's hooks, and the before-snapshot hook builds the engine and reads
    its warm-up line (Pillow's bundled font, the real sessions), as Lambda would run it
    when publishing a version."""
    py = _python312()
    if py is None:
        pytest.skip("no CPython 3.12 here to run the python3.12 bundle with")
    bundle = BUILD_DIR / "OcrFunction"
    env = {"PATH": os.environ.get("PATH", ""), "OCR_THREADS": "2",
           "OCR_MODEL_DIR": str(BUILD_DIR / "ModelLayer" / "model")}
    proc = subprocess.run([py, "-S", "-E", "-c", _SNAPSTART, str(bundle)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["lib"].startswith(str(bundle))
    assert got["loaded"] and got["done"]["engine"]
    assert got["done"]["warm_lines"] >= 1, got
    assert "botocore.exceptions" in got["done"]["imported"]


def test_cfn_loader_round_trip():
    """The tag loader used above keeps !GetAtt/!Sub meaning (guards the contract tests)."""
    doc = yaml.load("a: !GetAtt X.Arn\nb: !Sub '${Y}'\nc: !Ref Z\n", Loader=_CfnLoader)
    assert doc == {"a": {"Fn::GetAtt": ["X", "Arn"]}, "b": {"Fn::Sub": "${Y}"},
                   "c": {"Ref": "Z"}}


@pytest.mark.slow
def test_built_bundle_computes_the_local_pipeline_id(sam_build):
    """One commit, one id: the python3.12 bundle (its own numpy, OpenCV, ONNX Runtime, Pillow
    and pypdfium2 metadata, its copy of the sources) and this checkout's venv derive the
    same pipeline id, so a result stored by either is found by the other."""
    from edgeocr.settings import Settings
    from edgeocr.wiring import pipeline_for

    py = _python312()
    if py is None:
        pytest.skip("no CPython 3.12 here to run the python3.12 bundle with")
    models = BUILD_DIR / "ModelLayer" / "model"
    code = ("import sys; sys.path[:0] = [sys.argv[1]]\n"
            "from edgeocr.settings import Settings\nfrom edgeocr.wiring import pipeline_for\n"
            "print(pipeline_for(Settings.from_env()))")
    env = {"PATH": os.environ.get("PATH", ""), "OCR_MODEL_DIR": str(models)}
    proc = subprocess.run([py, "-S", "-E", "-c", code, str(BUILD_DIR / "OcrFunction")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == pipeline_for(Settings(model_dir=models))
