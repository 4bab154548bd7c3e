PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test lint typecheck bench bench-full clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(STAMP_RUN) $(STAMP_DEV)

demo: $(STAMP_RUN)
	$(BIN)/signalfactory demo

test: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

bench: $(STAMP_BENCH)
	$(BIN)/python -m benchmarks --only gates
	$(BIN)/python -m benchmarks --only runtime --quick
	$(BIN)/python -m benchmarks --only bus
	$(BIN)/python -m benchmarks --only lineage

bench-full: $(STAMP_BENCH)
	$(BIN)/python -m benchmarks --only gates
	$(BIN)/python -m benchmarks --only runtime --scale 1
	$(BIN)/python -m benchmarks --only bus
	$(BIN)/python -m benchmarks --only lineage

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
