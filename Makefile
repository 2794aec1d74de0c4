# The two commands of the README's quick start:
#   make serve   install the service and run it on SQLite at 127.0.0.1:8080
#   make test    install everything the tests need, then lint, type-check and test
#   make dist    build the wheel (SDK and service) into dist/, for pip install dist/*.whl
# and the developer loop (docs/testing.md):
#   make check   lint, type-check and the unit tests (tests/unit/), in under a minute
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
PYTEST_ARGS ?=

.PHONY: serve test check lint typecheck pytest unit system-deps clean bench dist

serve: $(VENV)/.service
	SHOTSTAMP_DATA_DIR=$${SHOTSTAMP_DATA_DIR:-$(DATA_DIR)} $(BIN)/shotstamp-service serve --host $${SHOTSTAMP_HOST:-127.0.0.1} --port $${SHOTSTAMP_PORT:-8080}

test: system-deps $(VENV)/.dev lint typecheck pytest

check: lint typecheck unit

system-deps:
	@sh scripts/system-deps

lint: $(VENV)/.dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

pytest: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.service: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[service]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[service,dev]'
	touch $@ $(VENV)/.service

dist: | $(BIN)/python
	$(BIN)/python -m pip wheel --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info sdk/*.egg-info service/*.egg-info .pytest_cache .mypy_cache .ruff_cache
