# Two commands matter: `make run` and `make test`. Both create .venv first.
# `run` installs what serving needs (cronsvc and uvloop); `test` and the other
# developer targets add the dev extra (pytest, mypy, ruff, Playwright, the
# Redis and MongoDB test servers). Each install has its own stamp, so `make
# run` never pulls in the test tools and either redoes its install when
# pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
CONFIG ?= $(wildcard config.toml)

.PHONY: run test lint fmt bench cluster-check chaos fuzz clean

$(VENV)/pyvenv.cfg:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cronsvc needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install --quiet -e '.[uvloop]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install --quiet -e '.[dev,uvloop]'
	touch $@

run: $(RUN_STAMP)
	$(BIN)/cronsvc serve $(if $(CONFIG),--config $(CONFIG))

test: $(DEV_STAMP)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check cronsvc tests bench
	$(BIN)/ruff format --check cronsvc tests bench
	$(BIN)/mypy

fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix cronsvc tests bench
	$(BIN)/ruff format cronsvc tests bench

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.run --mode single --jobs 100 --seconds 30

cluster-check: $(DEV_STAMP)
	$(BIN)/python -m bench.run --mode cluster --jobs 200 --seconds 60 --no-ceiling

# Kills, stalls, flushes and membership changes against a live cluster, one row each (RELIABILITY.md).
chaos: $(DEV_STAMP)
	$(BIN)/python -m bench.chaos

# schemathesis over /openapi.json, in a network namespace of its own (root).
fuzz: $(RUN_STAMP)
	VENV=$(VENV) bench/fuzz.sh

clean:
	rm -rf $(VENV) .venv-fuzz .schemathesis build *.egg-info .pytest_cache .mypy_cache .ruff_cache
