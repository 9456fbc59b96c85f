"""Seeds from a power calculation: how many paired seeds a contrast needs to detect a stated effect with at least
80% power at the study's alpha, for the two tests the protocol uses.

* ``paired_t_power``: a two-sided paired t-test of a mean difference ``effect`` whose paired differences have
  standard deviation ``sd`` (the noncentral t distribution, exactly);
* ``mcnemar_power``: a two-sided exact McNemar test when each arm fails independently with its own probability
  (the discordant pairs are binomial; the exact test's p-value is summed over every outcome, no approximation).

``seeds_needed`` walks n up from a floor until the power reaches the target. ``python -m clipstudy.analysis.power``
prints stage 3's table (docs/protocol.md quotes it), from the variances of stages 1 and 2 and the calibration.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd
from scipy import stats as sps

from clipstudy.analysis import contrasts, report, stage1, stage2
from clipstudy.analysis.stats import exact_mcnemar

ALPHA = 0.05
TARGET_POWER = 0.8
#: The classifier grid evaluates every 215 steps: steps to 98% are known to that grid.
EVALUATION_STEPS = 215.0


def paired_t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs to detect a true mean difference ``effect``."""
    if n < 2 or sd <= 0:
        return math.nan
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / (sd / math.sqrt(n))
    return float(sps.nct.sf(crit, df, shift) + sps.nct.cdf(-crit, df, shift))


def mcnemar_power(fail_base: float, fail_clipped: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided exact McNemar test over ``n`` pairs when the unclipped run fails with probability
    ``fail_base`` and the clipped one, independently, with ``fail_clipped``."""
    rescued = fail_base * (1 - fail_clipped)  # only the unclipped run failed
    broken = fail_clipped * (1 - fail_base)  # only the clipped one failed
    discordant = rescued + broken
    power = 0.0
    for d in range(n + 1):
        p_d = sps.binom.pmf(d, n, discordant)
        if p_d < 1e-15 or d == 0:
            continue
        share = rescued / discordant
        for r in range(d + 1):
            if exact_mcnemar(d - r, r) < alpha:
                power += p_d * sps.binom.pmf(r, d, share)
    return float(power)


def seeds_needed(power_of, floor: int = 10, ceiling: int = 200, target: float = TARGET_POWER) -> tuple[int, float]:
    """The smallest n from ``floor`` with ``power_of(n) >= target``, and that power (``ceiling`` if none)."""
    for n in range(floor, ceiling + 1):
        p = power_of(n)
        if p >= target:
            return n, p
    return ceiling, power_of(ceiling)


def _sd(values) -> float:
    values = [float(v) for v in values if v == v]
    return float(sps.tstd(values)) if len(values) > 1 else math.nan


def stage3_table(summaries) -> list[dict]:
    """Stage 3's power calculation, one row per primary contrast: the effect it must detect, the standard
    deviation (or failure rates) it assumes and where they come from, the seeds that give at least 80% power."""
    s = stage1.gather_evidence(summaries, summaries.iloc[0:0]).summaries
    rows = []
    q1 = stage2._grid(stage2.confirmatory(s))
    for opt in ("sgd", "momentum"):
        rates = stage2.TUNED_RATES[opt]
        arm = {label: contrasts.select(q1, {"optimizer": opt, "learning_rate": lr}) for label, lr in rates.items()}
        c, b = arm[stage1.CANONICAL], arm["none"]
        p = c[c["label"] == stage1.CANONICAL].merge(b[b["label"] == "none"], on="seed", suffixes=("", "_base"))
        for metric, effect, unit in (("final_test_accuracy", 0.003, "accuracy"), ("steps_to_98", 215.0, "steps")):
            sd = _sd(p[metric] - p[f"{metric}_base"])
            if metric == "steps_to_98" and not sd >= EVALUATION_STEPS:
                sd = EVALUATION_STEPS  # steps are read on the evaluation grid: no smaller spread can be assumed
            n, pw = seeds_needed(lambda k, e=effect, d=sd: paired_t_power(e, d, k))
            rows.append({"contrast": f"Q6 {opt}: {metric}, tuned vs tuned", "effect": f"{effect:g} {unit}",
                         "assumes": f"sd of paired differences {sd:.4g} (stage 2, Q1 {opt}, n={len(p)})",
                         "seeds": n, "power": pw})  # fmt: skip
    adding = s[(s["task"] == "adding") & s["seed"].isin((10, 11)) & (s["label"] == "none")]
    sd = _sd(adding.loc[adding["final_test_mse"] < 1, "final_test_mse"]) * math.sqrt(2)
    n, pw = seeds_needed(lambda k: paired_t_power(0.005, sd, k))
    rows.append({"contrast": "Q5b: final test MSE, tuned vs tuned (each clipped arm against none)",
                 "effect": "0.005 MSE (half the 'solved' level)",
                 "assumes": f"sd of paired differences {sd:.3g} (unclipped calibration runs that learned, x sqrt 2)",
                 "seeds": n, "power": pw})  # fmt: skip
    n, pw = seeds_needed(lambda k: mcnemar_power(0.7, 0.2, k))
    rows.append({"contrast": "Q5a: divergence at the lowest rate where unclipped calibration runs diverge",
                 "effect": "divergence 0.7 unclipped vs 0.2 clipped", "assumes": "independent arms, exact McNemar",
                 "seeds": n, "power": pw})  # fmt: skip
    rows.append(detector_row(s))
    return rows


def detector_row(s) -> dict:
    """Q8's row: collapses of the detector at Adam 1e-2, global norm 10 against none (stage 2 saw 4 of 5 unclipped
    and 1 of 5 clipped collapse: 0.7 against 0.2 is the effect to detect, a little under what it saw)."""
    q3 = contrasts.pairs(contrasts.select(stage2.confirmatory(s), stage2.DETECTOR_UNSTABLE), stage1.DETECTOR_CLIP)
    seen = f"stage 2 (Q3, YOLO's 10): {int(q3['failed_base'].sum())} of {len(q3)} unclipped and "
    seen += f"{int(q3['failed'].sum())} of {len(q3)} clipped collapsed"
    n, pw = seeds_needed(lambda k: mcnemar_power(0.7, 0.2, k))
    return {"contrast": "Q8: detector collapses at Adam 1e-2, global norm 10 vs none",
            "effect": "collapse 0.7 unclipped vs 0.2 clipped", "assumes": f"independent arms, exact McNemar; {seen}",
            "seeds": n, "power": pw}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.analysis.power", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    args = parser.parse_args(argv)
    rep = report.ProfileReport.load(args.profile)
    table = pd.DataFrame(stage3_table(rep.table.summaries))
    print("| contrast | effect to detect | assumes | seeds | power |\n|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.contrast} | {r.effect} | {r.assumes} | {r.seeds} | {r.power:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
