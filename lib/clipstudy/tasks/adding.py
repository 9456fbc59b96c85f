"""The recurrent task, the study's positive control: the adding problem learned by a vanilla tanh RNN.

Gradient clipping was introduced for recurrent networks (Pascanu, Mikolov & Bengio 2013, "On the difficulty of
training recurrent neural networks"), whose gradients explode on long sequences. The adding problem
(Hochreiter & Schmidhuber 1997): each example is a sequence of ``length`` pairs (value uniform in [0, 1],
marker); exactly two markers are 1, one in each half of the sequence; the target is the sum of the two
marked values. Generated from a seed, nothing downloaded; the train, validation and test sets come from
different seeds.

Metrics. The test MSE, and ``test_r2 = 1 − MSE / (1/6)``: the share of the constant predictor's error the
model removes (the target, a sum of two independent U[0, 1], has variance 1/6, so predicting its mean, 1,
scores MSE 1/6 ≈ 0.167 and r2 0). A run has *solved* the task when its test MSE is below
``SOLVED_MSE`` = 0.01 (r2 above 0.94): a model that finds only one of the two marked values and guesses the
other's mean scores MSE 1/12 ≈ 0.083, so 0.01 means that it uses both. It has *failed* when it diverged, or
ended removing less than a tenth of the constant predictor's error (r2 below ``FAILED_R2`` = 0.1), or its
training loss ended no lower than it started.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from clipstudy import caches
from clipstudy.data.split import Split
from clipstudy.lazy_tf import keras, tf
from clipstudy.tasks.base import FailureRule, TaskSpec, check_size

#: Variance of the target (a sum of two independent U[0, 1]): the constant predictor's MSE.
TARGET_VARIANCE = 1.0 / 6.0
#: Below this test MSE the task is solved (see the module's text).
SOLVED_MSE = 0.01
SOLVED_R2 = 1.0 - SOLVED_MSE / TARGET_VARIANCE
#: Below this test r2 a run has failed: no better than the constant predictor.
FAILED_R2 = 0.1
#: Examples per split and the seed of each (train, validation and test are disjoint by seed).
SIZES = {"train": 100_000, "validation": 2_000, "test": 2_000}
SPLIT_SEEDS = {"train": 1, "validation": 2, "test": 3}
#: Recurrent-weight initialisers a run may ask for (Keras names), each scaled by ``recurrent_gain``.
RECURRENT_INITS = ("orthogonal", "identity", "glorot_uniform")
#: The longest sequences and widest RNN a run may ask for: 100,000 training sequences of length 10,000 are
#: 8 GB of float32 already (a length of 1e8 asked for 72.8 TiB at run time).
MAX_LENGTH, MAX_UNITS = 10_000, 4_096
#: The task's run parameters (``RunConfig.task_params``) and their defaults.
TASK_PARAMS = {"length": 50, "units": 128, "recurrent_init": "orthogonal", "recurrent_gain": 1.0}


def make_adding(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of the adding problem: ``x`` float32 ``(n, length, 2)`` (value, marker) and ``y`` float32
    ``(n, 1)``, the sum of the two marked values; the first marker in ``[0, length // 2)``, the second in
    ``[length // 2, length)``. The same ``(n, length, seed)`` give the same arrays on every machine."""
    if length < 2:
        raise ValueError(f"length={length!r} is invalid; the adding problem needs sequences of at least 2 steps")
    rng = np.random.default_rng([seed, length])
    values = rng.random((n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    return x, adding_targets(x)


#: The splits this process generated, by ``(n, length, seed)``, read-only (``generated``): a warm kernel's later
#: runs of the same length reuse them. At most ``MAX_GENERATED`` are kept (the three splits of two lengths).
MAX_GENERATED = 6
_GENERATED = caches.ProcessCache("adding", MAX_GENERATED, "the adding problem's generated splits, by (n, length, seed)")


def generated(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_adding(n, length, seed)``, generated once per process: the same arrays, read-only, because every
    later call shares them (a sweep's warm kernel runs many runs of one length, and generating the 100,000
    training sequences is most of a quick recurrent run's data time)."""
    key = (int(n), int(length), int(seed))
    kept = _GENERATED.get(key)
    if kept is None:
        x, y = make_adding(*key)
        x.flags.writeable = y.flags.writeable = False
        kept = (x, y)
        _GENERATED.put(key, kept)  # the oldest dropped beyond MAX_GENERATED
    return kept


def adding_targets(x: np.ndarray) -> np.ndarray:
    """The target of each sequence: the sum of its values where the marker is 1, as float32 ``(n, 1)``."""
    x = np.asarray(x, np.float64)
    return (x[..., 0] * x[..., 1]).sum(axis=1, keepdims=True).astype(np.float32)


def adding_rnn(length: int, units: int = 128, recurrent_init: str = "orthogonal", recurrent_gain: float = 1.0):
    """A vanilla ``tanh`` RNN (Keras ``SimpleRNN``) over the sequence and a linear read-out of its last state."""
    initializer = {
        "orthogonal": lambda: keras.initializers.Orthogonal(gain=recurrent_gain),
        "identity": lambda: keras.initializers.Identity(gain=recurrent_gain),
        "glorot_uniform": lambda: _scaled(keras.initializers.GlorotUniform(), recurrent_gain),
    }
    return keras.Sequential(
        [
            keras.Input(shape=(length, 2)),
            keras.layers.SimpleRNN(units, activation="tanh", recurrent_initializer=initializer[recurrent_init]()),
            keras.layers.Dense(1),
        ],
        name="adding_rnn",
    )


def _scaled(initializer, gain: float):
    if gain == 1.0:
        return initializer
    return lambda shape, dtype=None: gain * initializer(shape, dtype=dtype)


class AddingTask:
    """The adding problem: MSE loss, test MSE and r2, steps until it is solved."""

    name = "adding"
    score_name = "mse"
    metric_names = ("test_mse", "test_r2")
    summary_keys = (
        "final_train_loss",
        "final_test_mse",
        "final_test_r2",
        "best_test_r2",
        "final_solved",
        "steps_to_solved",
    )
    eval_batch_size = 1000

    def __init__(
        self,
        length: int = TASK_PARAMS["length"],
        units: int = TASK_PARAMS["units"],
        recurrent_init: str = TASK_PARAMS["recurrent_init"],
        recurrent_gain: float = TASK_PARAMS["recurrent_gain"],
    ):
        self.length, self.units = length, units
        self.recurrent_init, self.recurrent_gain = recurrent_init, recurrent_gain

    def build_model(self):
        return adding_rnn(self.length, self.units, self.recurrent_init, self.recurrent_gain)

    def load_data(self) -> tuple[Split, Split, Split]:
        return tuple(Split(*generated(SIZES[s], self.length, SPLIT_SEEDS[s])) for s in ("train", "validation", "test"))

    def prepare(self, split: Split):
        return np.asarray(split.x, np.float32), np.asarray(split.y, np.float32).reshape(-1, 1)

    def prepare_test(self, split: Split):
        return self.prepare(split)

    def per_example_loss(self, y, pred):
        return tf.reduce_mean(tf.square(pred - y), axis=-1)

    def batch_score(self, y, pred):
        """The summed squared error of the batch (``train_mse`` per evaluation)."""
        return tf.reduce_sum(tf.square(pred - y))

    def evaluate(self, predict, x, y, batch_size) -> dict[str, float]:
        pred = np.concatenate([np.asarray(predict(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])
        mse = float(np.mean((pred.astype(np.float64) - y) ** 2))
        return {"test_mse": mse, "test_r2": 1.0 - mse / TARGET_VARIANCE if math.isfinite(mse) else -math.inf}

    def targets(self) -> dict[str, tuple[str, float]]:
        return {"steps_to_solved": ("test_r2", SOLVED_R2)}

    def final_metrics(self, row) -> dict[str, float]:
        mse = float(row["test_mse"])
        return {"final_test_mse": mse, "final_test_r2": float(row["test_r2"]), "final_solved": float(mse < SOLVED_MSE)}

    #: Diverged; or no better than the constant predictor (r2 below 0.1); or its loss never went down.
    failure = FailureRule("test r2", "final_test_r2", FAILED_R2)

    def write_artifacts(self, directory: Path) -> list[Path]:
        return []


def _check(config) -> None:
    if config.dataset is not None:
        raise ValueError(f"dataset={config.dataset!r} is invalid for the adding task (generated data); leave it unset")
    p = config.task_params
    for name, low, high in (("length", 2, MAX_LENGTH), ("units", 1, MAX_UNITS)):
        value = p.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"task_params {name}={value!r} is invalid; it must be an integer from {low} to {high:,}")
    if p.get("recurrent_init") not in RECURRENT_INITS:
        raise ValueError(
            f"task_params recurrent_init={p.get('recurrent_init')!r} is invalid; valid choices: "
            f"{', '.join(RECURRENT_INITS)}"
        )
    gain = p.get("recurrent_gain")
    if not isinstance(gain, (int, float)) or isinstance(gain, bool) or not math.isfinite(gain) or gain <= 0:
        raise ValueError(f"task_params recurrent_gain={gain!r} is invalid; it must be a finite number > 0")
    check_size("validation", config.validation, SIZES["validation"])
    check_size("train_subset", config.train_subset, SIZES["train"])
    check_size("test_subset", config.test_subset, SIZES["test"])


def _sample_figure(result, config, count: int = 500):
    """Predicted against true sums on the first ``count`` test sequences, with the constant predictor."""
    import matplotlib.pyplot as plt  # deferred: a run that draws nothing never loads it

    x, y = AddingTask(**config.task_params).prepare(result.test.take(np.arange(min(count, len(result.test)))))
    pred = np.asarray(result.model(x, training=False)).ravel()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(y.ravel(), pred, s=6, alpha=0.6, label="test sequences")
    ax.plot([0, 2], [0, 2], "k--", lw=1, label="perfect")
    ax.axhline(1.0, color="C3", lw=1, label="constant predictor (1)")
    ax.set(
        xlabel="true sum of the two marked values",
        ylabel="predicted sum",
        xlim=(0, 2),
        ylim=(-0.2, 2.2),
        title=f"Adding problem, T={config.task_params['length']}",
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.draw_without_rendering()  # laid out now: a notebook's inline backend then renders it once, not twice
    return fig


SPEC = TaskSpec(
    name="adding",
    summary="the adding problem (Hochreiter & Schmidhuber 1997) learned by a vanilla tanh RNN: generated sequences, "
    "MSE; the positive control, where clipping was introduced",
    make=lambda config: AddingTask(**config.task_params),
    train_pool=lambda config: SIZES["train"],
    test_pool=lambda config: SIZES["test"],
    seconds_per_example=0.02 / 64,
    defaults={"batch_size": 64},
    task_params=TASK_PARAMS,
    check=_check,
    primary_metric="final_test_r2",
    metric_range=(-1.0, 1.0),  # r2 = 1 - MSE/Var: 0 is the constant predictor; a diverged run reads about -1e37
    sample_figure=_sample_figure,
    curve_metrics=("train_loss", "test_mse", "test_r2"),
    summary_keys=AddingTask.summary_keys,
)
