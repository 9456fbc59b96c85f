"""RunConfig: one definition of a run's parameters, with types, defaults and checks."""

import dataclasses
import json
from pathlib import Path

import pytest

from clipstudy.training import ConfigError, RunConfig


def test_task_defaults_differ_only_where_the_tasks_do():
    classifier, detector = RunConfig.for_task("classifier"), RunConfig.for_task("detector")
    assert (classifier.batch_size, classifier.dataset) == (128, None)
    assert (detector.batch_size, detector.dataset) == (32, "smoke")
    assert RunConfig.for_task("detector", batch_size=8).batch_size == 8


def test_params_round_trip_and_leave_out_unset_labels():
    config = RunConfig.for_task("classifier", method="zclip", clip_params={"z_thresh": 3.0}, learning_rate=1)
    params = config.to_params()
    assert "dataset" not in params and "threshold_rule" not in params
    assert params["learning_rate"] == 1.0 and isinstance(params["learning_rate"], float)
    assert RunConfig.from_params(params) == config
    assert RunConfig.for_task("classifier", **params) == config  # a notebook gets the whole dict back


def test_a_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().seed = 3


def test_unknown_parameters_are_named_with_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown run parameter\\(s\\) lr; valid: task, task_params, method"):
        RunConfig.from_params({"lr": 0.1})


def test_a_task_given_twice_must_agree():
    with pytest.raises(ConfigError, match="task='detector' given for a classifier run"):
        RunConfig.for_task("classifier", task="detector")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "segmenter"}, "task='segmenter' is invalid; valid choices: adding, classifier, detector"),
        ({"task": "detector", "dataset": "huge"}, "dataset='huge' is invalid; valid choices: smoke, quick, full"),
        (
            {"task": "detector", "dataset": "smoke", "train_subset": 513},
            "train_subset=513 is invalid; it must be an integer in [1, 512]",
        ),
        ({"method": "global_norm", "clip_params": {"threshold": {"probe_percentile": 150}}}, "in (0, 100]"),
        ({"method": "norm", "clip_params": {"threshold": {"probe_percentile": 50}}}, "on global_norm"),
        ({"eval_every": 0}, "eval_every=0 is invalid; it must be an integer ≥ 1 or None"),
        ({"threshold_rule": 5}, "threshold_rule=5"),
    ],
)
def test_each_bad_value_is_named_with_what_is_valid(changes, message):
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    assert message in str(info.value)


def test_a_threshold_from_data_must_be_resolved_before_a_clipper_is_built():
    config = RunConfig(method="global_norm", clip_params={"threshold": {"probe_percentile": 50}})
    assert config.threshold_from_data == 50
    with pytest.raises(ConfigError, match="has not been read from data yet"):
        config.clipper()
    assert config.replace(clip_params={"threshold": 0.7}).clipper().threshold == 0.7


def test_planned_steps_count_the_batches_of_every_epoch():
    assert RunConfig(epochs=10).planned_steps() == 10 * 469  # 60,000 images, batch 128
    assert RunConfig(epochs=3, validation=5000).planned_steps() == 3 * 430  # 55,000 left to train on
    assert RunConfig(train_subset=1000, batch_size=100).planned_steps() == 10
    assert RunConfig.for_task("detector", dataset="full", epochs=3).planned_steps() == 3 * 938


def test_a_runs_axes_are_defined_once_and_its_settings_are_the_rest():
    """What varies within an experiment is RunConfig's AXES; profiles, the report's settings key and the workers
    bench read it from there (the report's key keeps the task, as every published key does)."""
    from clipstudy.analysis import report
    from clipstudy.orchestration import bench_workers
    from clipstudy.study import profiles
    from clipstudy.training.config import AXES

    config = RunConfig(method="global_norm", clip_params={"threshold": 1.0}, seed=3, epochs=2, warmup_steps=5)
    assert set(config.settings()) == set(config.to_params()) - set(AXES)
    assert config.settings()["epochs"] == 2 and config.settings()["warmup_steps"] == 5
    assert profiles.AXES == AXES
    summary = {"params": config.to_params()}
    row = report._summary_row(Path("run"), summary)
    assert json.loads(row["settings_key"]) == {"task": config.task, **config.settings()}
    # a warm-up is part of the label, so that runs with and without one are never drawn or counted together
    assert (row["method"], row["seed"], row["label"]) == ("global_norm", 3, "global_norm (threshold=1) + warm-up 5")
    with pytest.raises(ConfigError, match="unknown run parameter"):
        report._summary_row(Path("run"), {"params": {**config.to_params(), "colour": "red"}})
    experiment = bench_workers.profile_doc(2, 1)["experiments"][0]
    assert not set(experiment["settings"]) & set(AXES)
