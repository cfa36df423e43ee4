# `make help` lists the targets. The two a new user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Stage commands in dvc.yaml call `python`: make it the project's environment.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit bench lint deps format ui prefect-ui prefect-stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install the package, its pinned deps and dev tools

# uv installs the pinned set (constraints.txt) in half the time pip takes, into a venv that keeps
# pip; where uv cannot be had or fails, pip installs the same set. Both compile the bytecode at
# install (uv only when asked): with PYTHONDONTWRITEBYTECODE set, nothing would compile it later,
# and every fresh interpreter would compile TensorFlow's modules again (twice the import time).
UV ?= uv==0.13.9
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(UV) || $(BIN)/python -m pip install -q --upgrade pip
	[ -x $(BIN)/uv ] && $(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -c constraints.txt \
	  -e ".[dev]" \
	  || $(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $@

# The whole pipeline as the retraining flow: the stages of dvc.yaml, each run when DVC says it
# changed, two models' chains side by side (DVC itself runs one stage at a time), and dvc.lock
# committed as `dvc repro` leaves it. With PIPELINES_PREFECT=off, or RUNNER=dvc: `dvc repro`.
RUNNER ?= $(if $(filter off,$(PIPELINES_PREFECT)),dvc,threads)
run: install ## Install, then run the whole pipeline (every dvc.yaml stage) on the built-in data
	@[ -d .git ] || git init -q
	$(if $(filter dvc,$(RUNNER)),dvc repro,python -m pipelines.cli retrain --runner $(RUNNER) --no-push)
	@dvc metrics show
	@echo "Results: 'make ui' opens MLflow at http://127.0.0.1:5000 (Prefect UI: http://127.0.0.1:4200)"

# Tests run shuffled (pytest-randomly) with this seed, printed at the top of the run; every test
# must pass alone and in any order. `make test TEST_SEED=$$RANDOM` tries another order.
TEST_SEED ?= 1125
# Test processes (pytest-xdist), whole files each: the end-to-end project's module (the longest,
# put first by tests/conftest.py) on one, the other files beside it. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: install ## Install, then run every test (unit and end-to-end), in a shuffled order
	python -m pytest -p randomly -p no:cacheprovider --randomly-seed=$(TEST_SEED) $(PARALLEL)

test-unit: install ## Unit tests only: no model trained, no server started (about a minute)
	python -m pytest -m unit -p randomly --randomly-seed=$(TEST_SEED) $(PARALLEL)

BENCH_DIR ?= /tmp/pipelines-bench
# The bench extras go in before the run: a pip install afterwards would stop the stage server
# that the run started, and the first timed run would pay for the next one's start.
bench: ## Benchmark suite (about 3 h on 2 cores) in a scratch clone of HEAD; ONLY=name,... for a subset
	rm -rf $(BENCH_DIR) && git clone -q . $(BENCH_DIR)
	$(MAKE) -C $(BENCH_DIR) install
	cd $(BENCH_DIR) && .venv/bin/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(MAKE) -C $(BENCH_DIR) run
	cd $(BENCH_DIR) && .venv/bin/python bench/run.py $(if $(ONLY),--only $(ONLY))
	mkdir -p bench/out && cp -r $(BENCH_DIR)/bench/out/. bench/out/

lint: install ## ruff lint and format check, the type check (mypy) and the import contracts (pyproject.toml)
	ruff check . && ruff format --check pipelines tests tools && mypy && lint-imports && python tools/stage_deps.py --check

deps: install ## Rewrite the deps of dvc.yaml's code stage from the import graph
	python tools/stage_deps.py

format: install ## Apply ruff fixes and formatting
	ruff check --fix . && ruff format pipelines tests

ui: install ## MLflow UI on this project's store, opened on the training runs
	@MLFLOW_TRACKING_URI="sqlite:///$(CURDIR)/mlflow.db" python -m pipelines.cli ui-url --port 5000
	mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" -h 127.0.0.1 -p 5000

prefect-stop: install ## Stop the local Prefect server that the stages start on demand
	python -m pipelines.cli prefect-server stop

clean: ## Remove pipeline outputs (git-ignored files under data/ models/ reports/) and mlflow.db
	git clean -fdX -- data models reports
	rm -f mlflow.db
