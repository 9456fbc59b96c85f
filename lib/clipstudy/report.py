"""Aggregation of a profile's runs into tidy tables, and the report build (``make report``).

    python -m clipstudy.report --profile quick

executes ``notebooks/90_report.ipynb`` for the profile into ``reports/<profile>/report.ipynb``
and exports it, without code cells, to ``reports/<profile>/report.html``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipstudy import plots, runs
from clipstudy._atomic import atomic_target

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REPORTS = REPO / "reports"
PARAM_COLUMNS = ["task", "method", "optimizer", "learning_rate", "seed", "dataset"]
#: What varies within an experiment; everything else in a run's parameters is its condition (settings_key),
#: and only runs of the same condition are compared.
RUN_AXES = {"method", "clip_params", "optimizer", "learning_rate", "seed", "threshold_rule"}


@dataclass
class ProfileRuns:
    """Every run of a profile: one row per run, and the per-step and per-epoch rows of all runs."""

    summaries: pd.DataFrame
    steps: pd.DataFrame
    epochs: pd.DataFrame
    failed: pd.DataFrame


def load_runs(root: str | Path, run_ids=None) -> ProfileRuns:
    """Read the finished runs under ``root`` (``reports/<profile>/runs``) into tidy DataFrames.

    ``run_ids`` limits it to those runs (the profile's current plan), so runs left over from an
    earlier version of a profile do not leak into its report.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: run the sweep first (make reproduce, or "
                                f"python -m clipstudy.sweep --profile {root.parent.name})")
    rows, steps, epochs, failed = [], [], [], []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if run_ids is not None and run_dir.name not in run_ids:
            continue
        if not runs.is_finished(run_dir):
            if (run_dir / runs.ERROR).is_file():
                err = json.loads((run_dir / runs.ERROR).read_text())
                failed.append({"run_id": run_dir.name, "error": err.get("error")})
            continue
        summary = runs.load_summary(run_dir)
        params = summary.get("params", {})
        clip_params = params.get("clip_params") or {}
        if params.get("threshold_rule"):
            # A threshold read from data differs per run: group the runs by the rule that chose it.
            percentile = params["threshold_rule"].split()[1]
            clip_params = {**clip_params, "threshold": f"p{percentile} of unclipped"}
        settings = {k: v for k, v in params.items() if k not in RUN_AXES}
        row = {"run_id": run_dir.name, **{k: params.get(k) for k in PARAM_COLUMNS},
               "settings_key": json.dumps(settings, sort_keys=True), "spiked": bool(params.get("spikes")),
               "clip_params": runs.format_params(clip_params),
               "label": params.get("method") + (f" ({runs.format_params(clip_params)})" if clip_params else "")}
        row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list)) and k not in row})
        rows.append(row)
        keys = {k: row[k] for k in ["run_id", *PARAM_COLUMNS, "clip_params", "label", "settings_key", "spiked"]}
        steps.append(pd.read_parquet(run_dir / runs.STEPS).assign(**keys))
        epochs.append(pd.read_parquet(run_dir / runs.EPOCHS).assign(**keys))
    if not rows:
        raise FileNotFoundError(f"no finished runs under {root}: run the sweep first")
    summaries = pd.DataFrame(rows)
    for col in summaries.columns:
        if summaries[col].dtype == object and summaries[col].map(lambda v: v is None or isinstance(v, float)).all():
            summaries[col] = summaries[col].astype(float)  # JSON null back to NaN
    return ProfileRuns(summaries, pd.concat(steps, ignore_index=True), pd.concat(epochs, ignore_index=True),
                       pd.DataFrame(failed, columns=["run_id", "error"]))


def load_profile_runs(profile: str, reports: str | Path | None = None) -> tuple[str, ProfileRuns, list[str]]:
    """The profile's name, the runs of its current plan, and the ids of planned runs not finished yet."""
    from clipstudy import sweep

    name, specs = sweep.load_profile(profile)
    root = Path(reports or DEFAULT_REPORTS) / name / "runs"
    planned = {s.run_id for s in specs}
    table = load_runs(root, planned)
    missing = sorted(planned - set(table.summaries["run_id"]) - set(table.failed["run_id"]))
    return name, table, missing


def method_table(summaries: pd.DataFrame, metric: str = "final_test_accuracy") -> pd.DataFrame:
    """Per optimizer, learning rate and method setting: runs, divergence rate, mean ``metric`` and clip fraction."""
    grouped = summaries.groupby(["optimizer", "learning_rate", "method", "clip_params"], sort=True)
    table = grouped.agg(runs=("run_id", "count"), diverged=("diverged", "mean"),
                        **{metric.removeprefix("final_"): (metric, "mean")}, clip_fraction=("clip_fraction", "mean"))
    table = table.reset_index()
    order = {m: i for i, m in enumerate(plots.method_order(table["method"]))}
    return table.sort_values(["optimizer", "learning_rate", "method", "clip_params"],
                             key=lambda c: c.map(order) if c.name == "method" else c, ignore_index=True)


def clip_share_at(steps: pd.DataFrame, thresholds) -> pd.DataFrame:
    """Share of steps whose global norm exceeds each threshold (what global-norm clipping there would clip)."""
    norms = steps["norm_before"][pd.notna(steps["norm_before"])]
    return pd.DataFrame({"threshold": list(thresholds),
                         "share_of_steps_clipped": [float((norms > t).mean()) for t in thresholds],
                         "steps": len(norms)})


def sample_predictions(run_dir: str | Path, count: int = 8):
    """Canvases of a detector run's test split with its ground truth and detections, for drawing."""
    import numpy as np

    from clipstudy import coco, detection_data, training

    run_dir = Path(run_dir)
    params = runs.load_summary(run_dir)["params"]
    canvases, _, _ = detection_data.split_canvases(params["dataset"], "test")
    idx = training.subset_indices(len(canvases), params.get("test_subset"), params["seed"], "test_subset")[:count]
    gt = json.loads((run_dir / "ground_truth.json").read_text())
    dets = json.loads((run_dir / "detections.json").read_text())
    out = {"canvases": canvases[idx], "gt_boxes": [], "gt_classes": [], "boxes": [], "scores": [], "classes": []}
    for image_id in range(1, len(idx) + 1):
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        found = [d for d in dets if d["image_id"] == image_id]
        out["gt_boxes"].append(coco.coco_to_xyxy([a["bbox"] for a in anns]))
        out["gt_classes"].append(np.array([a["category_id"] - 1 for a in anns]))
        out["boxes"].append(coco.coco_to_xyxy([d["bbox"] for d in found]))
        out["scores"].append(np.array([d["score"] for d in found]))
        out["classes"].append(np.array([d["category_id"] - 1 for d in found]))
    return out


def build_report(profile: str, reports: str | Path | None = None) -> Path:
    """Execute the report notebook for ``profile`` and export it to HTML without code; return the HTML path."""
    import papermill as pm

    from clipstudy import sweep

    out = Path(reports or DEFAULT_REPORTS) / sweep.resolve_profile(profile).stem
    out.mkdir(parents=True, exist_ok=True)
    executed = out / "report.ipynb"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with atomic_target(executed) as tmp_nb:
        pm.execute_notebook(str(REPO / "notebooks" / "90_report.ipynb"), str(tmp_nb),
                            parameters={"profile": str(profile), "reports_dir": str(out.parent)},
                            kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False)
    with atomic_target(out / "report.html") as tmp_html:
        subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "--no-input", "--log-level", "WARN",
                        str(executed), "--output", tmp_html.name, "--output-dir", str(out)], check=True)
    return out / "report.html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build reports/<profile>/report.html from the profile's runs.")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--reports", default=str(DEFAULT_REPORTS))
    args = parser.parse_args(argv)
    html = build_report(args.profile, args.reports)
    print(f"report: {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def spike_steps(run_dir: str | Path) -> list[int]:
    """The steps at which a run's bad batches were injected."""
    return list(runs.load_summary(run_dir)["params"]["spikes"]["steps"])


def overhead_ratios(reports: str | Path, summaries: pd.DataFrame) -> pd.DataFrame:
    """Per-step time of each method / ``none``: from ``reports/bench.json`` (``make bench``) when present,
    else the median over the classifier runs of ``summaries`` (noisier: runs share the machine)."""
    bench = Path(reports) / "bench.json"
    if bench.is_file():
        overhead = json.loads(bench.read_text()).get("overhead") or {}
        if overhead:
            return pd.DataFrame([{"method": m, "ratio": o["ratio"], "source": "make bench"} for m, o in overhead.items()])
    cls = summaries[(summaries["task"] == "classifier")] if "task" in summaries else summaries
    if cls.empty or "median_step_time_s" not in cls:
        return pd.DataFrame(columns=["method", "ratio", "source"])
    per_method = cls.groupby("method")["median_step_time_s"].median()
    if "none" not in per_method:
        return pd.DataFrame(columns=["method", "ratio", "source"])
    return pd.DataFrame([{"method": m, "ratio": float(t / per_method["none"]), "source": "sweep runs"}
                         for m, t in per_method.items()])


def spike_table(table: ProfileRuns, runs_root: str | Path) -> pd.DataFrame:
    """Per spiked run: its condition and how it met the injected bad batches (``analysis.spike_recovery``)."""
    from clipstudy import analysis

    spiked = table.summaries[table.summaries["spiked"]]
    rows = []
    for run in spiked.itertuples():
        steps = table.steps[table.steps["run_id"] == run.run_id]
        recovery = analysis.spike_recovery(steps, spike_steps(Path(runs_root) / run.run_id))
        rows.append({"task": run.task, "optimizer": run.optimizer, "learning_rate": run.learning_rate,
                     "label": run.label, "method": run.method, "seed": run.seed, "diverged": run.diverged, **recovery})
    return pd.DataFrame(rows)
