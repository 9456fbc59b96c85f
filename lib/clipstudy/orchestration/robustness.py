"""Robustness checks of published answers, retrained on one machine: Q3 on one CPU.

Stage 2's Q3 (the detector at Adam 1e-2, seeds 5-9) was trained across CPUs: the unclipped runs of seeds 5 to 7 on an
AMD EPYC Zen 5, their clipped twins on a Zen 3, and a run can collapse on one CPU and train on another. This trains
every arm of those seeds again on this machine (the same parameters and run ids as the published runs, in a folder
of their own; the published runs stay as they are) and sets the outcomes side by side: collapsed or not, AP, the
platform each run recorded. Q3's pre-registered verdict does not change; the check is reported beside it.

    python -m clipstudy.orchestration.robustness [--reports reports/] [--unclipped-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from clipstudy.analysis import report, stage1, stage2, stage3_answers
from clipstudy.fileio import atomic_target
from clipstudy.study import runfiles, sweep
from clipstudy.study.plan import Plan, load_plan
from clipstudy.study.profiles import RunSpec

#: The seeds whose Q3 arms were trained on different CPUs, and the folder (under reports/) their retraining goes to.
Q3_CROSSED_SEEDS = (5, 6, 7)
Q3_ONE_CPU = "paper-q3-one-cpu"


def q3_crossed_runs(plan: Plan) -> list[RunSpec]:
    """Every arm of Q3's CPU-crossed seeds, as published (thresholds from data read from the bundle's probes)."""
    where = stage2.DETECTOR_UNSTABLE
    return [
        s
        for s in plan.resolved(plan.bundle / "probes")
        if s is not None
        and s.experiment == "confirm_detector"
        and s.config.task == where["task"]
        and s.config.optimizer == where["optimizer"]
        and s.config.learning_rate == where["learning_rate"]
        and s.config.seed in Q3_CROSSED_SEEDS
    ]


def retrain(reports: str | Path | None = None, unclipped_only: bool = False, workers: int | None = None):
    """Train the runs of ``q3_crossed_runs`` into ``reports/paper-q3-one-cpu/runs/`` (skipping those already there);
    the unclipped arm first when ``unclipped_only``. Returns the sweep's result."""
    plan = load_plan("paper")
    runs = [s for s in q3_crossed_runs(plan) if not unclipped_only or s.config.method == "none"]
    with tempfile.TemporaryDirectory() as scratch:
        # the sweep names its folder after its profile: a one-line profile of that name, its runs given as ``plan``
        profile = Path(scratch) / f"{Q3_ONE_CPU}.yaml"
        first = runs[0].config
        experiment = {"name": "q3", "task": first.task, "methods": ["none"], "seeds": [first.seed],
                      "optimizers": {first.optimizer: [first.learning_rate]}}  # fmt: skip
        profile.write_text(yaml.safe_dump({"experiments": [experiment]}))
        return sweep.run_sweep(profile, reports, plan=runs, workers=workers)


def q3_one_cpu_table(plan: Plan, retrained: Path) -> pd.DataFrame:
    """One row per run of ``q3_crossed_runs``: its arm and seed, and as published and as retrained here, whether
    it collapsed, its final AP and the platform it recorded."""
    rows = []
    for s in q3_crossed_runs(plan):
        published = runfiles.load_summary(plan.bundle / "runs" / s.run_id)
        here = retrained / s.run_id
        again = runfiles.load_summary(here) if runfiles.is_finished(here) else None
        label = "none" if s.config.method == "none" else stage1.DETECTOR_CLIP
        if s.config.threshold_rule:
            label = stage2.PROBE_MEDIAN
        rows.append(
            {
                "arm": label,
                "seed": s.config.seed,
                "published_collapsed": published.get("failure") is not None,
                "published_AP": published.get("final_AP"),
                "published_platform": stage3_answers.platform_key(published.get("platform")),
                "retrained_collapsed": None if again is None else again.get("failure") is not None,
                "retrained_AP": None if again is None else again.get("final_AP"),
                "retrained_platform": None if again is None else stage3_answers.platform_key(again.get("platform")),
                "run_id": s.run_id,
            }
        )
    return pd.DataFrame(rows)


def publish(plan: Plan, retrained: Path) -> Path:
    """Write the comparison (``q3_one_cpu_table``, with each retrained run's outcome digest) into the bundle, where
    the report reads it (``report.Q3_ONE_CPU_TABLE``)."""
    table = q3_one_cpu_table(plan, retrained)
    table["retrained_outcome_sha256"] = [
        runfiles.load_summary(retrained / r).get("outcome_sha256") if runfiles.is_finished(retrained / r) else None
        for r in table["run_id"]
    ]
    target = plan.bundle / report.Q3_ONE_CPU_TABLE
    with atomic_target(target) as tmp:
        table.to_csv(tmp, index=False)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.orchestration.robustness", description=__doc__)
    parser.add_argument("--reports", default=None, help="output root (default: reports/)")
    parser.add_argument("--unclipped-only", action="store_true", help="retrain the unclipped arm only")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--table", action="store_true", help="print the comparison only (no training)")
    parser.add_argument("--publish", action="store_true", help="write the comparison into results/paper/ (no training)")
    args = parser.parse_args(argv)
    plan = load_plan("paper")
    folder = plan.local(args.reports).parent / Q3_ONE_CPU / "runs"
    if args.publish:
        print(f"published: {publish(plan, folder)}")
    elif not args.table:
        result = retrain(args.reports, args.unclipped_only, args.workers)
        for run, error in result.failed.items():
            print(f"FAILED {run}: {error}", file=sys.stderr)
    table = q3_one_cpu_table(plan, folder)
    print(table.drop(columns=["run_id"]).to_string(index=False))
    print(stage2.q3_one_cpu_words(table))
    print(json.dumps({"retrained": int(table["retrained_collapsed"].notna().sum()), "of": len(table)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
