# `make run` starts the whole embedded stack; `make test` runs the suite. Both bootstrap .venv.
# `make run ARGS="--config examples/journeys.walkthrough.toml --api-port 8001"` passes options to `breadcrumb dev`.
# `make lint` runs ruff (lint and format check) and mypy.
# `make docs` serves the documentation site on http://127.0.0.1:8001; `make docs-build` builds it strictly (CI).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?= -rs  # list every skipped test with its reason
DOCS_ADDR ?= 127.0.0.1:8001

.PHONY: run test lint bench docs docs-build clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(BIN)/.docs-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,docs]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/breadcrumb dev $(ARGS)

test: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python bench/ingest.py

docs: $(BIN)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr $(DOCS_ADDR)

docs-build: $(BIN)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) data site *.egg-info
