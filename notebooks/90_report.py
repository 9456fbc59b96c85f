# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
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

# %% [markdown] tags=["report-hidden"]
# # 90 · Report: what clipping did across the profile's runs
#
# `make report` executes this notebook for a profile and exports it without code to
# `reports/<profile>/report.html`: the answer first (findings, the claims table, provenance), then
# one section per question, each figure with a caption. Figures are also saved as PNG and SVG under
# `reports/<profile>/figures/`. Intervals are two-sided 95% Student-t intervals over seeds; every
# figure says its n. A failed run (diverged or collapsed) counts as what it achieved. Cells tagged
# `report-hidden` print what nbval checks and are left out of the HTML: what was run and how many times,
# which is the same on every CPU (the numbers themselves differ in their last digits between CPUs).

# %% tags=["parameters"]
profile = "paper"            # paper (the published study, read from results/paper/), smoke, quick, full, or a .yaml
reports_dir = "../reports"   # holds <profile>/runs/ (a published profile is read from results/<profile>/)
figures_dir = None           # where figures go; None: <reports_dir>/<profile>/figures

# %%
from pathlib import Path

import pandas as pd

from clipstudy import tasks
from clipstudy.analysis import claims, outcomes, page, plots, report, stage2, stage3_answers, stats
from clipstudy.analysis.classifier_figures import spike_traces, stability_map, steps_to_target_points
from clipstudy.analysis.study_figures import forest, overhead_bars
from clipstudy.tasks.detection.figures import draw_detections, norm_distribution, warmup_arms

rep = report.ProfileReport.load(profile, reports_dir)
rep.figures_dir = Path(figures_dir) if figures_dir else None
cls, det = rep.summaries("classifier"), rep.summaries("detector")
cls_epochs, det_epochs = rep.epochs("classifier"), rep.epochs("detector")
audit = rep.audit()
page.show_html(page.header(audit, rep.name, rep.completeness(), edited=rep.bundle_edits()))
headline = claims.headline(audit, rep.answers())
if len(headline):
    page.show(forest(headline), rep.figures, "headline",
              "Every claim's primary effect (clipped − reference), one panel per scale so that 0 sits at one place "
              "in each, the side that favours clipping marked; the 95% interval and p only from 5 seeds (a point "
              "alone below that), the margin of no meaningful effect shaded; stage 1 (exploratory, seeds 0-4) in "
              "blue, the confirmatory answers (fresh seeds 5-9) in orange. At the right: the claim's verdict in "
              "force (the claims table's), what that row's own test found, n and p. Claims decided by "
              "construction (3b, 4) have no row.",
              "Forest plot of each claim's effect and interval in three panels: accuracy, AP, failure rate.")
page.show_html(page.claims_section(audit, report.provenance(rep)))

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
print(rep.completeness())
by_task = ", ".join(f"{n} {t}" for t, n in rep.table.summaries["task"].value_counts().sort_index().items())
print(f"profile {rep.name}: {len(rep.table.summaries)} finished runs ({by_task}; "
      f"{len(rep.spiked)} with injected spikes), {len(rep.table.failed)} errored, {len(rep.missing)} not run yet")
print(report.design_view(audit).to_string(index=False))

# %% [markdown]
# # The classifier
# ## Final test accuracy and divergence per method, optimizer and learning rate

# %%
if len(cls):
    page.show_html(page.table(report.method_table(cls), "Per setting: runs that diverged (non-finite or exploding "
                              "loss), stalled (test accuracy below 0.2) and learned; the median and range of the "
                              "final test accuracy over the runs that did not diverge; the mean share of steps "
                              "clipped (above 0.9: normalisation, not occasional clipping)"))

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
if len(cls):
    print(report.design_view(report.method_table(cls)).to_string(index=False))

# %% [markdown]
# ## Learning curves

# %%
if len(cls):
    curves = plots.curves_with_ci(cls_epochs, "test_accuracy", bounds=(0.0, 1.0))
    page.show(curves, rep.figures, "learning_curves",
              "Test accuracy at every evaluation against optimizer steps, one panel per optimizer and learning "
              "rate, one line per method setting with its 95% interval over seeds. Where the lines lie on top "
              "of each other, clipping changed nothing the test set can see (claims 1 and 2).",
              "Line charts of test accuracy against optimizer steps for each clipping method.")
    first_evaluation = int(cls_epochs.groupby("run_id")["step"].min().median())
    page.show(plots.training_loss_from_the_first_step(rep.steps("classifier")), rep.figures,
              "training_loss", "The training loss of every step from the first, median over seeds, on log axes "
              f"(past step 50 smoothed over 15 recorded steps): the first evaluation comes after {first_evaluation} "
              "steps (median over runs), so the curves above cannot show how fast the methods start; here the "
              "early steps fill the left half of each panel (the convergence secondary of claims 1 and 5 is the "
              "mean of this loss over the run).",
              "Log-log line charts of training loss against optimizer step for each clipping method.")

# %% [markdown]
# ## Final accuracy with intervals

# %%
if len(cls):
    accuracy = plots.final_metric_points(cls, "final_test_accuracy", bounds=(0.0, 1.0))
    page.show(accuracy, rep.figures, "final_accuracy",
              "Final test accuracy per method setting at each learning rate, per optimizer: every run (a failed "
              "one as a red ×), the mean and its 95% interval over seeds (cut at 0 and 1). Read across a panel "
              "for the effect of the rate and within a rate for the effect of clipping (claims 2, 5 and 6).",
              "Point plot of final test accuracy per clipping method and learning rate, one panel per optimizer.")

# %% [markdown]
# ## Gradient norms before and after clipping, with the thresholds in force

# %%
cls_steps = rep.steps("classifier")
for opt in sorted(cls_steps["optimizer"].unique()):
    sub = cls_steps[cls_steps["optimizer"] == opt]
    sub = sub[sub["learning_rate"] == sub["learning_rate"].min()]
    lr = sub["learning_rate"].iloc[0]
    page.show(plots.norms_by_method(sub, f"Classifier gradient norm per method · {opt}, lr={lr:g}"), rep.figures,
              f"norms_{opt}",
              f"{opt}, lr={lr:g} (the lowest rate, the stable regime): median over seeds of the global gradient "
              "norm at each step before clipping, after clipping, and the threshold in force where it is a global "
              "norm (value, norm and AGC bound elements, tensors or ratios: not drawn on this axis). Where 'after' "
              "sits on 'before', the method did not clip; no norm falls towards zero (claim 3b).",
              f"Log-scale line charts of gradient norm against steps for each method with {opt}.")

# %% [markdown]
# ## How often each method clipped

# %%
if len(cls):
    page.show(plots.clip_fraction_bars(cls), rep.figures, "clip_fraction", report.clip_fraction_caption(cls),
              "Horizontal bar chart of the mean clipped share per method and optimizer.")

# %% [markdown]
# ## Stability map

# %%
if len(cls):
    page.show(stability_map(cls, "final_test_accuracy"), rep.figures, "stability_map",
              "Every method setting (rows) at every learning rate (columns), per optimizer: the number is the mean "
              "final test accuracy over seeds, the colour its error (1 − accuracy) on a log scale; × marks cells "
              "where every seed failed (diverged or collapsed), ÷ the share of seeds that did. Clipping 'combines "
              "with' an optimizer where its row is as good as the unclipped row at that optimizer's best rate "
              "(claim 7).",
              "Heat maps of final test accuracy per method and learning rate, one per optimizer.")

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
if len(cls):
    print(report.design_view(stats.stability(cls, "final_test_accuracy")).to_string(index=False))

# %% [markdown]
# ## Paired effects against the unclipped run
# For each method setting and learning rate: the mean over seeds of clipped − unclipped, with its 95%
# interval and p-value, for the final test accuracy and for the area under the test-accuracy curve
# (higher = learned faster). "identical": every seed's difference was exactly 0 in that metric. These
# are secondary analyses; each claim is decided by its primary contrast alone.

# %%
cls_auc = stats.add_curve_areas(cls, cls_epochs, "test_accuracy")
effects = pd.concat([stats.paired_differences(cls, "final_test_accuracy"), stats.paired_differences(cls_auc, "auc")])
if len(effects):
    effects["effect"] = [stats.classify_effect(r.ci_low, r.ci_high, r.mean_difference) for r in effects.itertuples()]
    effects = effects[["metric", "optimizer", "learning_rate", "label", "mean_difference", "ci_low", "ci_high",
                       "p_value", "pairs", "effect"]]
    page.show_html(page.table(effects, "Paired differences, clipped − unclipped", collapsed=True))

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
if len(effects):
    print(report.design_view(effects).to_string(index=False))

# %%
fig = steps_to_target_points(cls, "steps_to_98") if len(cls) else None
if fig is not None:
    page.show(fig, rep.figures, "steps_to_98",
              "Optimizer steps until the test accuracy first reached 98%, per method setting, over the seeds "
              "that reached it (claim 1's 'faster' in steps).",
              "Point plot of steps to 98% test accuracy per method and setting.")
elif len(cls):
    page.show_html(page.note("No classifier run reached 98% test accuracy in this profile, so there is no "
                             "steps-to-98% figure; the areas under the curves above measure speed instead."))

# %% [markdown]
# # The detector
# ## COCO AP50 per method setting, optimizer and learning rate

# %%
if len(det):
    page.show_html(page.table(report.method_table(det, "final_AP50"), "Detector, per setting: runs that diverged, "
                              "stalled (AP50 below 0.01) and learned; median and range of the final AP50 over the "
                              "runs that did not diverge; the mean share of steps clipped (above 0.9: "
                              "normalisation)"))
    ap50_range = tasks.spec("detector").metric_range  # AP50's [0, 1]
    page.show(plots.final_metric_points(det, "final_AP50", ap50_range), rep.figures, "detector_ap50",
              "Final COCO AP50 on the test canvases per method setting and learning rate: every run (a failed, "
              "collapsed run as a red ×), the mean and its 95% interval over seeds, cut at AP50's range [0, 1]. "
              "Claim 8 compares YOLO's global-norm threshold 10 with no clipping at the better rate chosen on "
              "validation (3e-3); the confirmatory question 3 compares the probe's median threshold with none at "
              "1e-2, where unclipped runs collapse; question 8 (stage 3) adds a 300-step learning-rate warm-up "
              "(`+ warm-up 300`, never pooled with the runs without one).",
              "Point plot of detector AP50 per clipping method and learning rate.")
    page.show(plots.curves_with_ci(det_epochs, "AP50", "Detector AP50 over training", ap50_range), rep.figures,
              "detector_curves", "AP50 at every evaluation against optimizer steps, per method setting (mean, 95% "
              "interval over seeds, cut at 0 and 1). Where seeds either collapse near 0 or train to about 0.9, "
              "the mean lies between the two and the band spans both (the every-run figure above shows which).",
              "Line charts of detector AP50 against optimizer steps.")
else:
    page.show_html(page.note("This profile has no detector runs."))

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
if len(det):
    print(report.design_view(report.method_table(det, "final_AP50")).to_string(index=False))

# %% [markdown]
# ## The detector's gradient norms against the thresholds real detection codebases use

# %%
det_steps = rep.steps("detector")
det_steps = det_steps[det_steps["label"] == "none"]  # unclipped, without a learning-rate warm-up
if len(det_steps):
    shares = report.clip_share_at(det_steps, [0.1, 10.0, 35.0])
    page.show_html(page.table(shares, "Share of the unclipped detector's steps each common threshold would clip", 4))
    kinds = outcomes.add_outcomes(det).set_index("run_id")["outcome"]
    page.show(norm_distribution(det_steps, (0.1, 10.0, 35.0), outcome=kinds,
                                      title="Detector gradient norms (unclipped runs) against common thresholds"),
              rep.figures, "detector_norms",
              "The unclipped detector's global gradient norms, one panel per learning rate, runs that learned apart "
              "from those that collapsed, on log axes (the tail reaches the largest norm in each title), with the "
              "thresholds of mmdetection's DETR/DINO (0.1), Ultralytics YOLO (10) and mmdetection's YOLOv3/FCOS (35). "
              "A published bundle keeps every one of a run's first 50 steps and then about every k-th: each kept step "
              "is weighted by the steps it stands for, so the histogram estimates every step's norm; a spike between "
              "two kept steps past step 50 is not seen. Loss scales differ between codebases: this shows how each "
              "threshold would act on this model, not in theirs. The seeds of every stage are pooled here; runs with a "
              "learning-rate warm-up (question 8) are left out.",
              "Log-log step histograms of gradient norms per learning rate with three vertical threshold lines.")

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
if len(det_steps):
    print(report.design_view(shares).to_string(index=False))

# %%
best = det.sort_values("final_AP50", ascending=False).iloc[0] if len(det) else None
if best is not None and (rep.runs_root / best["run_id"] / "detections.json").is_file():  # not in a results bundle
    sample = report.sample_predictions(rep.runs_root / best["run_id"])
    fig = draw_detections(sample["canvases"], sample["gt_boxes"], sample["gt_classes"], sample["boxes"],
                                sample["scores"], sample["classes"],
                                title=f"Best run: {best['label']}, {best['optimizer']} lr={best['learning_rate']:g}")
    page.show(fig, rep.figures, "detector_samples",
              "The first test canvases with ground truth (green) and the best run's detections scoring ≥ 0.3 "
              "(red, class:score).", "Grid of digit canvases with ground-truth and predicted boxes.")

# %% [markdown]
# # Injected gradient spikes

# %%
if len(rep.spiked):
    recovery = report.spike_table(rep.table, rep.runs_root)
    order = {label: i for i, label in enumerate(plots.hue_and_order(recovery)[1])}
    recovery = (recovery.groupby(["task", "optimizer", "learning_rate", "label"]).mean(numeric_only=True)
                .drop(columns=["seed"]).sort_index(key=lambda c: c.map(order) if c.name == "label" else c))
    page.show_html(page.table(recovery.reset_index(), "Mean over seeds: the loss peak relative to the level before "
                              "the bad batches, and the steps until the running mean is back within 1.1×"))
    spike_steps = rep.table.steps[rep.table.steps["spiked"]]
    first = report.spike_steps(rep.runs_root / rep.spiked["run_id"].iloc[0])
    page.show(spike_traces(spike_steps, first, rep.spiked), rep.figures, "spike_recovery",
              "Training loss per step (median over seeds) around three injected bad batches (shaded; their loss, "
              "hence gradient, scaled ×100), one panel per optimizer, one line per method setting; × marks a "
              "failed run's last finite loss, and the legend counts the failed runs of each setting. Clipping "
              "prevents the explosion where its line stays low and none of its runs failed (claim 3a).",
              "Log-scale line chart of training loss around the injected spike for each method.")
else:
    page.show_html(page.note("This profile injects no gradient spikes."))

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
if len(rep.spiked):
    print(report.design_view(recovery).to_string(index=False))

# %% [markdown]
# # The other tasks
# Each task the claim sections above do not cover (the recurrent adding problem, the study's positive
# control, and any task added to `clipstudy.tasks`): per optimizer, learning rate and method setting, the
# runs, the share that diverged or failed, the task's primary metric and the clipped share of steps.

# %%
other_tasks = report.tasks_without_a_section(rep)
for task in other_tasks:
    spec, sub = tasks.spec(task), rep.summaries(task)
    metric = spec.primary_metric
    page.show_html(page.table(report.method_table(sub, metric), f"{task}: {spec.summary}. Per setting: runs "
                              "that diverged, stalled (no better than the task's floor) and learned, then the median "
                              "and range of the metric over the runs that did not diverge, and the share of steps "
                              "clipped"))
    if task == "adding":
        for epochs, runs in sub.groupby(plots.training_length(sub)):
            steps = int(runs["steps_planned"].max()) if "steps_planned" in runs else 0
            page.show(plots.recurrent_outcomes(runs), rep.figures, f"adding_mse_{int(epochs)}ep",
                      f"The adding problem (T = 50), {steps:,} SGD steps: the final test MSE of every run, one panel "
                      "per method setting so that every point sits at the rate it ran at; the median over the runs "
                      "that did not diverge joined across rates; a run that did not diverge but ended above MSE 1 "
                      "as a triangle at the top edge; diverged runs as red × above the axis with their "
                      "count; dashed lines: the constant predictor (0.167) and a model that finds one of the two "
                      "values (0.083); dotted: solved (0.01).",
                      "Log-log point plots of final test MSE against learning rate, one panel per clipping method.")
    else:
        page.show(plots.final_metric_points(sub, metric, spec.metric_range), rep.figures, f"{task}_{metric}",
                  f"{task}: {metric.replace('_', ' ')} per method setting and learning rate, per optimizer: every "
                  "run (a failed one as a red ×), the mean over seeds and its 95% interval from 5 seeds"
                  + (f", drawn at the edge of {spec.metric_range} when beyond it" if spec.metric_range else "") + ".",
                  f"Point plot of {metric} per clipping method and learning rate for the {task} task.")
if not other_tasks:
    page.show_html(page.note("This profile has no runs of other tasks."))

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
for task in other_tasks:
    print(task)
    table = report.method_table(rep.summaries(task), tasks.spec(task).primary_metric)
    print(report.design_view(table).to_string(index=False))

# %% [markdown]
# ## Q3 on one CPU: a robustness check
# Stage 2's detector question (Q3) was trained across CPUs: the unclipped runs of seeds 5 to 7 on one, their
# clipped twins on another, and a run can collapse on one CPU and train on another. Every arm of those seeds
# trained again on one machine (`python -m clipstudy.orchestration.robustness`), beside the runs as published.

# %%
q3_check = rep.q3_one_cpu()
if q3_check is not None:
    shown = q3_check[["arm", "seed", "published_collapsed", "published_AP", "published_platform",
                      "retrained_collapsed", "retrained_AP", "retrained_platform"]]
    page.show_html(page.table(shown.round(4), stage2.q3_one_cpu_words(q3_check)))
else:
    page.show_html(page.note("No robustness check of Q3 is published with this profile."))

# %% [markdown]
# # Stage 3: where clipping is known to matter
# The third stage's confirmatory questions, registered (commit 806d3ba) with their cells and seeds before their
# first run: Q5, the positive control on the adding problem (Q5a: divergence at SGD 0.03; Q5b: each arm at its
# own tuned rate, final test MSE and steps to validation MSE 0.05); Q6, tuned against tuned on the refined grid
# (SGD and momentum, final test accuracy and steps to 98%); Q7, which threshold (the probe's 50th, 90th and 99th
# percentile against the fixed 1); Q8, the detector at Adam 1e-2 in four arms (none, global norm 10, a 300-step
# learning-rate warm-up, both; collapses, exact McNemar). Every pair is made on one CPU (a pair whose runs record
# different platforms is refused); an answer decides its claim only once every registered seed is paired.

# %%
stage3 = rep.stage3_answers()
if any(a.effect is not None and a.effect.n for a in stage3):
    page.show_html(page.answers_table(stage3, "Stage 3's answers: each question's verdict by its registered rule, "
                                      "the effect (clipped − reference) with its 95% interval, p and n (interval "
                                      "and p only from 5 pairs), the share of steps the clipped arm clipped, and "
                                      "how many of the registered seeds are in"))
    chosen = stage3_answers.recommended_percentile(rep.evidence())
    default = stage3_answers.default_percentile(rep.evidence())
    page.show_html(page.note(
        "Q7's choice of the probe's default percentile (read only once Q7 is complete). A percentile is allowed in "
        "a cell when its median share of clipped steps is at most 90% and most of its runs learned; per cell, the "
        "allowed one with the best median final metric: " + "; ".join(
            f"{cell}: {'p' + str(p) if p else 'none allowed'}" for cell, p in chosen.items())
        + ". One default for every cell, the percentile allowed in the most cells (a tie to the lower): "
        + (f"p{default}." if default else "none yet.")))
else:
    page.show_html(page.note("This profile has no stage-3 confirmatory runs."))

# %%
q8_runs = stage3_answers.detector_arms(rep.evidence())
if len(q8_runs):
    page.show(warmup_arms(q8_runs, rep.steps("detector")), rep.figures, "q8_warmup",
              f"Question 8: the detector at Adam 1e-2 in its four arms, seeds {q8_runs['seed'].min()} to "
              f"{q8_runs['seed'].max()} of the registered 12 to 30. Top: each run's training loss over its first "
              "1,000 of 2,814 steps (log scale; a collapsed run red), the warm-up's 300 steps shaded. Bottom: each "
              "run's final test AP@[.5:.95], a seed's four runs joined by a grey line, a collapsed run a red × near "
              "0. Every run of a seed was trained on one CPU in one sitting.",
              "Four small line charts of training loss against steps, one per arm, above a strip of final AP per "
              "arm with each seed's runs joined.")

# %% tags=["report-hidden"]
# NBVAL_CHECK_OUTPUT
for a in stage3:
    # n where an effect was measured; a reading of other answers (Q8's which first) has none of its own
    print(f"{a.question}: {'complete' if a.complete else 'incomplete'}" + (f", n={a.effect.n}" if a.effect else ""))

# %% [markdown]
# # Cost of clipping

# %%
overhead = report.overhead_ratios(rep.bench_files)
if len(overhead):
    source = overhead["source"].iloc[0]
    page.show(overhead_bars(overhead, report.OVERHEAD_TARGETS, title="Cost of clipping per optimizer step"),
              rep.figures, "overhead",
              f"Median step time of each method relative to no clipping, measured by `make bench` with the methods "
              f"interleaved in one process ({source}); whiskers: the lowest and highest ratio over the bench's "
              "rounds; dashed: the target each method should stay under. Every method adds work per step by "
              "construction (claim 4).",
              "Bar chart of step-time ratio to no clipping for each method, from zero.")
else:
    page.show_html(page.note("No cost figure: it is drawn only from `make bench`'s interleaved measurement "
                             "(reports/bench.json), and there is none here. Run `make bench`."))

# %% [markdown]
# # What changed after the runs began
#
# The paper profile's design as first committed was cut to fit its compute budget after its first runs were
# in; the confirmatory stage was pre-registered (commit 4e1cbaa) before any of its runs. Every change made after
# runs began, with its commit:

# %%
page.show_html(page.table(pd.DataFrame(claims.DESIGN_CHANGES), "Design changes made after the first run"))

# %% [markdown]
# # The claims in full
# Each claim's primary contrast, the rule that decides it, the numbers behind the verdict, and the
# secondary analyses. `make report` also writes them to `claims.csv`.

# %%
page.show_html(page.claim_details(audit))
