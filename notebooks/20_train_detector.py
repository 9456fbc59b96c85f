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
# # 20 · Train the digit detector with one clipping method
#
# One detector run of the study: a small CenterNet-style detector (class heatmaps, box size and
# centre offset at stride 4) trained from scratch on the `mnist_detection` canvases with the
# clipping method, optimizer and learning rate of the parameters cell, through the same training
# function and clippers as the classifier. Every evaluation scores the test canvases with
# pycocotools; the run keeps the COCO-format `ground_truth.json` and `detections.json` of the last
# one. The defaults run in about a minute.

# %% tags=["parameters"]
# Overrides of the run's configuration; every field, its type and default: clipstudy.training.RunConfig.
config = dict(method="global_norm", clip_params={"threshold": 1.0}, optimizer="adam", learning_rate=0.003,
              epochs=4, dataset="smoke", eval_every=32, seed=0)
output_dir = None  # where the run's files go; None: keep them in memory only

# %%
from clipstudy.analysis import plots
from clipstudy.study.run import facts_text, run_one, summary_text
from clipstudy.study.runfiles import format_params
from clipstudy.tasks import DetectionTask
from clipstudy.training import RunConfig

run = RunConfig.for_task("detector", **config)

# %% [markdown]
# ## Train
# The classifier's training function with the detection task: focal loss on the heatmaps, L1 on
# size and offset; COCO metrics on the test canvases at every evaluation.

# %%
result = run_one(run, output_dir)

# %%
# NBVAL_CHECK_OUTPUT
print(facts_text(result))

# %% [markdown]
# The numbers, rounded. The same parameters give the same numbers on the same platform (CPU, oneDNN's
# instruction set, threads, library versions: `result.summary["platform"]`); another CPU changes their
# last digits, so nbval compares the lines above, not these.

# %%
print(summary_text(result))

# %% [markdown]
# ## Learning curves

# %%
fig = plots.detection_curves(result.epochs, title=f"Detector · {run.method} · {run.optimizer} · lr={run.learning_rate:g} · seed {run.seed}")

# %% [markdown]
# ## What clipping did

# %%
fig = plots.norm_trace(result.steps, title=f"Detector gradient norm · {run.method} {format_params(run.clip_params)}")

# %% [markdown]
# ## Sample predictions
# The trained model on the first test canvases: ground truth in green, detections in red.

# %%
images, truth, found = DetectionTask(run.dataset).sample_detections(result.model, result.test, 8)
fig = plots.draw_detections(images, [a.boxes for a in truth], [a.classes for a in truth],
                            [d[0] for d in found], [d[1] for d in found], [d[2] for d in found],
                            title="Test canvases")
