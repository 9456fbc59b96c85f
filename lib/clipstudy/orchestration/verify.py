"""Are the published numbers reproducible? Retrain runs drawn from a profile's bundle and check them at the
level this machine can promise.

    python -m clipstudy.orchestration.verify --profile paper [--runs 2] [--draw cheapest|sample]

Each drawn run is executed again (its notebook, in a fresh kernel, so its thread counts are its own) into a
temporary folder and compared with its published copy. Which promise is checked depends on the platform the
run recorded (``clipstudy.platforms``: CPU, oneDNN's instruction set, TensorFlow's settings, threads, versions):

* **bits**, where the recorded platform matches this one: every summary field but timings, every evaluation
  row and every step the bundle kept must be identical (``study.differences``). Runs recorded before the
  platform block existed name only the CPU's model name, the versions and the thread counts; where those
  match, the bits are checked, and a difference is reported as such before the study-level check decides.
* **study level**, elsewhere (another CPU picks other kernels, so the last bits differ and a trajectory
  amplifies them). Stated before looking, and checked for every retrained run:

  1. each metric the run's notebook prints (its task's ``summary_keys``) differs from the published value
     of the same seed by no more than its cell's seed-to-seed spread (max − min over the cell's published
     seeds; a cell is every run with the same parameters but the seed);
  2. the run fails (or not) as the published run did, unless the cell's published seeds include both
     (its failure then varies from seed to seed, as its metrics do; added 2026-12-02, after a spike run at
     the edge of stability, collapsed on the Xeon, trained here);
  3. and, over all the retrained runs together, every claim's verdict is unchanged when the retrained runs
     replace the published ones in the profile's audit.

Every deviation found is printed, whether or not it is within the promise.

A run too long to retrain whole in ``make reproduce``'s minutes can be checked on its **first steps** instead
(``--prefix-long``: the first ``PREFIX_STEPS``, which every published run keeps whole in its bundle): the run
is trained again from its own parameters and stopped there. Bits: those steps' every column identical. Study
level, elsewhere: (1) step 1's loss and gradient norm, one forward and backward pass from the same weights
and batch summed in another order, within ``FIRST_STEP_RTOL`` of the published values; (2) the mean
training loss over those steps within the cell's seed-to-seed spread of the same mean; (3) the prefix
diverges if and only if the published run diverged within it. A prefix enters no verdict: it shows that the
data, the model, its initialisation, the clipper and the step reproduce, not that the run's end does.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipstudy import paths, platforms, tasks
from clipstudy.analysis import report, stage1
from clipstudy.study import bundle, differences, kernels, notebooks, runfiles, sweep
from clipstudy.study.plan import Plan, load_plan
from clipstudy.study.profiles import ProfileError

BITS = "bits"
STUDY_LEVEL = "study level"
PREFIX_STEPS = bundle.KEEP_FIRST  # every published run keeps its first steps whole
FIRST_STEP_RTOL = 1e-4  # step 1 on another CPU: the same sums in another order (float32: ~1e-7 relative)


@dataclass
class Verification:
    """What retraining one published run showed."""

    run_id: str
    promise: str  # BITS or STUDY_LEVEL
    platform: list[str]  # how the recorded platform differs from this one ("field: a != b")
    unknown: list[str]  # platform fields the published run did not record
    bit_differences: list[str]  # every field, column or file that is not identical
    deviations: list[dict] = field(default_factory=list)  # metric, published, retrained, difference, spread, within
    out_dir: Path | None = None  # the retrained run's folder
    prefix: int | None = None  # checked on its first this many steps only (None: the whole run)

    @property
    def identical(self) -> bool:
        return not self.bit_differences

    @property
    def ok(self) -> bool:
        if self.promise == BITS:
            return self.identical
        return all(d["within"] for d in self.deviations)

    def lines(self) -> list[str]:
        """What a reader is told about this run."""
        head = (
            {True: "same bits", False: "DIFFERENT bits"}[self.identical]
            if self.promise == BITS
            else ("within the study's tolerance" if self.ok else "OUTSIDE the study's tolerance")
        )
        checked = self.promise + (f", first {self.prefix} steps" if self.prefix else ", whole run")
        out = [f"{head}: {self.run_id} (checked: {checked})"]
        if self.promise == STUDY_LEVEL:
            why = (
                "; ".join(self.platform)
                if self.platform
                else f"platform not fully recorded ({', '.join(self.unknown)}) and the bits differ"
            )
            out.append(f"  recorded platform differs from this one: {why}")
            out.append(
                f"  {len(self.bit_differences)} fields/columns differ in their bits; "
                + (
                    f"step 1 against a relative {FIRST_STEP_RTOL:g}, the mean loss against the cell's "
                    "seed-to-seed spread:"
                    if self.prefix
                    else "metrics against the cell's seed-to-seed spread:"
                )
            )
            for d in self.deviations:
                out.append(
                    f"    {d['metric']}: published {_fmt(d['published'])}, retrained {_fmt(d['retrained'])}, "
                    f"|diff| {_fmt(d['difference'])} vs {'tolerance' if d.get('tolerance') else 'spread'} "
                    f"{_fmt(d['spread'])}"
                    f"{'' if d['within'] else '  <-- OUTSIDE'}"
                )
        else:
            out += [f"  {p}" for p in self.bit_differences]
        return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def cheapest_runs(profile: str | Path | Plan, count: int) -> list:
    """The ``count`` published runs of ``profile`` that took the least time to train (their recorded wall
    time; ties by id) among those that ran every planned step: the cheapest to re-run that show a whole
    trajectory, drawn the same way every time. Time, not steps: a step of the recurrent task costs a tenth of a
    classifier's; whole runs, since a run that diverged at step 18 would check only 18 steps."""
    done, _ = _published(profile)
    published = load_plan(profile).record() / "runs"
    summaries = {s.run_id: runfiles.load_summary(published / s.run_id) for s in done}
    whole = [s for s in done if summaries[s.run_id]["steps_run"] == summaries[s.run_id]["steps_planned"]]
    return sorted(whole, key=lambda s: (summaries[s.run_id]["wall_time_s"], s.run_id))[:count]


def sample_runs(
    profile: str | Path | Plan,
    seed: int = 0,
    max_steps: int | None = None,
    only_short: bool = False,
    prefix_long: bool = False,
) -> list:
    """One published run of each experiment, drawn reproducibly (``seed``) among its runs of at most
    ``max_steps`` planned steps (the cheapest run of the experiment when none is that short, or, with
    ``only_short``, none: ``skipped_experiments`` names those; with ``prefix_long``, one drawn from all its
    runs, for ``verify_prefix``)."""
    done, steps = _published(profile)
    by_experiment: dict[str, list] = {}
    for s in sorted(done, key=lambda s: s.run_id):
        by_experiment.setdefault(s.experiment, []).append(s)
    rng = random.Random(seed)
    chosen = []
    for name in sorted(by_experiment):
        runs = by_experiment[name]
        short = [s for s in runs if max_steps is None or steps[s.run_id] <= max_steps]
        if short:
            chosen.append(rng.choice(short))
        elif prefix_long:
            chosen.append(rng.choice(runs))
        elif not only_short:
            chosen.append(min(runs, key=lambda s: (steps[s.run_id], s.run_id)))
    return chosen


def skipped_experiments(profile: str | Path | Plan, chosen: list) -> list[str]:
    """The experiments with published runs that ``chosen`` does not sample."""
    done, _ = _published(profile)
    return sorted({s.experiment for s in done} - {s.experiment for s in chosen})


def _published(profile):
    plan = load_plan(profile)
    published = plan.record() / "runs"
    resolved = plan.resolved(plan.record() / "probes")
    done = [s for s in resolved if s is not None and runfiles.is_finished(published / s.run_id)]
    steps = {s.run_id: runfiles.load_summary(published / s.run_id)["steps_planned"] for s in done}
    return done, steps


def bit_differences(published: Path, out: Path) -> list[str]:
    """Every summary field (timings and platform aside), evaluation row and kept step that is not identical."""
    old = runfiles.load_summary(published)
    new = {k: v for k, v in runfiles.load_summary(out).items() if k in old}  # the numbers it published
    problems = differences.summary_differences(old, new)
    problems += differences.table_differences(
        pd.read_parquet(published / runfiles.EPOCHS), pd.read_parquet(out / runfiles.EPOCHS), runfiles.EPOCHS
    )
    kept = pd.read_parquet(published / runfiles.STEPS)
    rerun = pd.read_parquet(out / runfiles.STEPS)
    problems += differences.table_differences(
        kept, rerun[rerun["step"].isin(kept["step"])].reset_index(drop=True), runfiles.STEPS
    )
    return problems


def cell_dirs(summary: dict, runs_root: Path) -> list[Path]:
    """The published folders of every run with ``summary``'s parameters but the seed (itself included)."""
    key = {k: v for k, v in summary["params"].items() if k != "seed"}
    cell = []
    for run_dir in sorted(p for p in runs_root.iterdir() if p.is_dir() and runfiles.is_finished(p)):
        other = runfiles.load_summary(run_dir)
        if {k: v for k, v in other.get("params", {}).items() if k != "seed"} == key:
            cell.append(run_dir)
    return cell


def cell_of(summary: dict, runs_root: Path) -> list[dict]:
    """The published summaries of every run with ``summary``'s parameters but the seed (itself included)."""
    return [runfiles.load_summary(d) for d in cell_dirs(summary, runs_root)]


def _number(v) -> float:
    return math.nan if v is None else float(v)


def deviations(published: dict, retrained: dict, cell: list[dict], metrics) -> list[dict]:
    """Rule 1 and 2 of the study level: each metric against the cell's seed-to-seed spread; the failure."""
    rows = []
    for m in metrics:
        values = [_number(s.get(m)) for s in cell]
        finite = [v for v in values if not math.isnan(v)]
        old, new = _number(published.get(m)), _number(retrained.get(m))
        spread = (max(finite) - min(finite)) if finite else math.nan
        if math.isnan(old) or math.isnan(new):
            # a target never reached: the same on both sides, or some seed of the cell also never reached it
            within = math.isnan(old) == math.isnan(new) or len(finite) < len(values)
            diff = 0.0 if math.isnan(old) and math.isnan(new) else math.inf
        else:
            diff = abs(new - old)
            within = diff <= spread or diff == 0
        rows.append(
            {
                "metric": m,
                "published": old,
                "retrained": new,
                "difference": diff,
                "spread": spread,
                "within": bool(within),
            }
        )
    failed = (published.get("failure"), retrained.get("failure"))
    same = (failed[0] is None) == (failed[1] is None)
    # A cell whose published seeds both fail and train: its failure varies from seed to seed, as its metrics do,
    # so a run that flips is within the cell's spread (rule 2 reads the outcome as rule 1 reads a metric).
    mixed = len({s.get("failure") is None for s in cell}) == 2
    rows.append(
        {
            "metric": "failure",
            "published": failed[0],
            "retrained": failed[1],
            "difference": 0.0 if same else math.inf,
            "spread": "seeds differ" if mixed else "-",
            "within": same or mixed,
        }
    )
    return rows


def _retrain(spec, out: Path, parameters: dict) -> None:
    """Execute ``spec``'s notebook into ``out`` as the sweep does: in this process's warm kernel for its threads."""
    source = paths.notebook(spec.notebook)
    key = kernels.KernelKey.for_notebook(source, spec.config.threads)
    notebooks.execute(
        source, out / "notebook.ipynb", parameters, kernel=kernels.kernel_for(key), timeout=sweep.run_timeout()
    )


def verify_run(spec, published: Path, scratch: Path, current: dict | None = None) -> Verification:
    """Retrain ``spec`` into ``scratch`` and check it against its published copy at the level the recorded
    platform allows (see the module's text)."""
    out = _retrained(spec, scratch)
    old, new = runfiles.load_summary(published), runfiles.load_summary(out)
    result = _promised(spec, old, current or platforms.recorded(new), bit_differences(published, out), out)
    if result.promise == STUDY_LEVEL:
        metrics = tasks.spec(old["task"]).summary_keys
        result.deviations = deviations(old, new, cell_of(old, published.parent), metrics)
    return result


def _retrained(spec, scratch: Path, **parameters) -> Path:
    """``spec`` trained again into ``scratch/<run id>`` (with the notebook's other ``parameters``); the folder."""
    out = scratch / spec.run_id
    out.mkdir(parents=True)
    _retrain(spec, out, {"config": spec.params, "output_dir": str(out), **parameters})
    return out


def _promised(spec, old: dict, current: dict, bits: list[str], out: Path, prefix: int | None = None) -> Verification:
    """What a retrained run is held to: bit for bit where the platform ``old`` recorded is ``current`` (a run
    recorded before the platform block was, with the fields it has, if its bits agree), else the study's level."""
    differ, unknown = platforms.differences(platforms.recorded(old), current)
    legacy_match = not differ and bool(unknown)
    promise = BITS if not differ and (not unknown or not bits) else STUDY_LEVEL
    kept_unknown = unknown if legacy_match or differ else []
    return Verification(spec.run_id, promise, differ, kept_unknown, bits, out_dir=out, prefix=prefix)


def prefix_mean_loss(steps: pd.DataFrame, n: int) -> float:
    """The mean training loss over a run's steps 1 to ``n`` (those with a finite loss: a diverged step's is
    not)."""
    loss = steps.loc[steps["step"] <= n, "loss"].to_numpy(dtype=float)
    loss = loss[np.isfinite(loss)]
    return float(loss.mean()) if len(loss) else math.nan


def _diverged_within(summary: dict, steps: pd.DataFrame, n: int) -> bool:
    return bool(summary.get("diverged")) and int(steps["step"].max()) <= n


def prefix_deviations(published: Path, out: Path, cell: list[Path], n: int) -> list[dict]:
    """The study level of a prefix (see the module's text): step 1 against ``FIRST_STEP_RTOL``, the mean loss
    over steps 1 to ``n`` against the cell's seed-to-seed spread, divergence within the prefix."""
    old, new = pd.read_parquet(published / runfiles.STEPS), pd.read_parquet(out / runfiles.STEPS)
    rows = []
    first_old, first_new = old[old["step"] == 1].iloc[0], new[new["step"] == 1].iloc[0]
    for column, name in (("loss", "step-1 loss"), ("norm_before", "step-1 gradient norm")):
        a, b = float(first_old[column]), float(first_new[column])
        tol = FIRST_STEP_RTOL * abs(a)
        rows.append(
            {
                "metric": name,
                "published": a,
                "retrained": b,
                "difference": abs(a - b),
                "spread": tol,
                "within": bool(abs(a - b) <= tol),
                "tolerance": True,
            }
        )
    means = [prefix_mean_loss(pd.read_parquet(d / runfiles.STEPS), n) for d in cell]
    finite = [m for m in means if math.isfinite(m)]
    spread = (max(finite) - min(finite)) if finite else math.nan
    a, b = prefix_mean_loss(old, n), prefix_mean_loss(new, n)
    diff = abs(a - b)
    rows.append(
        {
            "metric": f"mean loss, steps 1-{n}",
            "published": a,
            "retrained": b,
            "difference": diff,
            "spread": spread,
            "within": bool(diff <= spread or diff == 0),
        }
    )
    was = _diverged_within(runfiles.load_summary(published), old, n)
    now = bool(runfiles.load_summary(out).get("diverged"))
    rows.append(
        {
            "metric": f"diverged within {n} steps",
            "published": was,
            "retrained": now,
            "difference": 0.0 if was == now else math.inf,
            "spread": "-",
            "within": was == now,
        }
    )
    return rows


def prefix_bit_differences(published: Path, out: Path, n: int) -> list[str]:
    """Every column of steps 1 to ``n`` that is not identical to the published run's."""
    kept, rerun = pd.read_parquet(published / runfiles.STEPS), pd.read_parquet(out / runfiles.STEPS)
    kept = kept[kept["step"] <= n].reset_index(drop=True)
    rerun = rerun[rerun["step"] <= n].reset_index(drop=True)
    return differences.table_differences(kept, rerun, f"{runfiles.STEPS} (steps 1-{n})")


def verify_prefix(spec, published: Path, scratch: Path, steps: int = PREFIX_STEPS) -> Verification:
    """Retrain the first ``steps`` steps of ``spec`` into ``scratch`` and check them against its published
    copy at the level the recorded platform allows (see the module's text)."""
    out = _retrained(spec, scratch, stop_after=steps)
    old, new = runfiles.load_summary(published), runfiles.load_summary(out)
    bits = prefix_bit_differences(published, out, steps)
    result = _promised(spec, old, platforms.recorded(new), bits, out, prefix=steps)
    if result.promise == STUDY_LEVEL:
        result.deviations = prefix_deviations(published, out, cell_dirs(old, published.parent), steps)
    return result


def verdicts_with(profile: str | Path | Plan, replaced: dict[str, Path]) -> pd.DataFrame:
    """Rule 3: the profile's audit from its bundle, and again with the runs of ``replaced`` (run id ->
    retrained folder) in place of the published ones; one row per claim with both verdicts."""
    plan = load_plan(profile)
    _, table, _ = report.load_profile_runs(plan)
    runs = report.load_runs(plan.record() / "runs", set(table.summaries["run_id"]))
    before = stage1.audit(runs.summaries, runs.epochs)
    summaries, epochs = runs.summaries.set_index("run_id"), runs.epochs
    for run_id, folder in replaced.items():
        row, _, run_epochs = report._read_run(folder)
        row["run_id"] = run_id
        new_row = pd.Series(row).reindex(summaries.columns)
        summaries.loc[run_id] = new_row
        keys = epochs.loc[epochs["run_id"] == run_id].iloc[0][[c for c in epochs.columns if c not in run_epochs]]
        epochs = pd.concat([epochs[epochs["run_id"] != run_id], run_epochs.assign(**keys.to_dict())], ignore_index=True)
    after = stage1.audit(summaries.reset_index(), epochs)
    return pd.DataFrame({"claim": before["claim"], "published": before["verdict"], "retrained": after["verdict"]})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.orchestration.verify", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--runs", type=int, default=2, help="how many published runs to re-run (--draw cheapest)")
    parser.add_argument(
        "--draw",
        choices=("cheapest", "sample"),
        default="cheapest",
        help="cheapest: the runs with the fewest steps; sample: one run of each experiment, drawn reproducibly",
    )
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed (--draw sample)")
    parser.add_argument("--max-steps", type=int, default=None, help="--draw sample: only runs this short")
    parser.add_argument(
        "--only-short",
        action="store_true",
        help="--draw sample: leave out (and name) experiments with no run of at most --max-steps steps",
    )
    parser.add_argument(
        "--prefix-long",
        action="store_true",
        help=f"--draw sample: an experiment with no run of at most --max-steps steps is checked on the first "
        f"{PREFIX_STEPS} steps of one of its runs, drawn like the rest",
    )
    return parser


def _draw(args) -> tuple[list, set[str]]:
    """The runs ``args`` asks for, and the ids of those to check by their first steps only."""
    if args.draw == "cheapest":
        return cheapest_runs(args.profile, args.runs), set()
    chosen = sample_runs(args.profile, args.seed, args.max_steps, args.only_short, args.prefix_long)
    planned = _published(args.profile)[1]
    long = {s.run_id for s in chosen if args.max_steps and planned[s.run_id] > args.max_steps}
    if args.only_short:
        left_out = skipped_experiments(args.profile, chosen)
        if left_out:
            print(f"not sampled (no run of at most {args.max_steps} steps): {', '.join(left_out)}")
    return chosen, long if args.prefix_long else set()


def _conclude(results: list[Verification], prefixed: set[str], verdicts: pd.DataFrame) -> int:
    """Print what was checked and found; 0 where everything held."""
    changed = verdicts[verdicts["published"] != verdicts["retrained"]]
    bits = [v for v in results if v.promise == BITS]
    level = [v for v in results if v.promise == STUDY_LEVEL]
    print(
        f"bit for bit: {sum(v.ok for v in bits)} of {len(bits)} identical; "
        f"study level: {sum(v.ok for v in level)} of {len(level)} within the study's tolerance; "
        f"verdicts: {len(verdicts) - len(changed)} of {len(verdicts)} unchanged with the "
        f"{sum(not v.prefix for v in results)} whole retrained runs in place"
        + (f"; {len(prefixed)} of the runs were checked on their first {PREFIX_STEPS} steps" if prefixed else "")
    )
    for row in changed.itertuples():
        print(f"  claim {row.claim}: {row.published} -> {row.retrained}")
    ok = all(v.ok for v in results) and changed.empty
    print("REPRODUCED" if ok else "NOT REPRODUCED", "at the level this machine can promise")
    return 0 if ok else 1


@contextlib.contextmanager
def _kernels_closed():
    try:
        yield
    finally:
        kernels.close_all()


def _edited_copies(profile: str | Path | Plan, chosen) -> list[str]:
    """The bundle files of the ``chosen`` runs that differ from git's committed copy (``report.bundle_edits``);
    a note of edits elsewhere in the bundle goes to standard error."""
    plan = load_plan(profile)
    name = plan.name
    edits = report.bundle_edits(plan.bundle)
    drawn = {spec.run_id for spec in chosen}
    mine = [e for e in edits if len(Path(e).parts) > 3 and Path(e).parts[3] in drawn]
    if len(edits) > len(mine):
        print(
            f"note: {len(edits) - len(mine)} other file(s) of results/{name}/ differ from git's copy", file=sys.stderr
        )
    return mine


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = args.profile = load_plan(args.profile)  # read once: every step below receives the plan
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not plan.publishes:
        print(f"error: profile {plan.argument} publishes no bundle (publish: true)", file=sys.stderr)
        return 2
    name = plan.name
    chosen, prefixed = _draw(args)
    if not chosen:
        print(f"error: results/{name}/ holds no finished run to verify", file=sys.stderr)
        return 2
    edited = _edited_copies(plan, chosen)
    if edited:
        print(
            f"error: the published copies of {len(edited)} drawn run(s) differ from the committed ones "
            f"({', '.join(edited[:3])}{' ...' if len(edited) > 3 else ''}): a check against them would check the "
            f"edit; restore them (git checkout -- results/{name}) and run again",
            file=sys.stderr,
        )
        return 2
    here = platforms.describe(platforms.current())
    print(f"this machine: {here}; retraining {len(chosen)} published run(s) of {name}")
    results = []
    with tempfile.TemporaryDirectory() as scratch, _kernels_closed():
        for i, spec in enumerate(chosen, 1):
            part = f"its first {PREFIX_STEPS} steps" if spec.run_id in prefixed else "whole"
            print(f"[{i}/{len(chosen)}] {spec.run_id} ({part}) ...", flush=True)
            published = plan.bundle / "runs" / spec.run_id
            check = verify_prefix if spec.run_id in prefixed else verify_run
            results.append(check(spec, published, Path(scratch)))
            print("\n".join(results[-1].lines()), flush=True)
        verdicts = verdicts_with(plan, {v.run_id: v.out_dir for v in results if not v.prefix})
    return _conclude(results, prefixed, verdicts)


if __name__ == "__main__":
    sys.exit(main())
