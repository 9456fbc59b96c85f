"""The power calculation against independent references: the textbook paired-t sample size and a simulation of
the exact McNemar test."""

import numpy as np
import pytest

from clipstudy.analysis import power
from clipstudy.analysis.stats import exact_mcnemar


def test_a_half_standard_deviation_needs_34_pairs_for_80_percent_power():
    """Cohen's d = 0.5, two-sided alpha 0.05: the paired t-test needs 34 pairs (33.4 rounded up), as G*Power and
    statsmodels' TTestPower give; with 10 pairs the power is 0.29."""
    n, achieved = power.seeds_needed(lambda k: power.paired_t_power(0.5, 1.0, k), floor=2)
    assert n == 34 and 0.80 <= achieved < 0.82
    assert power.paired_t_power(0.5, 1.0, 10) == pytest.approx(0.293, abs=0.002)


def test_the_exact_mcnemar_power_matches_a_simulation_of_the_test():
    """Collapse rates 0.7 against 0.2 (issue #37): about 20 pairs for 80% power; 5 pairs can never reach
    p < 0.05 (the smallest exact p is 0.0625), so their power is 0."""
    rng = np.random.default_rng(0)
    n, trials = 20, 4000
    base = rng.random((trials, n)) < 0.7
    clipped = rng.random((trials, n)) < 0.2
    rejected = [
        exact_mcnemar(int((c & ~b).sum()), int((b & ~c).sum())) < 0.05 for b, c in zip(base, clipped, strict=True)
    ]
    assert power.mcnemar_power(0.7, 0.2, n) == pytest.approx(np.mean(rejected), abs=0.025)
    assert power.mcnemar_power(0.7, 0.2, 5) == 0.0
    assert power.seeds_needed(lambda k: power.mcnemar_power(0.7, 0.2, k))[0] in (19, 20)
