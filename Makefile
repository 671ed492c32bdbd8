# dprelease: the front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= conf/jobs/movielens_tables.yaml
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

.DEFAULT_GOAL := help
.PHONY: help venv check-java browser run test test-fast test-postgres test-privacy test-airflow lint bench package clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@bash scripts/check-java.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv with the package, test and demo dependencies

check-java: ## Check that Java 17+ is installed (Spark needs it)
	@bash scripts/check-java.sh

browser: ## Install the headless Chromium the card's browser test drives (Debian package; root)
	bash scripts/install-browser.sh

run: $(STAMP) ## Run the main job (a three-table DP release of the bundled MovieLens ratings: per genre, per year, per genre and year) and show it
	$(PY) -m jobs.demo_data data/movielens/ratings.parquet
	@status=0; summary=$$($(VENV)/bin/dprelease run $(CONFIG)) || status=$$?; \
	echo "$$summary"; \
	if [ $$status -eq 0 ] || [ $$status -eq 5 ]; then \
	  path=$$(echo "$$summary" | tail -n 1 | $(PY) -c 'import json, sys; print(json.load(sys.stdin)["path"])'); \
	  echo; $(VENV)/bin/dprelease show "$$path" --limit 10; \
	fi; \
	exit $$status

test: $(STAMP) ## The suite CI runs: unit, Spark, PostgreSQL ledger (a real server), privacy fast tier, standalone cluster, card in Chromium
	$(PY) -m pytest

test-fast: $(STAMP) ## Run the tests that need no Spark session
	$(PY) -m pytest tests/unit

test-postgres: $(STAMP) ## The ledger contract suite and the server-ledger tests (needs Debian's postgresql)
	bash scripts/install-postgres.sh
	$(PY) -m pytest tests/unit/test_ledger.py tests/unit/test_governance.py tests/postgres tests/spark/test_server_ledger_job.py

lint: $(STAMP) ## ruff, mypy (strict) and the import-direction contract
	$(VENV)/bin/ruff check dp_ops pipelines jobs tests benchmarks
	$(VENV)/bin/ruff format --check dp_ops pipelines jobs tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-privacy: $(STAMP) ## The full privacy verification tier (large-sample audits; see README)
	$(PY) -m pytest -m privacy_full tests/privacy

test-airflow: $(STAMP) ## The Airflow DAG test, with Airflow in its own venv (.venv-airflow); CI runs it too
	bash scripts/test-airflow.sh

BENCH_ROWS ?= 1000000,10000000
export BENCH_ROWS
bench: $(STAMP) ## Benchmarks: samplers vs OpenDP, DP job vs plain groupBy, L0 A/B, bounding utility, 3 tables vs 3 runs, released keys by selection default, quantiles cost and accuracy (BENCH_ROWS=1000000,10000000)
	$(PY) -m benchmarks

package: $(STAMP) ## Build the wheel and the relocatable environment archive into dist/
	bash scripts/package.sh

clean: ## Remove the venv, build outputs and local releases
	rm -rf $(VENV) .venv-airflow build dist *.egg-info data/movielens releases
