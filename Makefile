# edgeocr: `make serve` and `make test` set everything up themselves (venv, deps, models).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS := layers/model/build/model/.verified
PORT ?= 8000

.PHONY: setup serve test lint eval bench clean chromium nginx

setup: $(STAMP) $(MODELS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(MODELS): layers/model/manifest.json layers/model/build.py
	$(PYTHON) layers/model/build.py layers/model/build/model
	touch $@

# make serve [PORT=8000] [S3=moto] [EDGE=1]: the app on 127.0.0.1:$(PORT) (results in
# OCR_RESULTS_DIR, default ~/.cache/edgeocr/results; S3 when RESULTS_BUCKET is set). S3=moto: a
# bucket on a loopback moto server. EDGE=1: nginx on $(PORT) as the local CloudFront, caching
# /results/*, with the app behind it (needs nginx: `make nginx`). See scripts/serve.py.
serve: setup
	@$(PY) scripts/serve.py --port $(PORT) $(if $(S3),--s3 $(S3)) $(if $(filter-out 0 no false,$(EDGE)),--edge)

lint: setup
	$(VENV)/bin/ruff check functions scripts tests layers

test: setup lint chromium nginx checkov-venv doc-tools cjk-font
	$(VENV)/bin/pytest -q

# Debian Chromium for the browser tests (tests/test_web.py); a no-op once installed.
chromium:
	bash scripts/ensure_deb.sh chromium /usr/bin/chromium

# Debian tools and PDFs for tests/test_documents.py; a no-op once installed. poppler-utils:
# `pdftotext`, the ground truth of born-digital pages; qpdf: encrypted PDFs; libtasn1-doc: its
# pdfTeX manual (36 pages) is a born-digital PDF to read (no binary, so no ensure_deb.sh).
# shared-mime-info's spec PDF (base image) is the second one where the release ships it.
.PHONY: doc-tools
doc-tools:
	bash scripts/ensure_deb.sh poppler-utils pdftotext
	bash scripts/ensure_deb.sh qpdf qpdf
	test -f /usr/share/doc/libtasn1-doc/libtasn1.pdf || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtasn1-doc; }

# A Debian CJK font (WenQuanYi Zen Hei, as the eval's zh sets use) to render the vertical
# Chinese columns and the Chinese word-box lines of tests/test_words.py; a no-op once installed.
.PHONY: cjk-font
cjk-font:
	test -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-wqy-zenhei; }

# Debian nginx-light, the local CloudFront (`make serve EDGE=1`, tests/test_edge.py); a no-op
# once installed.
nginx:
	bash scripts/ensure_deb.sh nginx-light nginx

eval: setup
	$(PY) scripts/eval.py $(EVAL_ARGS)

bench: setup
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) layers/model/build .pytest_cache .ruff_cache

# --- AWS packaging (issue 3) ------------------------------------------------------------------
# The SAM CLI pins its own boto3/click/cfn-lint, so it lives in its own venv. All offline:
# cfn-lint + `sam validate --lint` need no credentials, `sam build` needs only PyPI.
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM_ENV := AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0
TEMPLATE := infra/template.yaml
SAM_BUILD_DIR := .aws-sam/build
ARCH ?= x86_64

.PHONY: sam-venv sam-validate sam-build package-size opencv-wheel

sam-venv: $(SAM_STAMP)

# uv installs the ~150 packages in ~15 s where pip takes ~5 min (sequential downloads); pip
# stays the fallback.
$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(SAM_VENV)/bin/uv pip install --quiet --python $(SAM_VENV)/bin/python \
		aws-sam-cli==$(SAM_CLI_VERSION) \
	|| $(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

# cfn-lint on the SAM template, `sam validate --lint`, and cfn-lint on the template as SAM
# expands it (the only one of the three that sees cycles through generated resources).
sam-validate: $(SAM_STAMP)
	$(SAM_ENV) $(SAM_VENV)/bin/cfn-lint $(TEMPLATE)
	$(SAM_ENV) $(SAM_VENV)/bin/sam validate --lint --template $(TEMPLATE)
	mkdir -p .aws-sam
	$(SAM_ENV) $(SAM_VENV)/bin/python infra/sam_translate.py $(TEMPLATE) .aws-sam/template.cfn.json
	$(SAM_ENV) $(SAM_VENV)/bin/cfn-lint -- .aws-sam/template.cfn.json

# The minimal OpenCV wheel the x86_64 bundle uses (a no-op when it is already built).
opencv-wheel:
	$(MAKE) -C functions/ocr opencv-wheel

# ARCH=arm64 builds the arm64 variant (SAM does not pass the architecture to make).
sam-build: $(SAM_STAMP)
	LAMBDA_ARCH=$(ARCH) $(SAM_ENV) $(SAM_VENV)/bin/sam build --template $(TEMPLATE) \
		--build-dir $(SAM_BUILD_DIR) --parameter-overrides Architecture=$(ARCH)

package-size: setup sam-build
	$(PY) scripts/package_size.py --build-dir $(SAM_BUILD_DIR)

# --- `sam local invoke` stand-in (issue 3) ----------------------------------------------------
# Docker does not run here, so scripts/invoke.py runs the sam-built artifact (function + layers)
# under awslambdaric, AWS's runtime client (CPython 3.12, in .venv-lambda/, made on first use),
# against a loopback Lambda Runtime API, with S3 on a moto server. Payloads on stdout as
# `sam local invoke` prints them; logs and START/END/REPORT timings on stderr. It does not
# build (`sam build` redoes everything each time): run `make sam-build` first.
#   make invoke EVENT=tests/events/post_raw_jpeg.json
#   make invoke EVENT="tests/events/post_raw_jpeg.json tests/events/post_raw_jpeg.json"
#     (several events: one runtime process, so the second POST is a cache hit)
#   INVOKE_ARGS="--json-lines --report FILE --env KEY=VALUE --s3-endpoint URL --bucket NAME"
EVENT ?= tests/events/post_raw_jpeg.json

.PHONY: invoke

invoke: setup
	@$(PY) scripts/invoke.py --build-dir $(SAM_BUILD_DIR) -e $(EVENT) $(INVOKE_ARGS)

# --- robustness (issue 5) ---------------------------------------------------------------------
# make fuzz: tests/test_fuzz.py under hypothesis's `long` profile (3 x 5,000 body cases and
# 2 x 6,000 document cases; fresh randomness; failures are kept in .hypothesis/ and replayed
# first). `make test` runs the
# bounded, derandomized `ci` profile.
# make load [LOAD_ARGS="--concurrency 8 --duration 30 --hit-ratio 0.5 --url URL"]: a bounded
# loopback load test; without --url it starts `edgeocr serve` itself on a free port.
# make checkov-venv: checkov in its own venv (it pins much of its own world), for
# tests/test_checkov.py; accepted findings and why: infra/checkov-skips.yaml.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

.PHONY: fuzz load checkov-venv

fuzz: setup
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q -p no:cacheprovider -p no:logging \
		tests/test_fuzz.py tests/test_fuzz_headers.py --hypothesis-show-statistics

load: setup
	$(PY) scripts/load.py $(LOAD_ARGS)

checkov-venv: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(CHECKOV_VENV)/bin/uv pip install --quiet --python $(CHECKOV_VENV)/bin/python \
		checkov==$(CHECKOV_VERSION) \
	|| $(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		checkov==$(CHECKOV_VERSION)
	touch $@
