# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PBX_BRIDGE_CONFIG ?= config/pbx-bridge.toml

.PHONY: run test audit install install-test lint typecheck unit browser-deps mariadb-deps deploy-deps bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

install: $(BIN)/python
	$(BIN)/pip install -e '.[postgres,mysql]'

install-test: $(BIN)/python
	$(BIN)/pip install -e '.[test]'

## First command: install, migrate the database, run the server (SQLite under ./var and the
## built-in simulated PBX when no [[pbx]] is configured).
run: install
	$(BIN)/pbx-bridge db upgrade
	$(BIN)/pbx-bridge serve

## Second command: install everything and run every test (lint, types, unit, integration,
## PostgreSQL, real vosk model, browser).
test: install-test browser-deps mariadb-deps deploy-deps
	$(BIN)/ruff check pbx_bridge crm_sync recordings tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Known vulnerabilities in the installed dependencies (pip-audit; asks PyPI): fails on one with a
## fixed version, reports those without, says so and passes when PyPI cannot be reached.
audit: install-test
	$(BIN)/python .ci/audit

# Debian packages the tests use: chromium for the Playwright UI tests (no browser download: we
# point at /usr/bin/chromium), and sox, which a recordings test compares our WAV conversion with.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v sox >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium sox >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium sox >/dev/null; fi; \
	fi

# MariaDB for the CEL tests (FreePBX keeps Asterisk's CEL in MySQL/MariaDB, asteriskcdrdb.cel):
# Debian's mariadb-server, installed and started when it does not answer, like chromium. The
# tests connect as root over TCP (127.0.0.1:3306, no password), which a fresh install only allows
# on its socket: that account is added then.
mariadb-deps:
	@if ! mariadb -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		command -v mariadbd >/dev/null 2>&1 || { $$SUDO apt-get update -qq && \
			$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null; }; \
		$$SUDO mkdir -p /run/mysqld && $$SUDO chown mysql:mysql /run/mysqld; \
		$$SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql; \
		for i in $$(seq 60); do $$SUDO mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done; \
		$$SUDO mariadb -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
			GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"; \
		mariadb -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null || { echo "MariaDB did not start" >&2; exit 1; }; \
	fi

# What the deployment tests check the files in deploy/ with: systemd-analyze (Debian's systemd)
# verifies the units; promtool checks and unit-tests the alert rules. promtool is unpacked from
# Debian's prometheus package into the virtualenv: nothing is installed system-wide, no
# Prometheus service is set up or started.
PROMTOOL := $(VENV)/promtool/usr/bin/promtool
deploy-deps: $(BIN)/python
	@SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	if ! command -v systemd-analyze >/dev/null; then \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
	fi; \
	if [ ! -x $(PROMTOOL) ]; then \
		tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && \
		{ apt-get download prometheus >/dev/null 2>&1 || { $$SUDO apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } && \
		dpkg-deb -x prometheus_*.deb unpacked && mkdir -p $(abspath $(VENV))/promtool/usr/bin && \
		cp unpacked/usr/bin/promtool $(abspath $(PROMTOOL)) && cd / && rm -rf $$tmp; \
		$(abspath $(PROMTOOL)) --version >/dev/null || { echo "promtool did not install" >&2; exit 1; }; \
	fi

bench: install-test
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: install-test
	$(BIN)/python -m bench --soak $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
