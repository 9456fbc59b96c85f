"""Probes for thresholds read from data: one per (task, settings, optimizer, rate), run before the
runs that need it, kept as ``reports/<profile>/probes/<probe_id>.json``.

    python -m clipstudy.study.probes --config '{"task": "classifier", ...}' --out FILE.json

A run whose threshold is ``{probe_percentile: p}`` becomes, once its probe is there, the same run
with the number itself as its threshold (and so its own id), and ``threshold_rule`` saying where the
number came from.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from clipstudy import tasks
from clipstudy.fileio import write_json_atomic
from clipstudy.study import runfiles
from clipstudy.study.profiles import RunSpec
from clipstudy.training import set_threads
from clipstudy.training.config import FROM_DATA, RunConfig
from clipstudy.training.probe import PROBE_STEPS, probe_config, probe_norms, threshold_at

PERCENTILES = (10, 25, 50, 75, 90, 99)


def probe_id(config: RunConfig) -> str:
    return "probe-" + runfiles.run_id(probe_config(config))


def probe_file(probes_dir: Path, config: RunConfig) -> Path:
    return Path(probes_dir) / f"{probe_id(config)}.json"


def run_probe(config: RunConfig, out: Path) -> Path:
    """Probe ``config``'s model, optimizer and rate; write the norms and their percentiles to ``out``."""
    set_threads(config.threads)
    task = tasks.for_config(config)
    norms = probe_norms(config, task, task.load_data())
    write_json_atomic({"probe": probe_config(config).to_params(), "steps": len(norms), "planned_steps": PROBE_STEPS,
                       "percentiles": {str(p): float(np.percentile(norms, p)) for p in PERCENTILES} if len(norms) else {},
                       "norms": norms.tolist()}, out)
    return out


def resolve(spec: RunSpec, probes_dir: Path) -> RunSpec | None:
    """``spec`` with its threshold read from its probe (``None`` while the probe is missing)."""
    p = spec.config.threshold_from_data
    if p is None:
        return spec
    path = probe_file(probes_dir, spec.config)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    threshold = threshold_at(record["norms"], p)
    config = spec.config.replace(clip_params={**spec.config.clip_params, "threshold": threshold},
                                 threshold_rule=f"{FROM_DATA} {p:g} of {path.stem}")
    return RunSpec(runfiles.run_id(config), spec.notebook, config, spec.experiment)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.study.probes", description="Run one threshold probe.")
    parser.add_argument("--config", required=True, help="the run's parameters as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run_probe(RunConfig.from_params(json.loads(args.config)), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
