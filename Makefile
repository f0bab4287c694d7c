# Two commands matter: `make run` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= $(wildcard config.toml)

.PHONY: run test lint fmt bench cluster-check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cronsvc needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,uvloop]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cronsvc serve $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check cronsvc tests bench
	$(BIN)/ruff format --check cronsvc tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix cronsvc tests bench
	$(BIN)/ruff format cronsvc tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run --mode single --jobs 100 --seconds 30

cluster-check: $(STAMP)
	$(BIN)/python -m bench.run --mode cluster --jobs 200 --seconds 60 --no-ceiling

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
