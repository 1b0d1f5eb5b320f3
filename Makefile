# The commands a developer needs: `make check` (lint, types, fast tests: 4-6 minutes on 2 busy cores),
# `make test` (everything, from nothing) and `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: check lint typecheck fast-test test bench build system-deps docs example-config lock clean

# A virtualenv with the package (editable) and the test/build tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,build]'
	touch $(STAMP)

# Debian packages the test suite drives for real: chromium, nginx, shellcheck, openssl.
system-deps:
	sh tests/install_system_deps.sh

# ruff (lint + format check) and mypy on fmappliance/ (settings in pyproject.toml), then the
# tests that need no browser, nginx, root or zipapp build.
check: lint typecheck fast-test

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy fmappliance/

fast-test: $(STAMP)
	$(PY) -m pytest -q -m "not browser and not nginx and not slow" tests/agent tests/dashboard tests/test_config.py tests/test_lock.py

# Regenerate packaging/requirements.lock (hashes of the zipapps' runtime dependencies) after
# changing packaging/requirements.in.
lock: $(STAMP)
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file packaging/requirements.lock packaging/requirements.in

test: $(STAMP) system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP) build
	$(PY) tests/benchmarks/run.py

build: $(STAMP)
	PYTHON=$(CURDIR)/$(PY) bash packaging/build.sh

# Regenerate what is derived from the config schema: packaging/config.example.yaml and the
# README's configuration reference (tests/test_config.py fails when they are stale).
docs: $(STAMP)
	$(PY) packaging/gen_docs.py

example-config: docs

clean:
	rm -rf dist build *.egg-info $(VENV)
