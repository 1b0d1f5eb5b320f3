# The two commands a developer needs: `make test` (everything, from nothing) and `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test bench build system-deps docs example-config clean

# A virtualenv with the package (editable) and the test/build tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,build]'
	touch $(STAMP)

# Debian packages the test suite drives for real: chromium, nginx, shellcheck, openssl.
system-deps:
	sh tests/install_system_deps.sh

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
