# The two commands of the README: `make demo` and `make test`. Both set everything up
# on a fresh machine first (a virtualenv in .venv with carehub and its dev tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.carehub-installed

.PHONY: demo test bench lint setup clean

demo: $(STAMP)
	$(BIN)/carehub demo

test: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/carehub bench ingest

lint: $(STAMP)
	$(BIN)/ruff check hub devices simulators tests
	$(BIN)/mypy

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .carehub .pytest_cache .mypy_cache .ruff_cache .hypothesis
