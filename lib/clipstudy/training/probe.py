"""A threshold from data: a short unclipped probe of a run's model, optimizer and rate.

The probe trains the model from its own seed (not any compared run's) for a fixed number of steps
on training examples only, records the global gradient norm of every step and keeps no weights.
A threshold "from data" is a percentile of those norms, chosen before the compared runs start.
"""
from __future__ import annotations

import numpy as np

from clipstudy import clipping
from clipstudy._quiet import tf
from clipstudy.clipping.probe import DEFAULT_STEPS, record_norms, threshold_from_norms
from clipstudy.training.config import RunConfig
from clipstudy.training.loop import run_splits, set_determinism
from clipstudy.training.optimizers import make_optimizer
from clipstudy.training.step import make_train_step

PROBE_SEED = 7_777
PROBE_STEPS = DEFAULT_STEPS


def probe_config(config: RunConfig, steps: int = PROBE_STEPS) -> RunConfig:
    """The unclipped run a probe for ``config`` trains: same task, data, model, optimizer and rate."""
    return config.replace(method="none", clip_params={}, seed=PROBE_SEED, spikes=None, threshold_rule=None,
                          epochs=1, eval_every=None)


def probe_norms(config: RunConfig, task, data, steps: int = PROBE_STEPS) -> np.ndarray:
    """Global gradient norms of up to ``steps`` unclipped optimizer steps of ``probe_config(config)``
    (fewer if a norm is not finite: the probe stops there)."""
    probe = probe_config(config, steps)
    set_determinism(probe.seed)
    net = task.build_model()
    train_split, _, _ = run_splits(probe, data)
    x, y = task.prepare(train_split)
    step = make_train_step(net, task, clipping.get("none"), make_optimizer(probe.optimizer, probe.learning_rate),
                           tf.constant(x), tf.constant(y))
    shuffler = np.random.default_rng([probe.seed, 2])

    def batches():  # the training loop's order: one permutation per epoch, seeded by the probe's seed
        while True:
            order = shuffler.permutation(len(train_split)).astype(np.int32)
            for start in range(0, len(order), probe.batch_size):
                yield order[start:start + probe.batch_size]

    return record_norms(lambda batch: step(batch, 1.0, False).numpy()[1], batches(), steps)


def threshold_at(norms, percentile: float) -> float:
    """The ``percentile``-th percentile (linear, as ``numpy.percentile``) of the probe's norms: the
    rule of ``clipping.probe_threshold``, which users run on their own models."""
    return threshold_from_norms(norms, percentile)
