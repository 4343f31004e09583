# edgeocr: `make serve` and `make test` set everything up themselves (venv, deps, models).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS := layers/model/build/model/.verified
PORT ?= 8000

.PHONY: setup serve test lint eval bench clean chromium

setup: $(STAMP) $(MODELS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(MODELS): layers/model/manifest.json layers/model/build.py
	$(PYTHON) layers/model/build.py layers/model/build/model
	touch $@

serve: setup
	PORT=$(PORT) $(VENV)/bin/edgeocr serve

lint: setup
	$(VENV)/bin/ruff check functions scripts tests layers

test: setup lint chromium
	$(VENV)/bin/pytest -q

# Debian Chromium for the browser tests (tests/test_web.py); a no-op once installed.
chromium:
	bash scripts/ensure_chromium.sh

eval: setup
	$(PY) scripts/eval.py $(EVAL_ARGS)

bench: setup
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) layers/model/build .pytest_cache .ruff_cache
