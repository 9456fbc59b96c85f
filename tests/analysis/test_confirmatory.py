"""The confirmatory stage's pre-registered questions reach each of their answers on hand-built run tables.

Each table holds the runs the paper profile's stage 2 plans (seeds 5-9); the expected answer follows by hand
from the rule in ``claims``: a paired 95% t-interval (Holm-adjusted p across Q1's four optimizers) excluding 0
is "better" or "worse", an interval inside the margin is "no meaningful difference", failures are compared
with the exact McNemar test (5 of 5 discordant pairs one way: p = 2 · 0.5⁵ = 0.0625; 6 of 6: 0.03125).
"""

import json

import pandas as pd
import pytest

from clipstudy.analysis import claims, stage1, stage2

SEEDS = (5, 6, 7, 8, 9)
GRID_KEY = json.dumps({"batch_size": 128, "epochs": 3, "eval_every": 215, "validation": 5000}, sort_keys=True)


def runs(
    task="classifier",
    optimizer="sgd",
    lr=0.1,
    label="none",
    values=(0.98,) * 5,
    failed=(False,) * 5,
    key=GRID_KEY,
    seeds=SEEDS,
    metric="final_test_accuracy",
    **extra,
):
    return [
        {
            "run_id": f"{task}-{optimizer}-{lr}-{label}-{s}",
            "task": task,
            "optimizer": optimizer,
            "learning_rate": lr,
            "seed": s,
            "label": label,
            "settings_key": key,
            "spiked": False,
            metric: v,
            "failed": f,
            **extra,
        }
        for s, v, f in zip(seeds, values, failed)
    ]


def q1_table(sgd_clipped):
    rows = []
    for opt, rates in stage2.TUNED_RATES.items():
        rows += runs(optimizer=opt, lr=rates["none"], values=(0.980, 0.981, 0.982, 0.983, 0.984))
        clipped = sgd_clipped if opt == "sgd" else (0.9801, 0.9809, 0.9821, 0.9829, 0.9841)
        rows += runs(optimizer=opt, lr=rates[stage1.CANONICAL], label=stage1.CANONICAL, values=clipped)
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "sgd_clipped, expected",
    [
        ((0.990, 0.9915, 0.992, 0.9935, 0.994), "clipping better"),  # +0.010 … +0.010: Holm p tiny
        ((0.970, 0.9705, 0.972, 0.9725, 0.974), "clipping worse"),
        ((0.9801, 0.9809, 0.9821, 0.9829, 0.9841), "no meaningful difference (within ±0.002)"),
        ((0.975, 0.987, 0.976, 0.990, 0.980), "inconclusive"),  # −0.005 … +0.007: wide, across 0
    ],
)
def test_q1_is_decided_per_optimizer_at_each_arms_own_rate(sgd_clipped, expected):
    answers = {a.question: a for a in stage2.q1_tuned_against_tuned(q1_table(sgd_clipped))}
    assert answers["Q1 sgd"].verdict == expected
    assert "lr=1" in answers["Q1 sgd"].tested_where and "lr=0.1" in answers["Q1 sgd"].tested_where
    # the other optimizers: differences of ±0.0001, inside the margin
    assert all(answers[f"Q1 {o}"].verdict.startswith("no meaningful") for o in ("momentum", "rmsprop", "adam"))


def test_q1_ignores_stage_1_seeds_and_other_conditions():
    table = q1_table((0.990, 0.9915, 0.992, 0.9935, 0.994))
    table = table.assign(seed=table["seed"] - 5)  # seeds 0-4: exploratory, never read here
    assert all(a.verdict == "inconclusive" for a in stage2.q1_tuned_against_tuned(table))


def failing_table(clipped_failed):
    rows = []
    for opt, lr in stage2.FAILING_RATES.items():
        rows += runs(optimizer=opt, lr=lr, failed=(True,) * 5, values=(0.1,) * 5)
        f = clipped_failed.get(opt, (True,) * 5)
        rows += runs(optimizer=opt, lr=lr, label=stage1.CANONICAL, failed=f, values=(0.98,) * 5)
    return pd.DataFrame(rows)


def test_q2_pools_the_failing_cells_and_uses_mcnemar():
    rescued = stage2.q2_stable_range(failing_table({"sgd": (False,) * 5, "momentum": (False,) + (True,) * 4}))
    assert rescued.verdict == "clipping rescues training" and rescued.effect.p == pytest.approx(2 * 0.5**6)
    assert "rescued 6, broken 0" in rescued.numbers and rescued.effect.n == 20
    nothing = stage2.q2_stable_range(failing_table({}))
    # every run of both arms failed: the contrast cannot tell whether clipping helps, and says so
    assert nothing.verdict.startswith("uninformative: no run of either arm learned") and nothing.effect.p == 1.0
    assert "per optimizer (secondary, Holm): sgd rescued 5 of 5, broken 0" in rescued.numbers
    assert rescued.per_optimizer == {"sgd": (0, 5, 5), "momentum": (0, 1, 5), "rmsprop": (0, 0, 5), "adam": (0, 0, 5)}


def test_q3_reads_the_detector_at_its_unstable_rate_with_the_probe_threshold():
    base = runs(task="detector", optimizer="adam", lr=0.01, values=(0.0, 0.55, 0.0, 0.6, 0.58), metric="final_AP")
    better = runs(
        task="detector",
        optimizer="adam",
        lr=0.01,
        label=stage2.PROBE_MEDIAN,
        metric="final_AP",
        values=(0.60, 0.62, 0.59, 0.63, 0.61),
    )
    answer = stage2.q3_detector(pd.DataFrame(base + better))
    assert answer.verdict == "inconclusive"  # two seeds rescued, three equal: the interval crosses 0
    best = runs(task="detector", optimizer="adam", lr=0.01, values=(0.0, 0.0, 0.01, 0.0, 0.02), metric="final_AP")
    answer = stage2.q3_detector(pd.DataFrame(best + better))
    assert answer.verdict == "clipping better" and answer.effect.n == 5


def test_q4_chooses_the_adding_rate_on_validation_and_reads_it_and_the_next_one():
    explore = []
    for lr, val in zip(stage2.ADDING_RATES, (0.05, 0.30, -1e30)):
        explore += runs(task="adding", lr=lr, seeds=(0, 1), values=(val, val), metric="final_val_r2")
    table = pd.DataFrame(explore)
    assert stage2.adding_tuned_rate(table) == 0.03
    confirm = []
    for lr in (0.03, 0.1):
        confirm += runs(task="adding", lr=lr, failed=(True,) * 5, metric="final_test_r2", values=(0.0,) * 5)
        confirm += runs(task="adding", lr=lr, label=stage1.CANONICAL, metric="final_test_r2", values=(0.3,) * 5)
    answer = stage2.q4_positive_control(pd.concat([table, pd.DataFrame(confirm)], ignore_index=True))
    assert answer.verdict == "clipping rescues training" and answer.effect.n == 10
    assert "lr=0.03, 0.1" in answer.tested_where


def test_q4_is_uninformative_where_no_run_of_either_arm_learned_and_counts_each_kind():
    """Stage 2's positive control as published: unclipped runs diverged or stalled, clipped runs stalled, and
    the best test MSE (0.149) no better than a model that finds one of the two values (1/12): the contrast says
    so instead of "no significant difference", and its numbers count diverged, stalled and learned apart."""
    explore = runs(task="adding", lr=0.01, seeds=(0, 1), values=(0.05, 0.05), metric="final_val_r2")
    confirm = []
    for lr in (0.01, 0.03):
        diverged = (True, False, True, False, False) if lr == 0.03 else (False,) * 5
        base = runs(task="adding", lr=lr, failed=(True,) * 5, metric="final_test_mse", values=(0.16,) * 5)
        confirm += [{**r, "diverged": d} for r, d in zip(base, diverged)]
        confirm += runs(task="adding", lr=lr, label=stage1.CANONICAL, failed=(True,) * 4 + (False,),
                        metric="final_test_mse", values=(0.16,) * 4 + (0.149,), diverged=False,
                        clip_fraction=0.4)  # fmt: skip
    for r in confirm:
        r["failure"] = "diverged: non-finite" if r["diverged"] else ("collapsed: r2" if r["failed"] else None)
    answer = stage2.q4_positive_control(pd.concat([pd.DataFrame(explore), pd.DataFrame(confirm)], ignore_index=True))
    assert answer.verdict.startswith("uninformative: no run of either arm learned (best test MSE 0.149")
    assert "outcomes unclipped: 2 diverged, 8 stalled; clipped: 8 stalled, 2 learned" in answer.numbers
    assert "the clipped arm clipped 40.0% of steps" in answer.numbers


# --- a complete confirmatory answer decides its claim, by the rule written beside DECIDED_BY --------------


def answer(question, verdict, complete=True):
    return stage2.Answer(question, verdict, f"numbers of {question}", None, "", complete)


def q1_answers(verdicts, complete=True):
    return {f"Q1 {o}": answer(f"Q1 {o}", v, complete) for o, v in zip(("sgd", "momentum", "rmsprop", "adam"), verdicts)}


SAME = "no meaningful difference (within ±0.002)"


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        (["clipping better", SAME, SAME, SAME], "supported"),
        ([SAME] * 4, "supported"),
        (["clipping better", "clipping worse", SAME, SAME], "refuted"),
        (["clipping better", "inconclusive", SAME, SAME], "inconclusive"),
    ],
)
def test_claim_7_is_decided_per_optimizer_by_q1(verdicts, expected):
    verdict, words, question = claims._claim_7_from(q1_answers(verdicts))
    assert (verdict, question) == (expected, "Q1")
    if expected == "refuted":
        assert words == "worse at tuned rates with momentum"


def test_an_incomplete_answer_leaves_the_claim_to_stage_1():
    assert claims._claim_7_from(q1_answers([SAME] * 4, complete=False)) is None
    assert claims._claim_3a_from({"Q4": answer("Q4", "clipping rescues training", complete=False)}) is None
    assert claims._claim_8_from({}) is None


@pytest.mark.parametrize(
    "q4, expected",
    [
        ("clipping rescues training", "supported"),
        ("clipping harms training", "refuted"),
        ("no significant difference in failures", "inconclusive"),
        ("inconclusive: no unclipped run failed", "inconclusive"),
    ],
)
def test_claim_3a_is_decided_by_the_positive_control(q4, expected):
    verdict, words, question = claims._claim_3a_from(
        {"Q4": answer("Q4", q4), "Q2": answer("Q2", "clipping rescues training")}
    )
    assert (verdict, question) == (expected, "Q4")
    assert "the classifier at its failing rates: clipping rescues training, pooled" in words


@pytest.mark.parametrize(
    "q3, expected",
    [
        ("clipping better", "supported"),
        ("clipping worse", "refuted"),
        ("no meaningful difference (within ±0.01)", "refuted"),
        ("inconclusive", "inconclusive"),
    ],
)
def test_claim_8_is_decided_by_the_detector_at_its_unstable_rate(q3, expected):
    verdict, words, _ = claims._claim_8_from({"Q3": answer("Q3", q3)})
    assert verdict == expected
    if expected == "refuted" and "within" in q3:
        assert words == "no effect on the detector at its unstable rate (within ±0.01 AP)"


def test_the_study_audit_lets_a_complete_q1_decide_claim_7_and_keeps_stage_1_beside_it():
    table = q1_table((0.9801, 0.9809, 0.9821, 0.9829, 0.9841)).assign(
        method="x", clip_fraction=0.5, failure=None, diverged=False
    )
    epochs = pd.DataFrame(columns=["run_id", "step", "test_accuracy"])
    audited = claims.study_audit(table, epochs).set_index("claim")
    assert audited.loc["7", "decided_by"] == "stage 2 (Q1)"
    assert audited.loc["7", "verdict"] == "supported"
    assert audited.loc["7", "stage1_verdict"] == "inconclusive"  # stage 1 has no runs in this table
    assert audited.loc["1", "decided_by"] == "stage 1"
    # where the deciding test ran comes first, each optimizer's arms at their own rates; then stage 1's
    where = audited.loc["7", "tested_where"]
    assert where.startswith("stage 2: classifier, sgd: global_norm (threshold=1) at lr=")
    assert "; stage 1: classifier, 3 epochs" in where and where.count("classifier, ") == 5
    assert not audited.loc["1", "tested_where"].startswith("stage")


@pytest.mark.parametrize(
    "fractions, words",
    [
        ([0.05, 0.05], "clipped 5.0% of steps"),
        ([0.0, 0.0], "never clipped a step"),
        ([0.042, 0.056], "clipped 4.2% to 5.6% of steps"),
        ([0.998, 1.0], "clipped 99.8% to 100.0% of steps: gradient normalisation, not occasional clipping"),
        ([0.318, 0.999], "clipped 31.8% to 99.9% of steps (up to 99.9%: normalisation in some runs)"),
        # a run that never clipped beside one that normalised: a range, not "never clipped" (the words said that)
        ([0.0, 0.5, 0.999], "clipped 0.0% to 99.9% of steps (up to 99.9%: normalisation in some runs)"),
        # a share above 0 that one decimal would print as 0.0%: two significant digits (1 step in 2,814)
        ([1 / 2814, 5 / 2814], "clipped 0.036% to 0.2% of steps"),
        ([1 / 2814, 1 / 2814], "clipped 0.036% of steps"),
    ],
)
def test_the_clipped_arms_share_of_clipped_steps_in_words(fractions, words):
    assert stage2.clip_share(pd.DataFrame({"clip_fraction": fractions})) == words


def test_claim_8_decided_by_q8_keeps_stage_1s_stable_rate_beside_it():
    """Claim 8 asks for the classifier's pattern (rescue at the unstable rate, no cost at the stable one); Q8 tests
    the unstable rate only, so stage 1's words at the stable rate stay beside its verdict."""
    table = q1_table((0.9801, 0.9809, 0.9821, 0.9829, 0.9841)).assign(
        method="x", clip_fraction=0.5, failure=None, diverged=False
    )
    epochs = pd.DataFrame(columns=["run_id", "step", "test_accuracy"])
    q8 = stage2.Answer("Q8", "clipping prevents collapse", "numbers of Q8", None, "detector", True, stage=3)
    audited = claims.study_audit(table, epochs, later=[q8]).set_index("claim")
    assert audited.loc["8", "decided_by"] == "stage 3 (Q8)" and audited.loc["8", "verdict"] == "supported"
    stage1 = audited.loc["8", "stage1_words"]
    assert audited.loc["8", "words"] == (
        f"prevents collapses on the detector at its unstable rate; at its stable rate (Adam 3e-3), stage 1 "
        f"(exploratory): {stage1}"
    )
    assert "stable rate" not in audited.loc["7", "words"]  # only where a setting is left to stage 1
