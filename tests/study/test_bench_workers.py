"""The workers benchmark's plan: the quick classifier run it names, under the setting asked for."""

import argparse

import pytest
import yaml

from clipstudy.orchestration import bench_workers, breakdown
from clipstudy.study import profiles


def test_each_setting_sweeps_the_same_quick_classifier_runs_with_its_threads(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(bench_workers.profile_doc(3, 2)))
    _, specs = profiles.load_profile(path)
    assert [s.config.seed for s in specs] == [0, 1, 2]
    for spec in specs:
        expected = dict(breakdown.RUNS["classifier"], seed=spec.config.seed, threads=2)
        assert {k: spec.params[k] for k in expected} == expected
    assert spec.config.planned_steps() == 64  # 8,192 images in batches of 128, one epoch


@pytest.mark.parametrize("text", ["2y1", "0x1", "2x", "x"])
def test_a_bad_setting_is_refused_naming_it(text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace("'", ".")):
        bench_workers.parse_setting(text)
    assert bench_workers.parse_setting("3x2") == (3, 2)
