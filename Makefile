# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: the runtime install (`make install`, `make demo`) and the dev tools (`make test`).
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint typecheck install dev postgres browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

# bcbridge and its runtime dependencies only; then `source .venv/bin/activate` puts it on PATH.
install: $(STAMP)
	@echo "Installed $$($(BIN)/bcbridge --version) in $(VENV). Put it on PATH with: source $(VENV)/bin/activate"

dev: $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy src tests

postgres:
	.ci/ensure-postgres

# Debian's chromium and chromium-driver for tests/browser (about 40 s to install)
browser:
	.ci/ensure-chromium

# Tests run side by side (pytest-xdist; worksteal: an idle worker takes tests from a busy one,
# so one file of long crash tests does not hold the end back; each worker has its own module
# fixtures): most of the time is spent waiting on emulator and CLI processes, so more workers
# than cores pay off. TEST_WORKERS=0 runs them one after the other.
TEST_WORKERS ?= 4

test: postgres browser lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The quick loop while coding: no PostgreSQL, no browser, none of the long subprocess/crash/matrix
# tests.
test-fast: $(DEV_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow and not postgres and not live and not browser"

demo: $(STAMP)
	$(BIN)/bcbridge demo

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .bcbridge .pytest_cache .mypy_cache .ruff_cache
