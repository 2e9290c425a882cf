# The two commands of the README: `make demo` and `make test`. Both set everything up
# on a fresh machine first (a virtualenv in .venv with carehub and its dev tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.carehub-installed
# The dashboards (Vite): built into dashboards/dist, which the hub serves at / and /console/.
DASHBOARDS := dashboards
DIST := $(DASHBOARDS)/dist/index.html
DASHBOARD_SOURCES := $(shell find $(DASHBOARDS)/src -type f 2>/dev/null) \
	$(DASHBOARDS)/index.html $(DASHBOARDS)/console/index.html \
	$(DASHBOARDS)/vite.config.ts $(DASHBOARDS)/tsconfig.json

.PHONY: demo test bench lint setup clean chromium

demo: $(STAMP) $(DIST)
	$(BIN)/carehub demo

test: $(STAMP) $(DIST) chromium
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/carehub bench ingest

# ruff, mypy strict, and the import contracts of pyproject.toml (lint-imports): the layers
# of the hub, the API reaching it only through api/deps.py, nothing in hub/ importing bench/.
lint: $(STAMP)
	$(BIN)/ruff check hub devices simulators bench scripts tests
	$(BIN)/ruff format --check hub devices simulators bench scripts tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# The browser tests need Debian's Chromium and CJK fonts, the report tests poppler: installed
# when missing and we are root, otherwise this stops at once with the command to run.
chromium:
	scripts/ensure-chromium

setup: $(STAMP)

$(STAMP): pyproject.toml $(DASHBOARDS)/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	cd $(DASHBOARDS) && npm ci --no-audit --no-fund
	cd $(DASHBOARDS) && npm run build
	touch $@

# The dashboards' API types come from the hub's OpenAPI document: write the document from
# the code (no services needed), generate src/common/api.gen.ts from it, type-check the
# pages against it. Both files are committed; tests/unit/test_dashboards.py says when stale.
.PHONY: api-types
api-types: $(STAMP)
	$(BIN)/python scripts/openapi.py $(DASHBOARDS)/openapi.json
	cd $(DASHBOARDS) && npm run api-types && npm run typecheck

# A changed page is built again; setup has built it once already on a fresh clone.
$(DIST): $(DASHBOARD_SOURCES) | $(STAMP)
	cd $(DASHBOARDS) && npm run build

clean:
	rm -rf $(VENV) .carehub .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf $(DASHBOARDS)/node_modules $(DASHBOARDS)/dist
