# The two commands in the README: `make run` and `make test`. Everything else is a helper they use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN := $(VENV)/.stamp-run
STAMP_DEV := $(VENV)/.stamp-dev

.PHONY: run test test-fast test-slow lint types format bench clean

## run: create .venv, install, create an identity if there is none, and run a node in the foreground.
run: $(STAMP_RUN)
	$(BIN)/village init --exist-ok
	$(BIN)/village run

## test: install dev dependencies, then lint, types, the default suite and the slow suite.
test: $(STAMP_DEV) lint types
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m slow

test-fast: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -x

test-slow: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP_DEV)
	$(BIN)/mypy

format: $(STAMP_DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP_DEV)
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/betanet.py
	$(BIN)/python bench/ble.py

$(BIN)/python:
	scripts/bootstrap-venv $(PYTHON) $(VENV)

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# libp2p depends on trio-typing, whose old trio-stubs would shadow trio's own (current) inline types
	# for mypy. Nothing imports the stubs at run time; trio_typing itself stays.
	rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	touch $@ $(STAMP_RUN)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
