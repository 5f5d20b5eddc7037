# The single entry point. `make lint` and `make unit` need only python3 (with venv) and run as any
# user. `make demo`, `make test`, `make check` (what CI runs), `make bench`, `make pbx` and
# `make db` first set up the host with deploy/setup-host.sh (apt packages, so root) and drive the
# development PBX and Postgres.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= deploy/dev/hotline.yaml
export HOTLINE_PBX_NAME ?= dev
# Coverage data goes here, also from the hotline processes the tests start (they inherit it).
export COVERAGE_FILE := $(CURDIR)/.coverage

# The virtualenv is made from requirements/dev.txt alone: exact versions, every file's hash.
# `make lock` regenerates the locks with pip-tools, run from a throwaway virtualenv.
DEV_LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
PIP_TOOLS := pip-tools==7.6.2
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host $(if $(UPGRADE),--upgrade)

.PHONY: help host setup venv pbx pbx-stop db db-stop demo test unit lint format check bench lock \
	clean

help:
	@echo "make lint    ruff, ruff format --check, mypy --strict (any user; needs python3 with venv)"
	@echo "make unit    the unit tests (any user; no PBX, no Postgres; COV=1: with coverage)"
	@echo "make demo    set up, start the development PBX and run the daemon with the example roster"
	@echo "make test    set up and run the whole test suite with coverage (starts its own PBX)"
	@echo "make check   lint, type-check and test: what CI runs"
	@echo "make bench   run the benchmarks (figures in README.md)"
	@echo "make pbx / make pbx-stop   start or stop the development PBX"
	@echo "make db / make db-stop     start or stop the development Postgres"
	@echo "make format  apply ruff's formatting"
	@echo "make lock    regenerate requirements/*.txt (UPGRADE=1: newest versions allowed)"
	@echo "demo, test, check, bench, pbx and db install Debian packages: run them as root"

# Debian packages (root). Then the virtualenv, made with what the host setup may have installed.
host:
	@deploy/setup-host.sh

setup: host
	@$(MAKE) --no-print-directory venv

$(VENV)/.installed: $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "make: hotline needs Python 3.11 or newer as $(PYTHON) (make PYTHON=...)" >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "make: $(PYTHON) cannot make a virtualenv: install python3-venv" \
			"(as root: deploy/setup-host.sh)" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r $(DEV_LOCK)
	@touch $@

$(VENV)/.editable: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps \
		--no-build-isolation -e .
	@$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check; \
		echo "make: requirements/*.txt do not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	@touch $@

venv: $(VENV)/.editable

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

# Branch coverage of the hotline package; the whole suite must reach the floor in pyproject.toml.
test: setup
	$(BIN)/pytest --cov --cov-report=term

# The unit tests alone: no PBX, no Postgres, no root. COV=1 adds their branch coverage (no floor).
unit: venv
	$(BIN)/pytest tests/unit $(if $(COV),--cov --cov-report=term --cov-fail-under=0)

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
	$(BIN)/python -m bench.metrics
	$(BIN)/python -m bench.board
	$(BIN)/python -m bench.coverage
	$(BIN)/python -m bench.report

# The runtime lock from pyproject.toml's dependencies; the development lock from those, the `dev`
# extra and requirements/dev.in, with the runtime versions held to the runtime lock.
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && \
	"$$tmp/bin/python" -m pip install --quiet --disable-pip-version-check $(PIP_TOOLS) && \
	export CUSTOM_COMPILE_COMMAND="make lock" && \
	echo "pip-compile $(RUNTIME_LOCK)" && \
	"$$tmp/bin/pip-compile" $(LOCK_FLAGS) -o $(RUNTIME_LOCK) pyproject.toml && \
	echo "pip-compile $(DEV_LOCK)" && \
	"$$tmp/bin/pip-compile" $(LOCK_FLAGS) --extra dev -o $(DEV_LOCK) pyproject.toml \
		requirements/dev.in

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info \
		.coverage .coverage.* htmlcov

# Install or upgrade hotline as a systemd service on this host (root; docs/operations.md):
# `make install [PREFIX=/opt/hotline] [WHEELHOUSE=DIR]` runs deploy/install.sh with those options.
.PHONY: install
install:
	deploy/install.sh $(if $(PREFIX),--prefix $(PREFIX)) $(if $(WHEELHOUSE),--wheelhouse $(WHEELHOUSE))
