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
