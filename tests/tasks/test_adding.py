"""The recurrent task: the adding problem's generator, its RNN, its metrics and failure rule, and the study's
machinery (every clipper, spikes, the probe) running on it unchanged."""

import math

import numpy as np
import pytest

from clipstudy import tasks
from clipstudy.tasks import adding
from clipstudy.training import ConfigError, RunConfig, train

SHORT = dict(
    task_params={"length": 6, "units": 8}, epochs=1, train_subset=256, test_subset=200, eval_every=2, batch_size=32
)


def test_the_target_is_the_sum_of_the_two_marked_values_by_hand():
    x = np.array([[[0.1, 0], [0.5, 1], [0.2, 1], [0.9, 0]], [[0.25, 1], [0.0, 0], [0.3, 0], [0.75, 1]]], np.float32)
    np.testing.assert_allclose(adding.adding_targets(x), [[0.7], [1.0]], rtol=1e-6)


def test_generated_sequences_have_one_marker_in_each_half_and_their_sum_as_target():
    x, y = adding.make_adding(500, 9, seed=4)
    assert x.shape == (500, 9, 2) and y.shape == (500, 1) and x.dtype == y.dtype == np.float32
    markers = x[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert (markers[:, :4].sum(1) == 1).all() and (markers[:, 4:].sum(1) == 1).all()
    values = x[..., 0]
    assert values.min() >= 0 and values.max() < 1
    first, second = markers[:, :4].argmax(1), 4 + markers[:, 4:].argmax(1)
    expected = values[np.arange(500), first].astype(np.float64) + values[np.arange(500), second]
    np.testing.assert_allclose(y[:, 0], expected, rtol=1e-6)
    # the target's variance is the constant predictor's MSE, 1/6
    big = adding.make_adding(20_000, 9, seed=5)[1]
    assert abs(big.var() - adding.TARGET_VARIANCE) < 0.005 and abs(big.mean() - 1.0) < 0.01


def test_a_process_generates_each_split_once_read_only_and_equal_to_a_fresh_generation(monkeypatch):
    from clipstudy import caches

    generated = caches.cache("adding")
    generated.clear()
    monkeypatch.setattr(generated, "max_entries", 2)
    first = adding.generated(300, 7, 1)
    again = adding.generated(300, 7, 1)
    assert again[0] is first[0] and again[1] is first[1]  # reused, not generated again
    fresh = adding.make_adding(300, 7, 1)
    assert all(np.array_equal(p, q) and p.dtype == q.dtype for p, q in zip(first, fresh))
    with pytest.raises(ValueError, match="read-only"):
        first[0][0, 0, 0] = 5.0
    assert fresh[0].flags.writeable  # make_adding's own arrays stay the caller's
    task_split = adding.AddingTask(length=7).load_data()[0]
    assert not task_split.x.flags.writeable  # the task reads through the cache
    adding.generated(300, 7, 2)
    assert generated.keys() == [(2000, 7, 3), (300, 7, 2)]  # bounded: the oldest went first
    assert adding.generated(300, 7, 1)[0] is not first[0]


def test_generation_is_deterministic_and_the_splits_are_disjoint_by_seed():
    a = adding.make_adding(100, 12, seed=1)
    b = adding.make_adding(100, 12, seed=1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    train, validation, test = adding.AddingTask(length=12).load_data()
    assert (len(train), len(validation), len(test)) == (
        adding.SIZES["train"],
        adding.SIZES["validation"],
        adding.SIZES["test"],
    )
    seen = {row.tobytes() for row in train.x}
    assert not any(row.tobytes() in seen for row in test.x) and not any(row.tobytes() in seen for row in validation.x)
    with pytest.raises(ValueError, match="at least 2"):
        adding.make_adding(3, 1, seed=0)


def test_the_task_is_registered_with_its_parameters_and_checks():
    assert "adding" in tasks.NAMES and tasks.spec("adding") is adding.SPEC
    config = RunConfig.for_task("adding", task_params={"length": 30})
    assert dict(config.task_params) == {**adding.TASK_PARAMS, "length": 30} and config.batch_size == 64
    assert config.planned_steps() == -(-adding.SIZES["train"] // 64)
    for bad, match in [
        ({"task_params": {"lenght": 3}}, "unknown parameter.*lenght.*valid: length"),
        ({"task_params": {"recurrent_init": "zeros"}}, "recurrent_init='zeros'.*orthogonal"),
        ({"task_params": {"length": 1}}, "length=1"),
        ({"task_params": {"recurrent_gain": -1.0}}, "recurrent_gain=-1.0"),
        ({"dataset": "smoke"}, "dataset='smoke' is invalid for the adding task"),
        ({"validation": 5000}, "validation=5000"),
    ]:
        with pytest.raises(ConfigError, match=match):
            RunConfig.for_task("adding", **bad)
    with pytest.raises(ConfigError, match="unknown parameter.*for the classifier; valid: none"):
        RunConfig.for_task("classifier", task_params={"length": 3})


def test_a_short_run_trains_scores_and_is_deterministic():
    config = RunConfig.for_task(
        "adding",
        method="global_norm",
        clip_params={"threshold": 0.5},
        optimizer="adam",
        learning_rate=0.01,
        validation=100,
        **SHORT,
    )
    task = tasks.for_config(config)
    data = task.load_data()
    first = train(config, task, data, progress=False)
    again = train(config, tasks.for_config(config), data, progress=False)
    assert first.summary["outcome_sha256"] == again.summary["outcome_sha256"]
    steps, epochs, s = first.steps, first.epochs, first.summary
    assert len(steps) == 8 and list(epochs["step"]) == [2, 4, 6, 8]
    assert {"train_mse", "val_mse", "val_r2", "test_mse", "test_r2"} <= set(epochs.columns)
    assert (steps["norm_after"] <= 0.5 * (1 + 1e-5)).all() and steps["clipped"].sum() > 0
    # the metrics against Keras' own MSE of the trained model on the test examples
    x, y = task.prepare(first.test)
    import keras

    mse = float(keras.losses.MeanSquaredError()(y, first.model(x, training=False)))
    assert s["final_test_mse"] == pytest.approx(mse, rel=1e-5)
    assert s["final_test_r2"] == pytest.approx(1 - mse * 6, rel=1e-5)
    assert s["final_solved"] == float(mse < 0.01) and s["task"] == "adding"


def test_the_failure_rule_is_the_constant_predictor_or_divergence():
    task = adding.AddingTask()
    ok = {"final_test_r2": 0.5, "final_train_loss": 0.05}
    assert task.failure(diverged=False, final=ok, loss_start=0.5) is None
    assert task.failure(diverged=False, final={**ok, "final_test_r2": 0.02}, loss_start=0.5).startswith("collapsed")
    assert task.failure(diverged=True, final=ok, loss_start=0.5).startswith("diverged")


@pytest.mark.parametrize(
    "method, params",
    [
        ("value", {"threshold": 0.1}),
        ("norm", {"threshold": 0.5}),
        ("agc", {"clip_factor": 0.01}),
        ("autoclip", {"percentile": 10}),
        ("zclip", {"warmup_steps": 2}),
    ],
)
def test_every_clipper_and_the_spikes_run_on_it(method, params):
    config = RunConfig.for_task(
        "adding",
        method=method,
        clip_params=params,
        optimizer="sgd",
        learning_rate=0.1,
        spikes={"steps": [4], "kind": "scale_loss", "factor": 100.0},
        **SHORT,
    )
    task = tasks.for_config(config)
    result = train(config, task, task.load_data(), progress=False)
    spike = result.steps.set_index("step").loc[4]
    assert spike["norm_before"] > 10 * result.steps["norm_before"].iloc[2]  # the loss ×100 at step 4
    assert result.steps["clipped"].iloc[3] > 0 and math.isfinite(result.summary["final_test_mse"])


def test_the_threshold_probe_reads_its_norms():
    from clipstudy.study.probes import probe_norms

    config = RunConfig.for_task("adding", optimizer="sgd", learning_rate=0.05, **SHORT)
    task = tasks.for_config(config)
    norms = probe_norms(config, task, task.load_data(), steps=5)
    assert len(norms) == 5 and np.isfinite(norms).all() and (norms > 0).all()
