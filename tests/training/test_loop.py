"""The training loop: determinism, complete telemetry, divergence as a result."""

import math

import keras
import numpy as np
import pandas as pd
import pytest

from clipstudy import training
from clipstudy.data.split import subset_indices
from clipstudy.tasks.classification import ClassificationTask, prepare_images
from clipstudy.training import RunConfig

SMALL = dict(epochs=2, batch_size=64, train_subset=384, test_subset=200)


def train(data, **params):
    """A small classifier run: ``SMALL`` with ``params`` on top."""
    return training.train(RunConfig(**{**SMALL, **params}), ClassificationTask(), data, progress=False)


def test_a_short_run_is_deterministic(mnist_splits):
    runs = [
        train(mnist_splits, method="global_norm", clip_params={"threshold": 1.0}, seed=3, **SMALL) for _ in range(2)
    ]
    timing = ["step_time_s"]
    pd.testing.assert_frame_equal(runs[0].steps.drop(columns=timing), runs[1].steps.drop(columns=timing))
    pd.testing.assert_frame_equal(
        runs[0].epochs.drop(columns=["wall_time_s", "eval_time_s"]),
        runs[1].epochs.drop(columns=["wall_time_s", "eval_time_s"]),
    )
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_another_seed_gives_other_numbers(mnist_splits):
    a = train(mnist_splits, seed=0, **SMALL)
    b = train(mnist_splits, seed=1, **SMALL)
    assert not np.array_equal(a.steps["loss"].to_numpy(), b.steps["loss"].to_numpy())


def test_every_step_and_epoch_field_is_recorded(mnist_splits):
    run = train(mnist_splits, method="zclip", clip_params={"warmup_steps": 3}, **SMALL)
    assert len(run.steps) == 2 * math.ceil(384 / 64)
    assert list(run.steps.columns) == [
        "step",
        "epoch",
        "loss",
        "norm_before",
        "norm_after",
        "clipped",
        "threshold",
        "nonfinite",
        "step_time_s",
    ]
    assert run.steps["step"].tolist() == list(range(1, 13))
    assert run.steps["epoch"].tolist() == [1] * 6 + [2] * 6
    assert run.steps[["loss", "norm_before", "norm_after", "step_time_s"]].notna().all().all()
    assert run.steps["threshold"].iloc[:3].isna().all() and run.steps["threshold"].iloc[3:].notna().all()
    assert list(run.epochs.columns) == [
        "epoch",
        "step",
        "epoch_end",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "wall_time_s",
        "eval_time_s",
    ]
    s = run.summary
    for key in [
        "final_test_accuracy",
        "steps_to_98",
        "steps_to_99",
        "diverged",
        "wall_time_s",
        "parameters",
        "versions",
        "clip_fraction",
        "method",
        "clip_params",
    ]:
        assert key in s
    assert s["parameters"] == 225034 and s["method"] == "zclip" and not s["diverged"]
    assert s["versions"]["keras"] == keras.__version__


def test_test_accuracy_agrees_with_keras_evaluate(mnist, mnist_splits):
    run = train(mnist_splits, **SMALL)
    (_, _), (x_test, y_test) = mnist
    idx = subset_indices(len(x_test), 200, 0, "test_subset")
    run.model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = run.model.evaluate(prepare_images(x_test[idx]), y_test[idx], verbose=0)
    assert run.epochs["test_accuracy"].iloc[-1] == pytest.approx(acc, abs=1e-6)  # Keras keeps float32
    assert run.epochs["test_loss"].iloc[-1] == pytest.approx(loss, rel=1e-5)


def test_a_huge_learning_rate_is_reported_as_diverged_not_raised(mnist_splits):
    """A rate of 1e5 (below ``LIMITS``' 1e6) sends SGD on MNIST to a non-finite loss within the run."""
    run = train(mnist_splits, optimizer="sgd", learning_rate=1e5, **SMALL)
    assert run.summary["diverged"]
    assert run.summary["steps_run"] < run.summary["steps_planned"]
    # The step that went non-finite was not applied: the weights stay finite.
    assert all(np.isfinite(w).all() for w in run.model.get_weights())


def test_eval_every_adds_evaluations_inside_epochs(mnist_splits):
    run = train(mnist_splits, eval_every=4, **SMALL)  # 6 steps an epoch
    assert run.epochs["step"].tolist() == [4, 6, 8, 12]  # every 4th global step, plus epoch ends
    assert run.epochs["epoch_end"].tolist() == [False, True, False, True]
    assert run.epochs["epoch"].tolist() == [1, 1, 2, 2]


def test_a_scaled_loss_spike_scales_the_sgd_update_and_global_norm_clipping_undoes_it(mnist_splits):
    kw = dict(SMALL, epochs=1, optimizer="sgd", learning_rate=0.05)
    plain = train(mnist_splits, **kw)
    spiked = train(mnist_splits, spikes={"steps": [3], "kind": "scale_loss", "factor": 50.0}, **kw)
    # Same batches: identical up to the spike (its own loss is recorded before scaling), different after.
    np.testing.assert_array_equal(plain.steps["loss"].iloc[:3], spiked.steps["loss"].iloc[:3])
    assert spiked.steps["norm_before"].iloc[2] == pytest.approx(50 * plain.steps["norm_before"].iloc[2], rel=1e-4)
    assert not np.allclose(plain.steps["loss"].iloc[3:], spiked.steps["loss"].iloc[3:])
    # With a global-norm threshold below every norm, each update has the same length whatever the
    # scale, so the spiked run follows the plain one (up to float rounding).
    clip = dict(method="global_norm", clip_params={"threshold": 1e-3})
    a = train(mnist_splits, **kw, **clip)
    b = train(mnist_splits, spikes={"steps": [3], "kind": "scale_loss", "factor": 50.0}, **kw, **clip)
    np.testing.assert_allclose(b.steps["loss"], a.steps["loss"], rtol=1e-4)


def test_shuffled_label_spikes_change_the_recorded_loss(mnist_splits):
    kw = dict(SMALL, epochs=1)
    plain = train(mnist_splits, **kw)
    spiked = train(mnist_splits, spikes={"steps": [2], "kind": "shuffle_labels"}, **kw)
    assert plain.steps["loss"].iloc[0] == spiked.steps["loss"].iloc[0]
    assert plain.steps["loss"].iloc[1] != spiked.steps["loss"].iloc[1]


def test_steps_to_target_reads_the_first_epoch_at_target():
    epochs = pd.DataFrame({"step": [10, 20, 30], "test_accuracy": [0.97, 0.985, 0.991]})
    assert training.steps_to_target(epochs, 0.98) == 20
    assert training.steps_to_target(epochs, 0.99) == 30
    assert math.isnan(training.steps_to_target(epochs, 0.995))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sgd", (keras.optimizers.SGD, 0.0)),
        ("momentum", (keras.optimizers.SGD, 0.9)),
        ("rmsprop", (keras.optimizers.RMSprop, None)),
        ("adam", (keras.optimizers.Adam, None)),
    ],
)
def test_optimizers_by_name(name, expected):
    opt = training.make_optimizer(name, 0.01)
    assert type(opt) is expected[0]
    assert float(opt.learning_rate) == pytest.approx(0.01)
    if expected[1] is not None:
        assert opt.momentum == expected[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optimizer": "adagrad"}, "valid choices: sgd, momentum, rmsprop, adam"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"eval_every": 0}, "eval_every=0"),
        ({"train_subset": 10**6}, "train_subset=1000000 is invalid; it must be an integer in [1, 60000]"),
        ({"method": "clip_everything"}, "valid choices"),
        ({"clip_params": "{}"}, "clip_params='{}' is invalid"),
        ({"spikes": {"steps": [1], "kind": "nan"}}, "valid choices: scale_loss, shuffle_labels"),
        ({"spikes": {"steps": [], "kind": "scale_loss"}}, "spikes steps=[]"),
        ({"learning_rate": "1e-3"}, "YAML reads 1e-3 as a string"),
        ({"learning_rate": float("inf")}, "learning_rate=inf"),
        ({"test_subset": -5}, "test_subset=-5"),
        ({"dataset": "quick"}, "dataset='quick' is invalid for the classifier"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_bad_training_arguments_name_the_value(mnist_splits, kwargs, message):
    with pytest.raises(ValueError) as info:
        train(mnist_splits, **{**SMALL, **kwargs})
    assert message in str(info.value)


def test_a_spiked_run_is_not_stopped_and_may_recover(mnist_splits):
    run = train(mnist_splits, spikes={"steps": [3], "kind": "scale_loss", "factor": 100.0})
    assert run.summary["steps_run"] == run.summary["steps_planned"] and not run.summary["diverged"]
    assert run.summary["failure"] is None and run.summary["final_test_accuracy"] > 0.2


def test_a_stopped_run_is_scored_as_it_stood(mnist_splits):
    run = train(mnist_splits, optimizer="sgd", learning_rate=1e5)
    assert run.summary["diverged"] and run.summary["failure"].startswith("diverged")
    last = run.epochs.iloc[-1]
    assert 0 <= last["test_accuracy"] <= 1 and run.summary["final_test_accuracy"] == last["test_accuracy"]


def test_a_validation_split_is_held_out_of_training_and_evaluated(mnist_splits):
    from clipstudy.training.loop import run_splits

    config = RunConfig(**SMALL, validation=500)
    train_split, validation, test = run_splits(config, mnist_splits)
    assert len(validation) == 500 and len(train_split) == 384 and len(test) == 200
    held_out = {bytes(x) for x in validation.x}
    assert not any(bytes(x) in held_out for x in train_split.x)
    again = run_splits(config.replace(seed=7), mnist_splits)[1]  # the same images whatever the seed
    assert (again.x == validation.x).all()
    run = train(mnist_splits, validation=500)
    assert {"val_loss", "val_accuracy"} <= set(run.epochs.columns)
    assert run.summary["final_val_accuracy"] == run.epochs["val_accuracy"].iloc[-1]
    # The test metrics are unchanged by evaluating on validation too, except that fewer images remain to train on.
    assert run.summary["train_images"] == 384


def test_identical_runs_have_identical_trajectory_digests(mnist_splits):
    a, b = train(mnist_splits), train(mnist_splits)
    c = train(mnist_splits, method="global_norm", clip_params={"threshold": 1e-3})
    assert a.summary["trajectory_sha256"] == b.summary["trajectory_sha256"] != c.summary["trajectory_sha256"]


def test_the_probe_reads_a_threshold_from_its_own_unclipped_steps(mnist_splits):
    from clipstudy.study.probes import PROBE_SEED, probe_norms, threshold_at

    config = RunConfig(**SMALL, method="global_norm", clip_params={"threshold": {"probe_percentile": 50}})
    norms = probe_norms(config, ClassificationTask(), mnist_splits, steps=10)
    assert len(norms) == 10 and (norms > 0).all()
    # The probe is the unclipped run of its own seed: its first norms are that run's first norms.
    plain = train(mnist_splits, seed=PROBE_SEED, epochs=1)
    np.testing.assert_array_equal(norms[:6], plain.steps["norm_before"].to_numpy(np.float32)[:6])
    assert threshold_at(norms, 50) == pytest.approx(float(np.median(norms)))


def test_threads_are_part_of_a_runs_identity_and_cannot_change_under_a_running_tensorflow(mnist_splits):
    from clipstudy.study.runfiles import run_id
    from clipstudy.training.summary import thread_counts

    assert run_id(RunConfig(threads=1)) != run_id(RunConfig(threads=2))
    train(mnist_splits, epochs=1)  # TensorFlow is running in this process now
    current = thread_counts()["intra_op"]
    training.set_threads(current) if current == thread_counts()["inter_op"] else None  # same counts: a no-op
    with pytest.raises(RuntimeError, match="needs threads=7: run it in a fresh process"):
        training.set_threads(7)


def test_a_clipper_that_never_engages_leaves_the_outcome_digest_unchanged(mnist_splits):
    plain = train(mnist_splits, epochs=1)
    idle = train(mnist_splits, epochs=1, method="value", clip_params={"threshold": 1e6})
    assert idle.summary["steps_clipped"] == 0
    assert idle.summary["outcome_sha256"] == plain.summary["outcome_sha256"]
    assert idle.summary["trajectory_sha256"] != plain.summary["trajectory_sha256"]  # its threshold column differs


def test_a_prefix_is_the_whole_runs_first_steps_bit_for_bit(mnist_splits):
    """``stop_after``: the first steps of a run, identical to the whole run's (what make reproduce checks of
    the runs too long to retrain), scored where it stopped and marked as a prefix."""
    params = dict(method="global_norm", clip_params={"threshold": 1.0}, seed=4)
    whole = train(mnist_splits, **params)
    prefix = training.train(
        RunConfig(**{**SMALL, **params}), ClassificationTask(), mnist_splits, progress=False, stop_after=5
    )
    assert len(whole.steps) == whole.summary["steps_planned"] == 12 and len(prefix.steps) == 5
    timing = ["step_time_s"]
    pd.testing.assert_frame_equal(prefix.steps.drop(columns=timing), whole.steps.drop(columns=timing).iloc[:5])
    assert prefix.summary["stopped_after"] == 5 and "stopped_after" not in whole.summary
    assert prefix.summary["steps_run"] == 5 and not prefix.summary["diverged"]
    assert prefix.epochs["step"].tolist() == [5] and 0 <= prefix.summary["final_test_accuracy"] <= 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_a_bad_prefix_length_names_the_value(mnist_splits, bad):
    with pytest.raises(ValueError, match=f"stop_after={bad!r} is invalid"):
        training.train(RunConfig(**SMALL), ClassificationTask(), mnist_splits, progress=False, stop_after=bad)


def _numbers(run):
    """A run's steps and evaluations without their timings, and its trained weights."""
    steps = run.steps.drop(columns=["step_time_s"])
    epochs = run.epochs.drop(columns=["wall_time_s", "eval_time_s"])
    return steps, epochs, run.model.get_weights()


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    for x, y in zip(a[2], b[2], strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "params",
    [
        dict(method="zclip", clip_params={"warmup_steps": 3}, optimizer="adam", learning_rate=0.003),
        dict(method="global_norm", clip_params={"threshold": 1.0}, optimizer="momentum", learning_rate=0.05),
    ],
    ids=["zclip-adam", "global_norm-momentum"],
)
def test_a_run_that_reuses_a_compiled_step_equals_the_run_traced_anew(mnist_splits, params):
    """``reuse_compiled``: a second run of the same shape (another seed, rate and training subset) starts
    from the first run's compiled step, loaded with its own weights, optimizer slots, clipper state and
    examples, and gives the numbers it gives traced anew, bit for bit; the first run's model keeps its
    own weights."""
    from clipstudy.training import step

    def run(seed, rate, reuse):
        config = RunConfig(**{**SMALL, **params, "seed": seed, "learning_rate": rate})
        return training.train(config, ClassificationTask(), mnist_splits, progress=False, reuse_compiled=reuse)

    from clipstudy import caches

    kept_steps = caches.cache("compiled steps")
    step.forget_compiled()
    fresh = _numbers(run(2, params["learning_rate"] / 3, reuse=False))
    assert len(kept_steps) == 0  # a run that does not reuse leaves nothing
    first = run(1, params["learning_rate"], reuse=True)
    first_weights = [w.copy() for w in first.model.get_weights()]
    (key,) = kept_steps.keys()
    assert step.compiled_step_kept(key)
    reused = _numbers(run(2, params["learning_rate"] / 3, reuse=True))
    assert step.compiled_step_kept(key)  # handed back for the next run
    _assert_same(reused, fresh)
    for kept, now in zip(first_weights, first.model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, now)
    step.forget_compiled()


def test_a_compiled_step_of_another_shape_or_optimizer_is_not_reused(mnist_splits):
    from clipstudy.training import step

    step.forget_compiled()
    base = dict(method="global_norm", clip_params={"threshold": 1.0}, optimizer="sgd", learning_rate=0.1, seed=0)
    training.train(
        RunConfig(**{**SMALL, **base}), ClassificationTask(), mnist_splits, progress=False, reuse_compiled=True
    )
    from clipstudy import caches

    (key,) = caches.cache("compiled steps").keys()
    # the key is data: the task's class, name, parameters and data set, the clipper's name and config, the optimizer
    assert key == ("ClassificationTask", "classifier", "{}", None, "global_norm", '{"threshold": 1.0}', "sgd")
    other = RunConfig(**{**SMALL, **base, "optimizer": "adam"})
    assert not step.compiled_step_kept(training.loop._compiled_key(other, ClassificationTask(), other.clipper()))
    kept = caches.cache("compiled steps").get(key)
    larger = RunConfig(**{**SMALL, **base, "train_subset": 448})
    x, y = ClassificationTask().prepare(training.loop.run_splits(larger, mnist_splits)[0])
    net = ClassificationTask().build_model()
    assert not kept.fits(net, keras.optimizers.SGD(0.1), larger.clipper(), x, y, (28, 28, 1))
    assert kept.fits(net, keras.optimizers.SGD(0.5), larger.clipper(), x[:384], y[:384], (28, 28, 1))
    step.forget_compiled()


def test_seeding_without_tensorflow_seeds_python_numpy_and_keras_as_keras_does():
    """The one function that writes Keras' private seeding state draws what keras.utils.set_random_seed draws; on a
    Keras other than the one it was written for, a failure here names both versions."""
    import random

    from clipstudy.training.loop import KERAS_SEEDING_CHECKED

    draws = []
    for tensorflow in (True, False):
        training.set_determinism(11, tensorflow=tensorflow)
        draws.append((random.random(), np.random.rand(), keras.random.uniform((3,)).numpy().tolist()))
        assert keras.src.utils.rng_utils.get_random_seed() == 11
    assert draws[0] == draws[1], f"Keras {keras.__version__} seeds otherwise than {KERAS_SEEDING_CHECKED} did"


def test_a_step_with_a_stateful_random_op_is_seen_as_drawing_from_the_global_seed():
    from clipstudy.training.step import _draws_from_global_seed

    tf = pytest.importorskip("tensorflow")
    spec = [tf.TensorSpec([None], tf.float32)]
    noisy = tf.function(lambda x: x + tf.random.uniform(tf.shape(x)), input_signature=spec)
    in_branch = tf.function(lambda x: tf.cond(tf.reduce_sum(x) > 0, lambda: x + tf.random.normal([1]), lambda: x),
                            input_signature=spec)  # fmt: skip
    stateless = tf.function(lambda x: x + tf.random.stateless_uniform(tf.shape(x), seed=[1, 2]), input_signature=spec)
    dropout = keras.layers.Dropout(0.5, seed=3)
    with_keras_dropout = tf.function(lambda x: dropout(x, training=True), input_signature=spec)
    assert _draws_from_global_seed(noisy) and _draws_from_global_seed(in_branch)
    assert not _draws_from_global_seed(stateless) and not _draws_from_global_seed(with_keras_dropout)


def _first_update(data, warmup_steps: int) -> np.ndarray:
    """The weights after one SGD step (no clipping) of the same model, batch and seed."""
    config = RunConfig(**SMALL, optimizer="sgd", learning_rate=0.1, warmup_steps=warmup_steps)
    run = training.train(config, ClassificationTask(), data, progress=False, stop_after=1)
    return np.concatenate([w.ravel() for w in run.model.get_weights()]).astype(np.float64)


def test_warm_up_scales_the_rate_linearly_from_rate_over_n(mnist_splits):
    """With plain SGD, step 1's update is rate × g without warm-up, rate × g/2 with N = 2 and rate × g/4 with N = 4
    (same weights, batch and gradient): so (w_plain − w_2) = 2 (w_2 − w_4), whatever the initial weights."""
    plain, two, four = (_first_update(mnist_splits, n) for n in (0, 2, 4))
    np.testing.assert_allclose(plain - two, 2 * (two - four), rtol=1e-3, atol=1e-7)
    assert np.abs(two - four).max() > 1e-4  # the warm-up changed the step at all


def test_after_its_warm_up_a_run_steps_at_the_full_rate(mnist_splits):
    """A run's rate is the configured one from step N on: a run with warm-up N = 1 (rate × 1/1 at step 1) is the
    run without warm-up, bit for bit; and warm-up leaves the id of a run without it unchanged."""
    from clipstudy.study.runfiles import run_id

    a = train(mnist_splits, optimizer="sgd", learning_rate=0.1, epochs=1)
    b = train(mnist_splits, optimizer="sgd", learning_rate=0.1, epochs=1, warmup_steps=1)
    assert a.summary["outcome_sha256"] == b.summary["outcome_sha256"]
    assert "warmup_steps" not in RunConfig().to_params()
    assert run_id(RunConfig(warmup_steps=0)) == run_id(RunConfig()) != run_id(RunConfig(warmup_steps=300))
    with pytest.raises(training.ConfigError, match="warmup_steps=-1 is invalid"):
        RunConfig(warmup_steps=-1)
