# Developer verbs. `make run` and `make test` each set everything up from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= ac7.json

# python3 on these machines is 3.11; 3.12+ lives under pyenv, off PATH. Take the first suitable interpreter.
PYTHON ?= $(shell for c in python3.13 python3.12 \
    "$$(PYENV_VERSION=3.13.0 pyenv which python3 2>/dev/null)" \
    "$$(PYENV_VERSION=3.12.1 pyenv which python3 2>/dev/null)" \
    $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) python3; do \
  p=$$(command -v "$$c" 2>/dev/null) || continue; \
  "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$$p"; break; }; done)

CLAUDE_STAMP := tools/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: help venv tools browser run test check lint fmt typecheck pytest bench clean

help:
	@echo "make run    - set up .venv and start the broker on ./ac7.json (created with a demo team if absent)"
	@echo "make test   - set up .venv and run the whole suite: pytest, ruff, mypy"
	@echo "make lint | fmt | typecheck | bench | clean"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.12 found (tried PATH and pyenv)"; exit 1; }
	@echo "using $(PYTHON)"
	"$(PYTHON)" -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

# The real Claude Code CLI (pinned in tools/package-lock.json) for the end-to-end test. Its engines field asks
# for Node 22 but the package is a native binary, so Node 20's EBADENGINE warning is harmless.
$(CLAUDE_STAMP): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

tools: $(CLAUDE_STAMP)

# Headless Chromium for the web UI tests, from Debian (Playwright's own browser download cannot work here).
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: install chromium yourself, or set CHROMIUM=/path/to/chromium"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

run: $(STAMP)
	$(BIN)/ac7 serve --demo --config $(CONFIG)

test: $(STAMP) $(CLAUDE_STAMP) $(CHROMIUM)
	AC7_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -q
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tools/node_modules
