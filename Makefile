# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PBX_BRIDGE_CONFIG ?= config/pbx-bridge.toml

.PHONY: run test install install-test lint typecheck unit browser-deps bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

install: $(BIN)/python
	$(BIN)/pip install -e '.[postgres]'

install-test: $(BIN)/python
	$(BIN)/pip install -e '.[test]'

## First command: install, migrate the database, run the server (SQLite under ./var and the
## built-in simulated PBX when no [[pbx]] is configured).
run: install
	$(BIN)/pbx-bridge db upgrade
	$(BIN)/pbx-bridge serve

## Second command: install everything and run every test (lint, types, unit, integration,
## PostgreSQL, real vosk model, browser).
test: install-test browser-deps
	$(BIN)/ruff check pbx_bridge crm_sync recordings tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian packages the tests use: chromium for the Playwright UI tests (no browser download: we
# point at /usr/bin/chromium), and sox, which a recordings test compares our WAV conversion with.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v sox >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium sox >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium sox >/dev/null; fi; \
	fi

bench: install-test
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: install-test
	$(BIN)/python -m bench --soak $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
