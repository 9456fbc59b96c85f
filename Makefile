# clipstudy: every step of the study is a target. `make reproduce` and `make test` do all the set-up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KERNEL := clipstudy
PROFILE ?= quick
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0

.PHONY: help env data test unit nbtest bench reproduce sweep report notebooks lab clean

help:
	@echo "make reproduce   env, data, sweep (PROFILE=$(PROFILE)) and report"
	@echo "make test        unit tests and nbval regression tests of the notebooks"
	@echo "make bench       training-loop speed against Keras model.fit"
	@echo "make data        fetch and verify MNIST into data/mnist.npz"
	@echo "make notebooks   re-execute the notebooks with their defaults (refresh stored outputs)"
	@echo "make lab         JupyterLab on notebooks/ with the project's kernel"

# The virtual environment, from the lock file; redone when the lock or the project changes.
env: $(STAMP)
$(STAMP): requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (clipstudy)" >/dev/null
	touch $@

data: data/mnist.npz
data/mnist.npz: | $(STAMP)
	$(BIN)/python -m clipstudy.data

unit: $(STAMP) data/mnist.npz
	$(BIN)/python -m pytest -q tests

test: $(STAMP) data/mnist.npz
	$(BIN)/python -m pytest -q tests $(NBVAL_TARGETS)

bench: $(STAMP) data/mnist.npz
	$(BIN)/python -m clipstudy.bench

lab: $(STAMP) data/mnist.npz
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf reports/*/ .pytest_cache
