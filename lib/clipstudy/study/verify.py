"""Are the published numbers reproducible? Re-run runs drawn from a profile's bundle, compare exactly.

    python -m clipstudy.study.verify --profile paper [--runs 2]

Each drawn run is executed again (its notebook, in a fresh kernel, so its thread counts are its own)
into a temporary folder and compared with its published copy: every summary field but timings and
versions, every evaluation row, and every step the bundle kept (``study.compare``). On the machine
kind that made the bundle the numbers must be identical; on another CPU or library build they may
differ in the last bits (see the README), which this check reports rather than hides.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

from clipstudy import paths
from clipstudy.study import bundle, compare, notebooks, probes, runfiles
from clipstudy.study.profiles import load_profile, publishes


def cheapest_runs(profile: str | Path, count: int) -> list:
    """The ``count`` published runs of ``profile`` with the fewest planned steps (ties by id): the
    cheapest to re-run, drawn the same way every time."""
    name, specs = load_profile(profile)
    published = bundle.bundle_dir(name) / "runs"
    resolved = [probes.resolve(s, bundle.bundle_dir(name) / "probes") for s in specs]
    done = [s for s in resolved if s is not None and runfiles.is_finished(published / s.run_id)]
    steps = {s.run_id: runfiles.load_summary(published / s.run_id)["steps_planned"] for s in done}
    return sorted(done, key=lambda s: (steps[s.run_id], s.run_id))[:count]


def verify_run(spec, published: Path, scratch: Path) -> list[str]:
    """Re-run ``spec`` into ``scratch`` and list every difference from its published copy."""
    out = scratch / spec.run_id
    out.mkdir(parents=True)
    notebooks.execute(paths.notebook(spec.notebook), out / "notebook.ipynb",
                      {"config": spec.params, "output_dir": str(out)})
    old = runfiles.load_summary(published)
    new = {k: v for k, v in runfiles.load_summary(out).items() if k in old}  # the numbers it published
    problems = compare.summary_differences(old, new)
    problems += compare.table_differences(pd.read_parquet(published / runfiles.EPOCHS),
                                          pd.read_parquet(out / runfiles.EPOCHS), runfiles.EPOCHS)
    kept = pd.read_parquet(published / runfiles.STEPS)
    rerun = pd.read_parquet(out / runfiles.STEPS)
    problems += compare.table_differences(kept, rerun[rerun["step"].isin(kept["step"])].reset_index(drop=True),
                                          runfiles.STEPS)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.study.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--runs", type=int, default=2, help="how many published runs to re-run (the cheapest)")
    args = parser.parse_args(argv)
    if not publishes(args.profile):
        print(f"error: profile {args.profile} publishes no bundle (publish: true)", file=sys.stderr)
        return 2
    name, _ = load_profile(args.profile)
    chosen = cheapest_runs(args.profile, args.runs)
    if not chosen:
        print(f"error: results/{name}/ holds no finished run to verify", file=sys.stderr)
        return 2
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        for spec in chosen:
            problems = verify_run(spec, bundle.bundle_dir(name) / "runs" / spec.run_id, Path(scratch))
            failures += bool(problems)
            print(f"{'same numbers' if not problems else 'DIFFERENT'}: {spec.run_id}")
            for p in problems:
                print(f"  {p}")
    print(f"{len(chosen) - failures} of {len(chosen)} re-runs reproduced the published numbers exactly")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
