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
    assert set(worker) - set(api) == {"UPLOADS_QUEUE_URL"}


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
            ("GET", "/"),
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
        for pkg in ("edgeocr/", "cv2/", "numpy/", "onnxruntime/", "PIL/", "fastapi/", "mangum/"):
            assert pkg in parts, f"{pkg} missing from the bundle"
        for absent in ("boto3/", "botocore/", "sympy/", "mpmath/"):
            assert absent not in parts, f"{absent} should not be bundled"


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
