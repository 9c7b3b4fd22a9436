# Quickstart: `make run` (whole pipeline on the synthetic shop) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test lint clean browser postgres

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/dvc repro
	$(BIN)/winback where

# Debian's chromium for tests/e2e/test_report_browser.py: installed when missing and we are root; otherwise
# a note, and that test skips saying why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test of report.html"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "note: chromium is not on PATH and we cannot install it (not root, or no apt-get):"; \
	  echo "      tests/e2e/test_report_browser.py will be skipped; install Debian's chromium to run it"; \
	fi

# Debian's postgresql (server binaries and libpq) for the warehouse-source tests, which start their own throwaway
# server on loopback (tests/postgres_server.py): installed when missing and we are root; otherwise a note, and
# those tests skip saying why.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql for the warehouse-source tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
	  echo "note: PostgreSQL server binaries (initdb) not found and we cannot install them (not root, or no apt-get):"; \
	  echo "      the PostgreSQL warehouse tests will be skipped; install Debian's postgresql to run them"; \
	fi

test: $(VENV)/.installed-test browser postgres
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf data models metrics plots reports outputs mlflow.db mlartifacts mlruns
