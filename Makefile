# clipstudy: every step of the study is a target. `make reproduce` and `make test` do all the set-up.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KERNEL := clipstudy
PROFILE ?= quick
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# pip repeats one warning per package for package folders this machine's pip.conf names but lacks.
PIP_NOISE := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0
# VERBOSE=1 lets the tools' own chatter through (Dask logs, kernel warnings, TFDS progress).
VERBOSE ?=
export CLIPSTUDY_VERBOSE := $(VERBOSE)

NOTEBOOK_SOURCES := $(wildcard notebooks/[0-9]*.py)
NOTEBOOKS := $(NOTEBOOK_SOURCES:.py=.ipynb)
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg
# The suite on two pytest workers (pytest-xdist), one test file (or notebook) per worker at a time: a file's tests
# and a notebook's cells run in order on one worker. Files are handed out in the order given, so `make test` names the
# notebooks first: the report notebook (about 3 minutes) starts at once instead of last, beside an idle worker.
# TEST_WORKERS=0 runs it in this process, in order.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: help env data test lint unit nbtest smoke-runs bench workers reproduce sweep report verify kernel-settings notebooks lab kernel clean browser

help:
	@echo "make reproduce   env, data, the published study: its report from results/paper/ and a sample of its runs retrained"
	@echo "                 (PROFILE=quick|smoke|full: sweep that profile here and report it)"
	@echo "make test        ruff, unit tests and nbval regression tests of the notebooks"
	@echo "make bench       training-loop speed against Keras model.fit, per-method overhead, where a run's time goes"
	@echo "make workers     runs per hour under each worker x thread setting on this machine (about 5 minutes)"
	@echo "make verify      retrain published runs of results/paper/: bit for bit where the CPU matches, else at the study's level"
	@echo "make kernel-settings one short run under each oneDNN setting: which settings give the same bits on every CPU"
	@echo "make data        fetch and verify MNIST into data/mnist.npz, build the detection canvases"
	@echo "make notebooks   rebuild each .ipynb from its .py and execute it with its defaults"
	@echo "make lab         JupyterLab on notebooks/ with the project's kernel"
	@echo "make kernel      register the kernel for a JupyterLab outside .venv (your own)"

# The virtual environment, from the lock file; redone when the lock or the project changes.
env: $(STAMP)
$(STAMP): requirements-lock.txt pyproject.toml
	@echo "== environment: $(VENV) from requirements-lock.txt (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip==26.3 $(PIP_NOISE)
	@$(PIP) -r requirements-lock.txt $(PIP_NOISE)
	@$(PIP) --no-deps --no-build-isolation -e . $(PIP_NOISE)
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (clipstudy)" >/dev/null
	touch $@

data: data/mnist.npz data/tfds/.prepared
data/mnist.npz: | $(STAMP)
	$(BIN)/python -m clipstudy.data
# The detection canvases (TFDS mnist_detection) of the smoke and quick sizes; full is built on first use.
data/tfds/.prepared: data/mnist.npz lib/clipstudy/data/canvases.py lib/clipstudy/data/tfds_builder.py
	$(BIN)/python -m clipstudy.data --detection smoke quick
	touch $@

# The report notebook's defaults read the smoke profile's runs; the sweep tests reuse them (a no-op once done).
smoke-runs: $(STAMP) data
	$(BIN)/python -m clipstudy.study.sweep --profile smoke

# The report's browser test drives Debian's Chromium (with Playwright, from the lock file).
CHROMIUM := $(firstword $(wildcard /usr/bin/chromium /usr/bin/chromium-browser))
browser:
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	else echo "the report's browser test needs Chromium: sudo apt-get install chromium" >&2; exit 1; fi
endif

test: $(STAMP) data smoke-runs browser lint
	$(PYTEST) $(NBVAL) $(NOTEBOOKS) tests

# ruff: the linter over the package, the tests and the notebooks' .py; the formatter's check over lib/ and tests/.
lint: $(STAMP)
	$(BIN)/ruff check lib tests notebooks
	$(BIN)/ruff format --check lib tests

unit: $(STAMP) data
	$(PYTEST) tests

nbtest: $(STAMP) data smoke-runs
	$(PYTEST) $(NBVAL) $(NOTEBOOKS)

# Rebuild each notebook from its jupytext .py and execute it with its defaults (the outputs nbval compares).
notebooks: $(STAMP) data smoke-runs
	$(BIN)/python -m clipstudy.study.notebooks refresh $(NOTEBOOK_SOURCES)

sweep: $(STAMP) data
	$(BIN)/python -m clipstudy.study.sweep --profile $(PROFILE)

report: $(STAMP)
	$(BIN)/python -m clipstudy.orchestration.build_report --profile $(PROFILE) $(if $(ALLOW_INCOMPLETE),--allow-incomplete)

# Retrain the cheapest runs published in results/$(PROFILE)/: identical bits where the recorded platform (CPU,
# oneDNN ISA, threads, versions) is this one; elsewhere within each cell's seed-to-seed spread, verdicts unchanged.
verify: $(STAMP) data
	$(BIN)/python -m clipstudy.orchestration.verify --profile $(if $(filter quick,$(PROFILE)),paper,$(PROFILE)) --runs $(or $(RUNS),2)

# One fixed short run under each oneDNN setting on this CPU, merged into results/kernel_settings.json (commit it):
# rows from several CPUs say which setting gives the same bits everywhere, and at what cost.
kernel-settings: $(STAMP) data/mnist.npz
	$(BIN)/python -m clipstudy.orchestration.kernel_settings --record results/kernel_settings.json

# make reproduce (no PROFILE): the published study. The report rebuilt from results/paper/ alone (no training;
# it says INCOMPLETE while the confirmatory stage's runs are still arriving), then one run of every experiment,
# drawn reproducibly (SEED), retrained and checked, bit for bit where the recorded CPU is this one, else at the
# study's level: whole where the experiment has runs of at most SAMPLE_STEPS steps, else its first 50 steps.
# SAMPLE_STEPS=99999: one whole run of every experiment (the 10-epoch article runs and the detector too).
# make reproduce PROFILE=quick (or smoke, full): sweep that profile here, then its report.
SAMPLE_STEPS ?= 1000
SEED ?= 0
ifeq ($(origin PROFILE),file)
reproduce: $(STAMP) data
	@echo "== report: profile paper, from the published bundle results/paper/ (no training)"
	$(BIN)/python -m clipstudy.orchestration.build_report --profile paper --allow-incomplete
	@echo "== retrain one published run of each experiment (seed $(SEED)): whole up to $(SAMPLE_STEPS) steps, else its first 50"
	$(BIN)/python -m clipstudy.orchestration.verify --profile paper --draw sample --seed $(SEED) --max-steps $(SAMPLE_STEPS) --prefix-long
else
reproduce: $(STAMP) data reports/bench.json
	@echo "== sweep: profile $(PROFILE)"
	$(BIN)/python -m clipstudy.study.sweep --profile $(PROFILE)
	@echo "== report"
	$(BIN)/python -m clipstudy.orchestration.build_report --profile $(PROFILE)
endif

# The cost figure and claim 4 read make bench's interleaved measurement; reproduce redoes it when it is
# missing or older than the code it measures.
BENCH_SOURCES := $(wildcard lib/clipstudy/clipping/*.py lib/clipstudy/training/*.py) lib/clipstudy/orchestration/bench.py lib/clipstudy/orchestration/breakdown.py
reports/bench.json: $(BENCH_SOURCES) | $(STAMP) data/mnist.npz
	@echo "== make bench: step time per method, interleaved (about 4 minutes)"
	$(BIN)/python -m clipstudy.orchestration.bench --json $@

bench: $(STAMP) data/mnist.npz
	$(BIN)/python -m clipstudy.orchestration.bench --json reports/bench.json

# Eight quick-sized classifier runs swept under each workers x threads setting (docs/running.md, "Choosing workers").
workers: $(STAMP) data/mnist.npz
	$(BIN)/python -m clipstudy.orchestration.bench_workers --json reports/workers.json

lab: $(STAMP) data/mnist.npz
	$(BIN)/jupyter lab notebooks/

# The kernel for a JupyterLab started outside .venv (your own): registered in ~/.local/share/jupyter.
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name $(KERNEL) --display-name "Python (clipstudy)"

clean:
	rm -rf reports/*/ .pytest_cache
