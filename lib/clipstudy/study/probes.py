"""Thresholds read from data: the probe of a run (a short unclipped run of its model, optimizer and rate
from a seed of its own), one per (task, settings, optimizer, rate), run before the runs that need it and kept as
``reports/<profile>/probes/<probe_id>.json``.

The probe trains the model from its own seed (not any compared run's) for a fixed number of steps on
training examples only, records the global gradient norm of every step and keeps no weights. A threshold
"from data" is a percentile of those norms, chosen before the compared runs start: the rule of
``clipping.probe_threshold``, which users run on their own Keras models (it stays in the core library,
which installs without the study's dependencies).

    python -m clipstudy.study.probes --config '{"task": "classifier", ...}' --out FILE.json

A run whose threshold is ``{probe_percentile: p}`` becomes, once its probe is there, the same run
with the number itself as its threshold (and so its own id), and ``threshold_rule`` saying where the
number came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from clipstudy import clipping, tasks
from clipstudy.clipping.probe import DEFAULT_STEPS, record_norms, threshold_from_norms
from clipstudy.fileio import write_json_atomic
from clipstudy.lazy_tf import tf
from clipstudy.study import runfiles
from clipstudy.study.profiles import RunSpec
from clipstudy.training import set_threads
from clipstudy.training.config import FROM_DATA, RunConfig
from clipstudy.training.loop import batch_orders, run_splits, set_determinism
from clipstudy.training.optimizers import make_optimizer
from clipstudy.training.step import make_train_step

PROBE_SEED = 7_777
PROBE_STEPS = DEFAULT_STEPS


def probe_config(config: RunConfig, steps: int = PROBE_STEPS) -> RunConfig:
    """The unclipped run a probe for ``config`` trains: same task, data, model, optimizer and rate."""
    return config.replace(
        method="none", clip_params={}, seed=PROBE_SEED, spikes=None, threshold_rule=None, epochs=1, eval_every=None
    )


def probe_norms(config: RunConfig, task, data, steps: int = PROBE_STEPS) -> np.ndarray:
    """Global gradient norms of up to ``steps`` unclipped optimizer steps of ``probe_config(config)``
    (fewer if a norm is not finite: the probe stops there)."""
    probe = probe_config(config, steps)
    set_determinism(probe.seed)
    net = task.build_model()
    train_split, _, _ = run_splits(probe, data)
    x, y = task.prepare(train_split)
    step = make_train_step(
        net,
        task,
        clipping.get("none"),
        make_optimizer(probe.optimizer, probe.learning_rate),
        tf.constant(x),
        tf.constant(y),
    )
    # the training loop's order, seeded by the probe's seed
    batches = (b for epoch in batch_orders(probe.seed, len(train_split), probe.batch_size) for b in epoch)
    return record_norms(lambda batch: step(batch, 1.0, False).numpy()[1], batches, steps)


def threshold_at(norms, percentile: float) -> float:
    """The ``percentile``-th percentile (linear, as ``numpy.percentile``) of the probe's norms: the
    rule of ``clipping.probe_threshold``, which users run on their own models."""
    return threshold_from_norms(norms, percentile)


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
    write_json_atomic(
        {
            "probe": probe_config(config).to_params(),
            "steps": len(norms),
            "planned_steps": PROBE_STEPS,
            "percentiles": {str(p): float(np.percentile(norms, p)) for p in PERCENTILES} if len(norms) else {},
            "norms": norms.tolist(),
            "norms_sha256": norms_digest(norms.tolist()),
        },
        out,
    )
    return out


class ProbeError(ValueError):
    """A probe file cannot be read or does not match the digest it carries; the message names the file."""


def norms_digest(norms: list) -> str:
    """sha256 of a probe's norms as JSON: what a probe file carries so that an edited number is caught."""
    return hashlib.sha256(json.dumps([float(v) for v in norms]).encode()).hexdigest()


def read_probe(path: Path) -> dict:
    """A probe file's record, checked: it parses, holds a list of norms, and they match its digest (probes
    made before the digest existed are vouched for by the results bundle's index instead)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ProbeError(
            f"probe file {path} is unreadable ({type(exc).__name__}: {exc}); delete it and run the "
            "sweep again to redo the probe"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("norms"), list):
        raise ProbeError(f"probe file {path} holds no list of norms; delete it and run the sweep again")
    if "norms_sha256" in record and norms_digest(record["norms"]) != record["norms_sha256"]:
        raise ProbeError(
            f"probe file {path}: its norms do not match the sha256 it carries (edited or damaged); "
            "delete it and run the sweep again"
        )
    return record


def resolve(spec: RunSpec, probes_dir: Path) -> RunSpec | None:
    """``spec`` with its threshold read from its probe (``None`` while the probe is missing)."""
    p = spec.config.threshold_from_data
    if p is None:
        return spec
    path = probe_file(probes_dir, spec.config)
    if not path.is_file():
        return None
    record = read_probe(path)
    threshold = threshold_at(record["norms"], p)
    config = spec.config.replace(
        clip_params={**spec.config.clip_params, "threshold": threshold},
        threshold_rule=f"{FROM_DATA} {p:g} of {path.stem}",
    )
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
