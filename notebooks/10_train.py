# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (clipstudy)
#     language: python
#     name: clipstudy
# ---

# %% [markdown]
# # 10 · Train one run: any task, any clipping method
#
# One run of the study: the task (`config["task"]`: the article's CNN on MNIST, the digit detector, the
# recurrent adding problem, or any task of `clipstudy.tasks`) trained with the clipping method, optimizer
# and learning rate of the parameters cell. The sweep (`python -m clipstudy.study.sweep`) executes this
# notebook once per run with papermill, passing the run's whole configuration, and keeps the executed
# copy beside the run's files (`summary.json`, `steps.parquet`, `epochs.parquet`). The defaults train the
# classifier in about a minute.

# %% tags=["parameters"]
# The run's configuration: `task` and overrides of its defaults. Every field, its type and default:
# clipstudy.training.RunConfig; the tasks: clipstudy.tasks.NAMES.
config = dict(task="classifier", method="global_norm", clip_params={"threshold": 1.0}, optimizer="adam",
              learning_rate=0.001, epochs=2, train_subset=4096, test_subset=2000, eval_every=16, seed=0)
output_dir = None  # where the run's files go; None: keep them in memory only
stop_after = None  # train only the run's first this many steps (make reproduce's prefix check); None: all

# %%
# The run's figures lay themselves out (clipstudy.analysis.runplots): shown uncropped, each is drawn once.
# %config InlineBackend.print_figure_kwargs = {"bbox_inches": None}
from clipstudy.analysis import runplots as plots
from clipstudy.study.run import facts_text, run_one, summary_text
from clipstudy.study.runfiles import format_params
from clipstudy.training import RunConfig

run = RunConfig.for_task(config.get("task", "classifier"), **config)
print(f"{run.task}: {run.task_spec.summary}")

# %% [markdown]
# ## Train
# One compiled step per batch: forward, loss, gradients, the clipper, the optimizer update. Every
# step's gradient telemetry is kept; the test (and validation) examples are scored at every evaluation.

# %%
result = run_one(run, output_dir, stop_after=stop_after)

# %% [markdown]
# ## Result
# What the run did (the same on every CPU), then its numbers.

# %%
# NBVAL_CHECK_OUTPUT
print(facts_text(result))

# %% [markdown]
# The numbers, rounded. The same parameters give the same numbers on the same platform (CPU, oneDNN's
# instruction set, threads, library versions: `result.summary["platform"]`); another CPU changes their
# last digits, so nbval compares the lines above, not these.

# %%
print(summary_text(result))
print(result.epochs.drop(columns=[c for c in result.epochs if c.endswith("time_s")]).round(4).to_string(index=False))

# %% [markdown]
# ## Learning curves

# %%
title = f"{run.task} · {run.method} · {run.optimizer} · lr={run.learning_rate:g} · seed {run.seed}"
fig = plots.run_curves(result.epochs, run.task_spec.curve_metrics, title=title)

# %% [markdown]
# ## What clipping did
# The global gradient norm at every step before and after clipping, the threshold in force
# (adaptive methods move it), and the steps that were clipped.

# %%
fig = plots.norm_trace(result.steps, title=f"{run.task} gradient norm · {run.method} {format_params(run.clip_params)}")

# %% [markdown]
# ## The trained model on a few test examples
# Drawn by the task itself (`TaskSpec.sample_figure`); tasks without one show nothing here.

# %%
if run.task_spec.sample_figure is not None:
    fig = run.task_spec.sample_figure(result, run)
