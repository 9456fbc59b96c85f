"""A profile's runs as tidy tables and the report's selections: what ``notebooks/90_report.ipynb`` shows. The
build that executes and exports it (``make report``) is ``clipstudy.orchestration.build_report``.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipstudy import paths, tasks
from clipstudy.analysis import claims, contrasts, outcomes, plots, stage1, stage2, stage3_answers, stats
from clipstudy.data import boxes as box_formats
from clipstudy.data.canvases import split_canvases
from clipstudy.data.split import subset_indices
from clipstudy.study import bundle, probes, runfiles
from clipstudy.study.plan import Plan, load_plan
from clipstudy.study.profiles import RunSpec
from clipstudy.training.config import RunConfig

PARAM_COLUMNS = ["task", "method", "optimizer", "learning_rate", "seed", "dataset"]
#: A run's condition (``settings_key``) is what every run of its experiment shares (``RunConfig.settings``) and
#: its task (which the key has kept since the first report: the published report's keys do not change); only
#: runs of the same condition are compared.
#: Q3's robustness check on one CPU, published in the bundle (``orchestration.robustness``).
Q3_ONE_CPU_TABLE = "robustness/q3_one_cpu.csv"


#: The report's cost figure marks these targets (``make bench``).
OVERHEAD_TARGETS = {"global_norm": 1.03, "agc": 1.10, "autoclip": 1.10, "zclip": 1.10}


@dataclass
class ProfileRuns:
    """Every run of a profile: one row per run, and the per-step and per-epoch rows of all runs."""

    summaries: pd.DataFrame
    steps: pd.DataFrame
    epochs: pd.DataFrame
    failed: pd.DataFrame


def _summary_row(run_dir: Path, summary: dict) -> dict:
    """A run's row: its ``RunConfig`` rebuilt from the parameters it recorded (a parameter that is not one is
    refused), the condition it shares with the other runs of its experiment (``settings_key``), its label, and
    every number of its summary."""
    config = RunConfig.from_params(summary["params"])
    params = config.to_params()
    clip_params = params.get("clip_params") or {}
    if config.threshold_rule:
        # A threshold read from data differs per cell: group the runs by the rule that chose it.
        percentile = config.threshold_rule.split()[1]
        clip_params = {**clip_params, "threshold": f"p{percentile} of probe"}
    row = {
        "run_id": run_dir.name,
        **{k: getattr(config, k) for k in PARAM_COLUMNS},
        "settings_key": json.dumps({"task": config.task, **config.settings()}, sort_keys=True),
        "spiked": bool(config.spikes),
        "clip_params": runfiles.format_params(clip_params),
        "label": contrasts.run_label(config.method, runfiles.format_params(clip_params), config.warmup_steps),
    }
    row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list)) and k not in row})
    versions = summary.get("versions") or {}
    row["libraries"] = ", ".join(f"{k} {versions[k]}" for k in LIBRARIES if k in versions)
    row["cpu"] = f"{versions.get('cpu', '?')} ({versions.get('system', '?')} {versions.get('machine', '?')})"
    row["platform"] = stage3_answers.platform_key(summary.get("platform"))
    return row


#: The library versions the provenance box names (every run records them in its summary).
LIBRARIES = ("python", "tensorflow", "keras", "numpy", "clipstudy")


class DamagedRun(RuntimeError):
    """A finished-looking run whose files cannot be read; the message names the run and the file."""


def _read_run(run_dir: Path):
    """A run's summary row and its step and epoch tables, or ``DamagedRun`` naming the file at fault."""
    current = run_dir / runfiles.SUMMARY
    try:
        row = _summary_row(run_dir, runfiles.load_summary(run_dir))
        current = run_dir / runfiles.STEPS
        steps = pd.read_parquet(current)
        current = run_dir / runfiles.EPOCHS
        return row, steps, pd.read_parquet(current)
    except Exception as exc:
        raise DamagedRun(
            f"run {run_dir.name}: {current} cannot be read ({type(exc).__name__}: {exc}); "
            f"delete {run_dir} and run the sweep again to redo it"
        ) from exc


def load_runs(root: str | Path, run_ids=None) -> ProfileRuns:
    """Read the finished runs under ``root`` (``reports/<profile>/runs``) into tidy DataFrames.

    ``run_ids`` limits it to those runs (the profile's current plan), so runs left over from an
    earlier version of a profile do not leak into its report.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} does not exist: run the sweep first (make reproduce, or "
            f"python -m clipstudy.study.sweep --profile {root.parent.name})"
        )
    rows, steps, epochs, failed = [], [], [], []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if run_ids is not None and run_dir.name not in run_ids:
            continue
        problems = runfiles.manifest_problems(run_dir)  # hashes the run's files once
        if problems and (run_dir / runfiles.MANIFEST).exists():
            raise DamagedRun(
                f"run {run_dir.name} is damaged: {'; '.join(problems)}; "
                "run the sweep again: it sets the damaged run aside and redoes it"
            )
        if problems:
            if (run_dir / runfiles.ERROR).is_file():
                err = json.loads((run_dir / runfiles.ERROR).read_text())
                failed.append({"run_id": run_dir.name, "error": err.get("error")})
            continue
        row, run_steps, run_epochs = _read_run(run_dir)
        rows.append(row)
        steps.append(run_steps)
        epochs.append(run_epochs)
    if not rows:
        raise FileNotFoundError(f"no finished runs under {root}: run the sweep first")
    keys = pd.DataFrame({k: pd.Series([r[k] for r in rows], dtype=_key_dtype([r[k] for r in rows])) for k in RUN_KEYS})
    summaries = pd.DataFrame(rows)
    for col in summaries.columns:
        if summaries[col].dtype == object and summaries[col].map(lambda v: v is None or isinstance(v, float)).all():
            summaries[col] = summaries[col].astype(float)  # JSON null back to NaN
    return ProfileRuns(
        summaries,
        _with_run_keys(steps, keys),
        _with_run_keys(epochs, keys),
        pd.DataFrame(failed, columns=["run_id", "error"]),
    )


#: The columns of its run that every step and epoch row carries.
RUN_KEYS = ("run_id", *PARAM_COLUMNS, "clip_params", "label", "settings_key", "spiked")


def _key_dtype(values: list):
    """A key column holding None stays ``object`` (None, not NaN, where a run has no such setting); else inferred."""
    return object if any(v is None for v in values) else None


def _with_run_keys(tables: list[pd.DataFrame], keys: pd.DataFrame) -> pd.DataFrame:
    """The runs' tables one under the other, each row with its run's ``RUN_KEYS`` (row ``i`` of ``keys`` is the
    run of ``tables[i]``): the key columns are built once for the whole table, not once per run."""
    table = pd.concat(tables, ignore_index=True)
    table = table.drop(columns=[k for k in RUN_KEYS if k in table])  # the run's own value wins, as assign's did
    which = np.repeat(np.arange(len(tables)), [len(t) for t in tables])
    repeated = keys.iloc[which].reset_index(drop=True)
    order = dict.fromkeys(c for t in tables for c in [*t.columns, *RUN_KEYS])  # each run's columns, then its keys
    return pd.concat([table, repeated], axis=1)[list(order)]


def load_profile_runs(
    profile: str | Path | Plan, reports: str | Path | None = None
) -> tuple[str, ProfileRuns, list[str]]:
    """The profile's name, the runs of its current plan, and the ids of planned runs not finished yet."""
    plan = load_plan(profile)
    table, missing, _ = _load_runs(plan, reports)
    return plan.name, table, missing


def _load_runs(plan: Plan, reports) -> tuple[ProfileRuns, list[str], list[RunSpec | None]]:
    """The plan's finished runs, the planned runs not finished yet (and why), and each planned run with its
    threshold from data resolved (None: its probe has not run). A published profile is reported from its bundle
    alone, checked against its index first."""
    probes_dir = plan.record(reports) / "probes"
    resolved = plan.resolved(probes_dir)
    if plan.publishes:
        _check_bundle(plan.bundle, plan.specs, resolved, probes_dir)
    planned = {s.run_id for s in resolved if s is not None}
    waiting = sorted(f"{s.run_id} (its threshold probe has not run)" for s, r in zip(plan.specs, resolved) if r is None)
    table = load_runs(plan.record(reports) / "runs", planned)
    missing = sorted(planned - set(table.summaries["run_id"]) - set(table.failed["run_id"])) + waiting
    return table, missing, resolved


def _check_bundle(bundle_root: Path, specs, resolved, probes_dir: Path) -> None:
    """Every probe the plan reads and every run published so far matches the bundle's index, or
    ``DamagedRun`` names each one that does not."""
    try:
        index = bundle.read_index(bundle_root)
    except ValueError as exc:
        raise DamagedRun(str(exc)) from None
    problems = []
    for name in sorted({probes.probe_file(probes_dir, s.config).name for s in specs if s.config.threshold_from_data}):
        if (probes_dir / name).exists():
            problems += [f"probe {name}: {p}" for p in bundle.probe_problems(bundle_root, name, index)]
    for s in [r for r in resolved if r is not None] if not problems else []:
        if (bundle_root / "runs" / s.run_id).exists():
            problems += [f"run {s.run_id}: {p}" for p in bundle.run_problems(bundle_root, s.run_id, index)]
    if problems:
        raise DamagedRun(
            f"the results bundle {bundle_root} does not match its {bundle.INDEX}: "
            + "; ".join(problems)
            + ". Run the sweep again: it sets each damaged run aside (never deleting it) and publishes it again "
            "from your local copy, or trains it again"
        )


@dataclass
class ProfileReport:
    """What the report shows: the profile's runs and the selections each section reads.

    Runs with injected bad batches (``spiked``) have their own section; every other section, and
    the claims audit, reads the ``compared`` runs.
    """

    name: str
    out: Path
    table: ProfileRuns
    missing: list[str]
    runs_root: Path
    plan: Plan | None = None  # what the profile plans (None for a report put together by hand)
    resolved: list[RunSpec | None] = field(default_factory=list)  # the plan's runs, thresholds from data read

    @classmethod
    def load(cls, profile: str | Path | Plan, reports: str | Path | None = None) -> ProfileReport:
        plan = load_plan(profile)
        table, missing, resolved = _load_runs(plan, reports)
        return cls(plan.name, plan.local(reports), table, missing, plan.record(reports) / "runs", plan, resolved)

    figures_dir: Path | None = None  # where figures go; default <out>/figures

    @property
    def bench_files(self) -> list[Path]:
        """Where the cost figure's measurement is read: the one published beside the profile's bundle, then
        this machine's ``reports/bench.json``."""
        published = [self.plan.bundle / "bench.json"] if self.plan and self.plan.publishes else []
        return published + [self.out.parent / "bench.json"]

    @property
    def figures(self) -> Path:
        return self.figures_dir or self.out / "figures"

    def problems(self) -> list[str]:
        """Every planned run that did not finish, and why."""
        return [f"{run}: not run yet" for run in self.missing] + [
            f"{r.run_id}: failed ({r.error})" for r in self.table.failed.itertuples()
        ]

    def completeness(self) -> str:
        """One line saying whether the verdicts rest on the whole plan."""
        problems = self.problems()
        if not problems:
            return f"complete: all {len(self.table.summaries)} planned runs finished"
        return (
            f"INCOMPLETE: {len(problems)} of {len(problems) + len(self.table.summaries)} planned runs did not "
            "finish, verdicts rest on the rest: " + "; ".join(problems)
        )

    def _unspiked(self, frame: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
        keep = ~frame["spiked"] & ((frame["task"] == task) if task else True)
        return frame[keep]

    @property
    def compared(self) -> pd.DataFrame:
        return self._unspiked(self.table.summaries)

    def summaries(self, task: str) -> pd.DataFrame:
        return self._unspiked(self.table.summaries, task)

    def steps(self, task: str | None = None) -> pd.DataFrame:
        return self._unspiked(self.table.steps, task)

    def epochs(self, task: str | None = None) -> pd.DataFrame:
        return self._unspiked(self.table.epochs, task)

    @property
    def spiked(self) -> pd.DataFrame:
        return self.table.summaries[self.table.summaries["spiked"]]

    def answers(self) -> list:
        """The confirmatory questions' answers over the profile's runs: stage 2's (``stage2.confirmatory_answers``),
        then stage 3's (``stage3_answers.answers``)."""
        return [*stage2.confirmatory_answers(self.evidence()), *self.stage3_answers()]

    def stage3_answers(self) -> list:
        return stage3_answers.answers(self.evidence(), self.table.epochs)

    def q3_one_cpu(self) -> pd.DataFrame | None:
        """Q3's robustness check (``orchestration.robustness``), as published beside the bundle's runs; None when the
        profile has none."""
        path = self.runs_root.parent / Q3_ONE_CPU_TABLE
        return pd.read_csv(path) if self.plan is not None and self.plan.publishes and path.is_file() else None

    def evidence(self) -> pd.DataFrame:
        """Every run's summary with what the claims read (``stage1.gather_evidence``: ``failed``, ``auc``)."""
        return stage1.gather_evidence(self.table.summaries, self.table.epochs).summaries

    def bundle_edits(self) -> list[str]:
        """For a published profile read from its bundle, the bundle's files edited since their commit."""
        bundle_root = self.runs_root.parent
        return bundle_edits(bundle_root) if bundle_root.parent.resolve() == paths.results_dir().resolve() else []

    def audit(self) -> pd.DataFrame:
        """The claims audit over every run of the profile (the spike runs decide claim 3a): one row per claim."""
        return claims.study_audit(
            self.table.summaries,
            self.table.epochs,
            overhead_ratios(self.bench_files),
            self.table.steps,
            later=self.stage3_answers(),
        )


#: Columns that describe what was run and how many times, never what it gave: the same on every CPU.
DESIGN_COLUMNS = (
    "claim",
    "kind",
    "n",
    "task",
    "metric",
    "optimizer",
    "learning_rate",
    "epochs",
    "method",
    "clip_params",
    "warmup_steps",
    "label",
    "runs",
    "pairs",
    "rates_tried",
    "threshold",
    "steps",
)


def design_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns of a report table that do not depend on the CPU the runs were made on (what nbval
    compares on any machine); the numbers they produced stay in the page."""
    frame = frame.reset_index() if frame.index.name or any(frame.index.names) else frame
    return frame[[c for c in frame.columns if c in DESIGN_COLUMNS]]


def method_table(summaries: pd.DataFrame, metric: str = "final_test_accuracy") -> pd.DataFrame:
    """Per optimizer, learning rate, training length (epochs) and method setting: the runs, how many diverged,
    stalled and learned (``outcomes``), the median and range of ``metric`` over the runs that did not diverge (a
    diverged run's metric is never averaged), and the mean share of steps clipped. Runs of different lengths, or
    with and without a learning-rate warm-up (a ``warmup_steps`` column where any run has one), are never put
    together."""
    s = outcomes.add_outcomes(summaries)
    keys = ["optimizer", "learning_rate", *(["epochs"] if "epochs" in s else []), "method", "clip_params"]
    warmup = contrasts.warmup_steps(s)
    if warmup.any():
        s, keys = s.assign(warmup_steps=warmup), [*keys, "warmup_steps"]
    name = metric.removeprefix("final_")
    rows = []
    for key, group in s.groupby(keys, sort=True):
        kept = group.loc[group["outcome"] != "diverged", metric].astype(float)
        row = dict(zip(keys, key, strict=True))
        row["runs"] = len(group)
        row.update({kind: int((group["outcome"] == kind).sum()) for kind in outcomes.KINDS})
        row[f"{name} median"] = float(kept.median()) if len(kept) else float("nan")
        row[f"{name} min"] = float(kept.min()) if len(kept) else float("nan")
        row[f"{name} max"] = float(kept.max()) if len(kept) else float("nan")
        row["clip_fraction"] = float(group["clip_fraction"].mean()) if "clip_fraction" in group else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {m: i for i, m in enumerate(plots.method_order(table["method"]))}
    return table.sort_values(keys, key=lambda c: c.map(order) if c.name == "method" else c, ignore_index=True)


def clip_fraction_caption(summaries: pd.DataFrame) -> str:
    """The clip-fraction figure's caption, its numbers computed from the frame the figure draws: each method
    setting's mean share of clipped steps (units), over every optimizer and rate, to two significant digits."""
    means = summaries.groupby("label")["clip_fraction"].mean()
    order = {m: i for i, m in enumerate(plots.method_order(summaries["method"]))}
    first = summaries.drop_duplicates("label").set_index("label")["method"]
    ranked = sorted(means.index, key=lambda label: (order.get(first[label], 99), label))
    shares = "; ".join(f"{label} {means[label]:.2g}" for label in ranked)
    return (
        "Mean share of each step that was clipped (of elements, tensors, units or whole steps, as the method "
        f"clips), per method setting and optimizer, over all learning rates. Over everything shown: {shares}. "
        "A method near 0 never engages at these settings."
    )


def tasks_without_a_section(rep: ProfileReport, sectioned=("classifier", "detector")) -> list[str]:
    """The tasks of the profile's runs that the report's claim sections do not cover (the recurrent task, any
    task added since), in the order of ``clipstudy.tasks``."""
    present = set(rep.table.summaries["task"])
    return [t for t in tasks.NAMES if t in present and t not in sectioned]


def clip_share_at(steps: pd.DataFrame, thresholds) -> pd.DataFrame:
    """Share of steps whose global norm exceeds each threshold (what global-norm clipping there would clip)."""
    norms = steps["norm_before"][pd.notna(steps["norm_before"])]
    return pd.DataFrame(
        {
            "threshold": list(thresholds),
            "share_of_steps_clipped": [float((norms > t).mean()) for t in thresholds],
            "steps": len(norms),
        }
    )


def sample_predictions(run_dir: str | Path, count: int = 8):
    """Canvases of a detector run's test split with its ground truth and detections, for drawing."""
    run_dir = Path(run_dir)
    params = runfiles.load_summary(run_dir)["params"]
    canvases, _, _ = split_canvases(params["dataset"], "test")
    idx = subset_indices(len(canvases), params.get("test_subset"), params["seed"], "test_subset")[:count]
    gt = json.loads((run_dir / "ground_truth.json").read_text())
    dets = json.loads((run_dir / "detections.json").read_text())
    out = {"canvases": canvases[idx], "gt_boxes": [], "gt_classes": [], "boxes": [], "scores": [], "classes": []}
    for image_id in range(1, len(idx) + 1):
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        found = [d for d in dets if d["image_id"] == image_id]
        out["gt_boxes"].append(box_formats.coco_to_xyxy([a["bbox"] for a in anns]))
        out["gt_classes"].append(np.array([a["category_id"] - 1 for a in anns]))
        out["boxes"].append(box_formats.coco_to_xyxy([d["bbox"] for d in found]))
        out["scores"].append(np.array([d["score"] for d in found]))
        out["classes"].append(np.array([d["category_id"] - 1 for d in found]))
    return out


def spike_steps(run_dir: str | Path) -> list[int]:
    """The steps at which a run's bad batches were injected."""
    return list(runfiles.load_summary(run_dir)["params"]["spikes"]["steps"])


def overhead_ratios(bench_files) -> pd.DataFrame:
    """Per-step time of each method / ``none``, from the first of ``bench_files`` that holds ``make bench``'s
    interleaved measurement, with its machine and date in ``source``. Never from the sweep's own step times:
    runs that share a machine with other runs time the machine, not the method. Empty when there is none."""
    for path in bench_files:
        path = Path(path)
        if not path.is_file():
            continue
        measured = json.loads(path.read_text())
        overhead = measured.get("overhead") or {}
        if overhead:
            cpu = (measured.get("platform") or {}).get("cpu_model_name") or "unknown CPU"
            source = f"make bench, {cpu}, {measured.get('date', 'undated')}"
            return pd.DataFrame(
                [
                    {
                        "method": m,
                        "ratio": o["ratio"],
                        "low": min(o.get("round_ratios") or [math.nan]),
                        "high": max(o.get("round_ratios") or [math.nan]),
                        "rounds": len(o.get("round_ratios") or []),
                        "source": source,
                    }
                    for m, o in overhead.items()
                ]
            )
    return pd.DataFrame(columns=["method", "ratio", "low", "high", "rounds", "source"])


def spike_table(table: ProfileRuns, runs_root: str | Path) -> pd.DataFrame:
    """Per spiked run: its condition and how it met the injected bad batches (``stats.spike_recovery``)."""
    spiked = table.summaries[table.summaries["spiked"]]
    rows = []
    for run in spiked.itertuples():
        steps = table.steps[table.steps["run_id"] == run.run_id]
        recovery = stats.spike_recovery(steps, spike_steps(Path(runs_root) / run.run_id))
        rows.append(
            {
                "task": run.task,
                "optimizer": run.optimizer,
                "learning_rate": run.learning_rate,
                "label": run.label,
                "method": run.method,
                "seed": run.seed,
                "diverged": run.diverged,
                **recovery,
            }
        )
    return pd.DataFrame(rows)


def provenance(rep: ProfileReport) -> dict[str, str]:
    """What the report rests on: profile, runs by experiment, failures, dates, commit, libraries,
    machine and compute, for the report's provenance box."""
    specs = rep.plan.specs
    finished = set(rep.table.summaries["run_id"])
    by_experiment = {}
    # a threshold from data is part of the run's id: the planned spec names the run once its probe has run
    for spec, resolved in zip(specs, rep.resolved):
        done, planned = by_experiment.get(spec.experiment, (0, 0))
        by_experiment[spec.experiment] = (done + (resolved is not None and resolved.run_id in finished), planned + 1)
    s = rep.table.summaries
    failed = s[s["failure"].notna()] if "failure" in s else s.iloc[:0]
    hours = float(s["wall_time_s"].sum()) / 3600 if "wall_time_s" in s else math.nan
    return {
        "profile": f"{rep.name}: {len(specs)} planned runs, {len(finished)} finished, "
        f"{len(rep.table.failed)} errored, {len(rep.missing)} not run",
        "runs by experiment": "; ".join(f"{e or 'runs'} {d}/{p}" for e, (d, p) in by_experiment.items()),
        "failed runs (kept in every comparison)": (
            f"{len(failed)}: "
            + ", ".join(f"{r.run_id} ({r.failure})" for r in failed.head(6).itertuples())
            + (" …" if len(failed) > 6 else "")
            if len(failed)
            else "none"
        ),
        "runs dated": _run_dates(rep),
        "report built": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC from commit {_git_commit()}",
        "libraries": "; ".join(sorted(set(s["libraries"]))) if "libraries" in s else "?",
        "cpus": "; ".join(sorted(set(s["cpu"])))
        + (f", {sorted(set(s['threads']))} thread(s) per run" if "threads" in s else ""),
        "compute": f"{hours:.2f} h of training wall time over {len(s)} runs",
    }


def _git(*args) -> str:
    done = subprocess.run(["git", "-C", str(paths.REPO), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def bundle_edits(bundle_root: Path) -> list[str]:
    """The records of a published bundle that differ from the committed tree (modified or deleted; runs added since
    the last commit are new, not edits). A summary, its manifest and the index edited together pass every digest
    check, but not this one: git's copy is what was published. The published report (``report/``) is left out:
    every report build rewrites it from the records. Empty outside a git checkout."""
    if not _git("rev-parse", "--is-inside-work-tree"):
        return []
    rebuilt = f":(exclude){Path(bundle_root) / 'report'}"
    return [line for line in _git("diff", "--name-only", "HEAD", "--", str(bundle_root), rebuilt).splitlines() if line]


def _git_commit() -> str:
    commit = _git("rev-parse", "--short=10", "HEAD") or "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else "")


def _run_dates(rep: ProfileReport) -> str:
    """When the runs were made: the bundle's commit dates for a published profile, else file times."""
    if rep.plan is not None and rep.plan.publishes:
        dates = _git("log", "--format=%cs", "--", str(rep.runs_root)).split()
        if dates:
            return f"published in commits from {dates[-1]} to {dates[0]}"
    times = [
        (rep.runs_root / r / runfiles.MANIFEST).stat().st_mtime
        for r in rep.table.summaries["run_id"]
        if (rep.runs_root / r / runfiles.MANIFEST).is_file()
    ]
    if not times:
        return "unknown"
    first, last = (pd.Timestamp(t, unit="s", tz="UTC") for t in (min(times), max(times)))
    return f"finished between {first:%Y-%m-%d %H:%M} and {last:%Y-%m-%d %H:%M} UTC"
