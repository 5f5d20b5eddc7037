# The single entry point. `make demo` runs the daemon against the development PBX; `make check` is
# exactly what CI runs. Targets that touch the PBX or apt need root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= deploy/dev/hotline.yaml
export HOTLINE_PBX_NAME ?= dev

.PHONY: help setup venv pbx pbx-stop db db-stop demo test lint format check bench clean

help:
	@echo "make demo    set up, start the development PBX and run the daemon with the example roster"
	@echo "make test    set up and run the whole test suite (starts its own PBX instance)"
	@echo "make check   lint, type-check and test: what CI runs"
	@echo "make bench   run the benchmarks (figures in README.md)"
	@echo "make pbx / make pbx-stop   start or stop the development PBX"
	@echo "make db / make db-stop     start or stop the development Postgres"
	@echo "make format  apply ruff's formatting"

setup: venv
	@deploy/setup-host.sh

$(BIN)/python:
	@deploy/setup-host.sh
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

pbx: setup
	deploy/pbx.sh start

pbx-stop:
	deploy/pbx.sh stop

db: setup
	deploy/db.sh start

db-stop:
	deploy/db.sh stop

# The demo's caller-pseudonym key: random, made once, never in the repository.
var/caller-keys:
	mkdir -p var
	umask 077 && $(PYTHON) -c 'import secrets; print("1:" + secrets.token_hex(32))' > $@

demo: pbx db var/caller-keys
	$(BIN)/hotline check-config -c $(CONFIG)
	$(BIN)/hotline migrate -c $(CONFIG)
	$(BIN)/hotline plan -c $(CONFIG)
	$(BIN)/hotline run -c $(CONFIG)

test: setup
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

bench: setup
	$(BIN)/python -m bench.plan
	$(BIN)/python -m bench.membership
	$(BIN)/python -m bench.recording

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
