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

.PHONY: help env data test unit nbtest smoke-runs bench reproduce sweep report notebooks lab clean

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

data: data/mnist.npz data/tfds/.prepared
data/mnist.npz: | $(STAMP)
	$(BIN)/python -m clipstudy.data
# The detection canvases (TFDS mnist_detection) of the smoke and quick sizes; full is built on first use.
data/tfds/.prepared: data/mnist.npz lib/clipstudy/detection_data.py
	$(BIN)/python -m clipstudy.data --detection smoke quick
	touch $@

NOTEBOOKS := notebooks/00_data.ipynb notebooks/10_train_classifier.ipynb notebooks/20_train_detector.ipynb notebooks/90_report.ipynb
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

# The report notebook's defaults read the smoke profile's runs: make them first (a no-op once done).
smoke-runs: $(STAMP) data
	$(BIN)/python -m clipstudy.sweep --profile smoke

test: $(STAMP) data smoke-runs
	$(BIN)/python -m pytest tests $(NBVAL) $(NOTEBOOKS)

unit: $(STAMP) data
	$(BIN)/python -m pytest tests

nbtest: $(STAMP) data smoke-runs
	$(BIN)/python -m pytest $(NBVAL) $(NOTEBOOKS)

# Re-execute the notebooks with their defaults so the outputs nbval compares are current.
notebooks: $(STAMP) data smoke-runs
	cd notebooks && for nb in $(notdir $(NOTEBOOKS)); do \
	  ../$(BIN)/papermill $$nb .tmp.$$nb -k python3 --cwd . --no-progress-bar --log-level WARNING && \
	  mv .tmp.$$nb $$nb || { rm -f .tmp.$$nb; exit 1; }; done

sweep: $(STAMP) data
	$(BIN)/python -m clipstudy.sweep --profile $(PROFILE)

report: $(STAMP)
	$(BIN)/python -m clipstudy.report --profile $(PROFILE)

reproduce: $(STAMP) data
	$(BIN)/python -m clipstudy.sweep --profile $(PROFILE)
	$(BIN)/python -m clipstudy.report --profile $(PROFILE)

bench: $(STAMP) data/mnist.npz
	$(BIN)/python -m clipstudy.bench --json reports/bench.json

lab: $(STAMP) data/mnist.npz
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf reports/*/ .pytest_cache
