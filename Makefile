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

.PHONY: demo test bench lint setup clean

demo: $(STAMP) $(DIST)
	$(BIN)/carehub demo

test: $(STAMP) $(DIST)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/carehub bench ingest

lint: $(STAMP)
	$(BIN)/ruff check hub devices simulators tests bench
	$(BIN)/mypy

setup: $(STAMP)

$(STAMP): pyproject.toml $(DASHBOARDS)/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	cd $(DASHBOARDS) && npm ci --no-audit --no-fund
	cd $(DASHBOARDS) && npm run build
	touch $@

# A changed page is built again; setup has built it once already on a fresh clone.
$(DIST): $(DASHBOARD_SOURCES) | $(STAMP)
	cd $(DASHBOARDS) && npm run build

clean:
	rm -rf $(VENV) .carehub .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf $(DASHBOARDS)/node_modules $(DASHBOARDS)/dist
