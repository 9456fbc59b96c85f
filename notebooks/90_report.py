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
# # 90 · Report: what clipping did across the profile's runs
#
# Every finished run of a profile (`reports/<profile>/runs/`) read into one tidy table, then the
# figures of the study: first the MNIST classifier, then the digit detector. `make reproduce`
# executes this notebook and exports it without code to `reports/<profile>/report.html`; figures are
# saved as PNG and SVG under `reports/<profile>/figures/`. Intervals are two-sided 95% Student-t
# intervals over seeds, the same the claims use; every figure says its n. A failed run (diverged or
# collapsed) counts as what it achieved.

# %% tags=["parameters"]
profile = "smoke"            # smoke, quick, paper, full, or the path of a profile .yaml
reports_dir = "../reports"   # holds <profile>/runs/ (a published profile is read from results/<profile>/)
figures_dir = None           # where figures go; None: <reports_dir>/<profile>/figures

# %%
from pathlib import Path

import pandas as pd

from clipstudy.analysis import plots, report, stats

rep = report.ProfileReport.load(profile, reports_dir)
rep.figures_dir = Path(figures_dir) if figures_dir else None
cls, det = rep.summaries("classifier"), rep.summaries("detector")
cls_epochs, det_epochs = rep.epochs("classifier"), rep.epochs("detector")

# %% [markdown]
# ## The runs

# %%
# NBVAL_CHECK_OUTPUT
print(rep.completeness())
print(f"profile {rep.name}: {len(rep.compared)} finished runs ({len(cls)} classifier, {len(det)} detector), "
      f"{len(rep.table.failed)} failed, {len(rep.missing)} not run yet")
for task, sub in (("classifier", cls), ("detector", det)):
    if len(sub):
        print(f"{task}: settings", "; ".join(plots.hue_and_order(sub)[1]))
        print(f"  optimizers {', '.join(sorted(sub['optimizer'].unique()))}; learning rates "
              f"{', '.join(f'{v:g}' for v in sorted(sub['learning_rate'].unique()))}; seeds {sorted(int(v) for v in sub['seed'].unique())}")

# %% [markdown]
# # The classifier
# ## Final test accuracy and divergence per method, optimizer and learning rate
# Mean over seeds; `diverged` is the share of seeds whose run was stopped on a non-finite loss or gradient.

# %%
# NBVAL_CHECK_OUTPUT
if len(cls):
    print(report.method_table(cls).round(3).to_string(index=False))

# %% [markdown]
# ## Learning curves
# Test accuracy at every evaluation against optimizer steps, per method, with its 95% t interval over seeds.

# %%
if len(cls):
    fig = plots.curves_with_ci(cls_epochs, "test_accuracy")
    _ = plots.save_figure(fig, rep.figures, "learning_curves")

# %% [markdown]
# ## Final accuracy with intervals

# %%
if len(cls):
    fig = plots.final_metric_points(cls, "final_test_accuracy")
    _ = plots.save_figure(fig, rep.figures, "final_accuracy")

# %% [markdown]
# ## Gradient norms before and after clipping, with the thresholds in force
# Median over seeds of each step, at the lowest learning rate of each optimizer (the stable regime).

# %%
cls_steps = rep.steps("classifier")
for opt in sorted(cls_steps["optimizer"].unique()):
    sub = cls_steps[cls_steps["optimizer"] == opt]
    sub = sub[sub["learning_rate"] == sub["learning_rate"].min()]
    fig = plots.norms_by_method(sub, f"Classifier gradient norm per method · {opt}, lr={sub['learning_rate'].iloc[0]:g}")
    _ = plots.save_figure(fig, rep.figures, f"norms_{opt}")

# %% [markdown]
# ## How often each method clipped

# %%
if len(cls):
    fig = plots.clip_fraction_bars(cls)
    _ = plots.save_figure(fig, rep.figures, "clip_fraction")

# %% [markdown]
# ## Which runs diverged

# %%
if len(cls):
    fig = plots.divergence_map(cls)
    _ = plots.save_figure(fig, rep.figures, "divergence")

# %% [markdown]
# ## Stability map
# Every method setting at every learning rate, per optimizer: the mean final test accuracy, and which cells diverged.

# %%
if len(cls):
    fig = plots.stability_map(cls, "final_test_accuracy")
    _ = plots.save_figure(fig, rep.figures, "stability_map")

# %%
# NBVAL_CHECK_OUTPUT
if len(cls):
    print(stats.stability(cls, "final_test_accuracy").round(3).drop(columns=["task"]).to_string(index=False))

# %% [markdown]
# ## Paired effects against the unclipped run
# For each method setting and learning rate: the mean over seeds of clipped − unclipped, with its
# 95% interval, for the final test accuracy and for the area under the test-accuracy curve (higher =
# learned faster), with its p-value. "identical" here means every seed's difference in that metric was
# exactly 0; whether whole runs were identical at every step is what claims 1 and 2 check.

# %%
# NBVAL_CHECK_OUTPUT
cls_auc = stats.add_curve_areas(cls, cls_epochs, "test_accuracy")
effects = pd.concat([stats.paired_differences(cls, "final_test_accuracy"), stats.paired_differences(cls_auc, "auc")])
if len(effects):
    effects["effect"] = [stats.classify_effect(r.ci_low, r.ci_high, r.mean_difference) for r in effects.itertuples()]
    print(effects[["metric", "optimizer", "learning_rate", "label", "mean_difference", "ci_low", "ci_high", "p_value",
                   "pairs", "effect"]]
          .round(4).to_string(index=False))

# %%
if len(cls):
    fig = plots.steps_to_target_points(cls, "steps_to_98")
    _ = plots.save_figure(fig, rep.figures, "steps_to_98")

# %% [markdown]
# # The detector
# ## COCO AP50 and divergence per method setting, optimizer and learning rate

# %%
# NBVAL_CHECK_OUTPUT
if len(det):
    print(report.method_table(det, "final_AP50").round(3).to_string(index=False))
    print(report.method_table(det, "final_AP").round(3)[["optimizer", "learning_rate", "method", "clip_params", "AP"]].to_string(index=False))

# %% [markdown]
# ## AP50 per method with intervals

# %%
if len(det):
    fig = plots.final_metric_points(det, "final_AP50")
    _ = plots.save_figure(fig, rep.figures, "detector_ap50")
    fig = plots.curves_with_ci(det_epochs, "AP50", title="Detector AP50 over training")
    _ = plots.save_figure(fig, rep.figures, "detector_curves")

# %% [markdown]
# ## The detector's gradient norms against the thresholds real detection codebases use
#
# Norms of the unclipped detector runs, with the global-norm thresholds of mmdetection's DETR/DINO
# (0.1), Ultralytics YOLO (10) and mmdetection's YOLOv3/FCOS (35), and the share of steps each would
# clip on this model. Loss scale differs between codebases, so this says how a threshold *would*
# act here, not what it does in theirs.

# %%
# NBVAL_CHECK_OUTPUT
det_steps = rep.steps("detector")
det_steps = det_steps[det_steps["method"] == "none"]
if len(det_steps):
    print(report.clip_share_at(det_steps, [0.1, 10.0, 35.0]).round(4).to_string(index=False))

# %%
if len(det_steps):
    fig = plots.norm_distribution(det_steps, (0.1, 10.0, 35.0), title="Detector gradient norms (unclipped runs) against common thresholds")
    _ = plots.save_figure(fig, rep.figures, "detector_norms")

# %% [markdown]
# ## Sample predictions
# The run with the best final AP50, on the first test canvases.

# %%
best = det.sort_values("final_AP50", ascending=False).iloc[0] if len(det) else None
if best is not None and (rep.runs_root / best["run_id"] / "detections.json").is_file():  # not in a results bundle
    sample = report.sample_predictions(rep.runs_root / best["run_id"])
    fig = plots.draw_detections(sample["canvases"], sample["gt_boxes"], sample["gt_classes"], sample["boxes"],
                                sample["scores"], sample["classes"], title=f"Best run: {best['label']}, {best['optimizer']} lr={best['learning_rate']:g}")
    _ = plots.save_figure(fig, rep.figures, "detector_samples")

# %% [markdown]
# # Injected gradient spikes
#
# Runs whose profile injects a few bad batches mid-training (their loss, hence their gradient, scaled
# up, or their labels shuffled): the loss around them per method, the peak relative to the loss
# before, and the steps until the running mean of 10 steps is back within 1.1× the level before.

# %%
# NBVAL_CHECK_OUTPUT
if len(rep.spiked):
    recovery = report.spike_table(rep.table, rep.runs_root)
    order = {label: i for i, label in enumerate(plots.hue_and_order(recovery)[1])}
    print(recovery.groupby(["task", "optimizer", "learning_rate", "label"]).mean(numeric_only=True)
          .drop(columns=["seed"]).sort_index(key=lambda c: c.map(order) if c.name == "label" else c)
          .round(3).to_string())

# %%
if len(rep.spiked):
    spike_steps = rep.table.steps[rep.table.steps["spiked"]]
    first = report.spike_steps(rep.runs_root / rep.spiked["run_id"].iloc[0])
    fig = plots.spike_traces(spike_steps, first)
    _ = plots.save_figure(fig, rep.figures, "spike_recovery")

# %% [markdown]
# # Cost of clipping
#
# Median step time of each method relative to `none`. From `make bench` (one process, methods
# interleaved, `reports/bench.json`) when it has been run; otherwise from the sweep's own runs, which
# share the machine with each other and are noisier.

# %%
overhead = report.overhead_ratios(reports_dir, rep.compared)
if len(overhead):
    fig = plots.overhead_bars(overhead, report.OVERHEAD_TARGETS,
                              title=f"Cost of clipping per optimizer step ({overhead['source'].iloc[0]})")
    _ = plots.save_figure(fig, rep.figures, "overhead")

# %% [markdown]
# # The claims audit
#
# One row per claim of the article. Each claim is decided by one primary contrast, written with its
# rule in `clipstudy/analysis/claims.py` before the decisive profile's data was read; scans over
# many cells are secondary and Holm-adjusted. A data verdict needs at least five seeds in its deciding
# cells; a *deterministic* verdict rests on runs that were bit-identical at every step; a verdict
# *by construction* follows from the methods' definitions. Failed runs (diverged or collapsed) stay
# in every comparison, scored as what they achieved. `make report` also writes `claims.csv`.

# %%
# NBVAL_CHECK_OUTPUT
print(rep.completeness())
audit = rep.audit()
table = audit[["claim", "verdict", "kind", "effect", "ci_low", "ci_high", "p_value", "n"]]
print(table.round(4).to_string(index=False))

# %% [markdown]
# The primary contrast, the rule and the numbers behind each verdict, and the secondary analyses:

# %%
for row in audit.itertuples():
    print(f"Claim {row.claim}: {row.text}\n  verdict: {row.verdict.upper()} ({row.kind})\n  primary: {row.primary}\n"
          f"  rule: {row.rule}\n  numbers: {row.numbers}\n" + (f"  secondary: {row.secondary}\n" if row.secondary else "")
          + f"  figure: {row.figure}\n")
