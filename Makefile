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

# Each stamp holds the sha256 of the pyproject.toml it installed: a checkout or a new worktree
# touches the file without changing it, and must not reinstall (or repoint) the venv.
PYPROJECT_SUM = $$(sha256sum pyproject.toml | cut -c1-64)

$(VENV)/.service: pyproject.toml | $(BIN)/python
	@if [ "$$(cat $@ 2>/dev/null)" = "$(PYPROJECT_SUM)" ]; then touch $@; else \
		$(BIN)/python -m pip install --quiet -e '.[service]' && echo "$(PYPROJECT_SUM)" > $@; fi

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	@if [ "$$(cat $@ 2>/dev/null)" = "$(PYPROJECT_SUM)" ]; then touch $@; else \
		$(BIN)/python -m pip install --quiet -e '.[service,dev]' && echo "$(PYPROJECT_SUM)" > $@ \
		&& cp $@ $(VENV)/.service; fi

dist: | $(BIN)/python
	$(BIN)/python -m pip wheel --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info sdk/*.egg-info service/*.egg-info .pytest_cache .mypy_cache .ruff_cache
