# The commands a developer needs: `make check` (lint, format, types, shellcheck and the unit tests that
# start no process: about a minute), `make test` (everything, once, from nothing) and `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The real Frappe Manager the fm-stack tests drive (tests/support/fm_home.py finds it in .venv-fm).
# frappe-manager 0.20.0 needs Python >=3.13,<3.14: PYTHON313, else pyenv's 3.13, else python3.13 on PATH.
# tomlkit 0.15.3 writes FM's str-enums as "FMBenchEnvType.prod" and FM cannot read its own
# bench_config.toml back (every bench then "needs migration"): keep it below.
FM_VERSION := 0.20.0
FM_VENV    := .venv-fm
FM_STAMP   := $(FM_VENV)/.installed
PYTHON313  ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))

.PHONY: check lint typecheck shellcheck unit-test test bench build system-deps docs example-config lock clean

# A virtualenv with the package (editable) and the test/build tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,build]'
	touch $(STAMP)

# The real frappe-manager in its own venv, for the tests (not shipped: the appliance drives the operator's fm).
$(FM_STAMP): Makefile
	@test -n "$(PYTHON313)" || { echo "make: the tests run the real Frappe Manager $(FM_VERSION), which needs Python 3.13; none was found. Install it (e.g. 'pyenv install 3.13' or 'apt install python3.13') or pass PYTHON313=/path/to/python3.13." >&2; exit 1; }
	@$(PYTHON313) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' || { echo "make: $(PYTHON313) is not Python 3.13 (frappe-manager $(FM_VERSION) needs >=3.13,<3.14); pass PYTHON313=/path/to/python3.13." >&2; exit 1; }
	rm -rf $(FM_VENV)
	$(PYTHON313) -m venv $(FM_VENV)
	$(FM_VENV)/bin/python -m pip install -q 'frappe-manager==$(FM_VERSION)' 'tomlkit<0.15.3'
	touch $(FM_STAMP)

# Debian packages the test suite drives for real: chromium, nginx, shellcheck, openssl.
system-deps:
	sh tests/install_system_deps.sh

# Before every commit: ruff (lint + format check), mypy on fmappliance/, shellcheck on the shell
# scripts, then the unit tests (the import-direction test among them). tests/conftest.py marks every
# test that starts a process `slow` and fails a unit test that starts one anyway.
check: lint typecheck shellcheck unit-test

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy fmappliance/

SHELL_SCRIPTS := install.sh $(wildcard packaging/*.sh) $(wildcard tests/*.sh)
shellcheck:
	@command -v shellcheck >/dev/null || { echo "make: shellcheck is missing: sudo apt-get install shellcheck (or make system-deps)" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

unit-test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Regenerate packaging/requirements.lock (hashes of the zipapps' runtime dependencies) after
# changing packaging/requirements.in.
lock: $(STAMP)
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file packaging/requirements.lock packaging/requirements.in

# Everything, once. The tests are independent (port 0, tmp dirs, their own processes), so they run on
# TEST_JOBS workers (pytest-xdist; TEST_JOBS=0: in one process). 4 on 2 cores: most of a test's time is
# spent waiting for the processes it drives, so twice the cores halves the wall time (measured: 424 s
# with -n 4 against 849 s in one process for all but tests/install). The installer tests that change this
# host itself (marked `host` by tests/conftest.py) then run one after another. Exit status 5 is
# pytest's "nothing selected" (PYTEST_ARGS naming only one kind).
TEST_JOBS ?= 4
test: $(STAMP) $(FM_STAMP) system-deps
	@status=0; \
	$(PY) -m pytest -q -n $(TEST_JOBS) -m "not host" $(PYTEST_ARGS) || status=$$?; \
	[ $$status -ne 5 ] || status=0; \
	host=0; $(PY) -m pytest -q -m host $(PYTEST_ARGS) || host=$$?; \
	[ $$host -ne 5 ] || host=0; \
	[ $$status -eq 0 ] && [ $$host -eq 0 ]

bench: $(STAMP) build
	$(PY) tests/benchmarks/run.py

build: $(STAMP)
	PYTHON=$(CURDIR)/$(PY) bash packaging/build.sh

# Regenerate what is derived from the config schema: packaging/config.example.yaml and the
# configuration reference in docs/configuration.md (tests/test_config.py fails when they are stale).
docs: $(STAMP)
	$(PY) packaging/gen_docs.py

example-config: docs

clean:
	rm -rf dist build *.egg-info $(VENV) $(FM_VENV)
