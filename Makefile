# Two entry points on a fresh machine: `make demo` and `make test`. Each builds its own virtualenv.
# PYTHON=python3.12 (or a path) tests against newer jax in a separate venv (.venv-python3.12).
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch 2.13.0 (CPU) lies on local disk for Python 3.11 only; elsewhere a plain torch is a multi-GB
# CUDA download, so the hf extra (and with it the HF parity tests) is installed on 3.11 only.
IS_PY311 := $(shell $(PYTHON) -c 'import sys; print(int(sys.version_info[:2] == (3, 11)))' 2>/dev/null)
comma := ,
EXTRAS := $(if $(filter 1,$(IS_PY311)),dev$(comma)hf,dev)
PYTEST_ARGS ?=
DEMO_DIR ?= demo_out
DEMO_STEPS ?=

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(filter 1,$(IS_PY311)),$(PY) -m pip install -q torch==2.13.0,)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py --out $(DEMO_DIR) $(if $(DEMO_STEPS),--steps $(DEMO_STEPS),)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
