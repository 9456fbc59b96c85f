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
# # 10 · Train the MNIST classifier with one clipping method
#
# One run of the study: the article's CNN trained with the clipping method, optimizer and learning
# rate given in the parameters cell. The sweep (`python -m clipstudy.study.sweep`) executes this
# notebook once per run with papermill, passing the run's whole configuration, and keeps the executed
# copy beside the run's files (`summary.json`, `steps.parquet`, `epochs.parquet`). The defaults run
# in about a minute.

# %% tags=["parameters"]
# Overrides of the run's configuration; every field, its type and default: clipstudy.training.RunConfig.
config = dict(method="global_norm", clip_params={"threshold": 1.0}, optimizer="adam", learning_rate=0.001,
              epochs=2, train_subset=4096, test_subset=2000, eval_every=16, seed=0)
output_dir = None  # where the run's files go; None: keep them in memory only

# %%
from clipstudy.analysis import plots
from clipstudy.study.run import facts_text, run_one, summary_text
from clipstudy.study.runfiles import format_params
from clipstudy.training import RunConfig

run = RunConfig.for_task("classifier", **config)

# %% [markdown]
# ## Train
# One compiled step per batch: forward, loss, gradients, the clipper, the optimizer update. Every
# step's gradient telemetry is kept.

# %%
result = run_one(run, output_dir)

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

# %%
columns = ["epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
print(result.epochs[columns].round(4).to_string(index=False))

# %% [markdown]
# ## Learning curves

# %%
fig = plots.learning_curves(result.epochs, title=f"{run.method} · {run.optimizer} · lr={run.learning_rate:g} · seed {run.seed}")

# %% [markdown]
# ## What clipping did
# The global gradient norm at every step before and after clipping, the threshold in force
# (adaptive methods move it), and the steps that were clipped.

# %%
fig = plots.norm_trace(result.steps, title=f"Global gradient norm · {run.method} {format_params(run.clip_params)}")
