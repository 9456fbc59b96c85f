"""Stage 3's registered questions (Q5-Q7) reach their answers on hand-built run tables, checked against
independent references: exact McNemar by hand (11 of 11 discordant pairs one way: p = 2 · 0.5¹¹), SciPy's paired
t-test, Holm by hand; and a complete answer decides its claim while an incomplete one decides nothing."""

import json
import math

import pandas as pd
import pytest
from scipy import stats as sps

from clipstudy.analysis import claims, contrasts, stage1, stage2, stage3_answers
from clipstudy.analysis.stage1 import CANONICAL
from clipstudy.analysis.stage3_answers import ADAPTIVE

ADDING_SEEDS = claims.STAGE3_SEEDS["adding"]
SGD_SEEDS = claims.STAGE3_SEEDS["sgd"]
ZEN3 = stage3_answers.platform_key({"cpu_vendor": "AuthenticAMD", "cpu_family": "25", "cpu_model": "1",
                                    "onednn_isa": "avx2"})  # fmt: skip
ZEN5 = stage3_answers.platform_key({"cpu_vendor": "AuthenticAMD", "cpu_family": "26", "cpu_model": "2",
                                    "onednn_isa": "avx512_core_bf16"})  # fmt: skip
GRID_KEY = json.dumps({"batch_size": 128, "epochs": 3, "eval_every": 215, "validation": 5000}, sort_keys=True)


def adding_run(label, lr, seed, mse, diverged=False, platform=ZEN3, clip=0.05):
    return {"run_id": f"add-{label}-{lr}-{seed}", "task": "adding", "optimizer": "sgd", "learning_rate": lr,
            "seed": seed, "label": label, "settings_key": "{}", "spiked": False, "steps_planned": 10_000,
            "final_test_mse": mse, "diverged": diverged, "failure": "diverged: non-finite" if diverged else None,
            "final_train_loss": 0.01, "loss_start": 1.0, "platform": platform, "clip_fraction": clip}  # fmt: skip


def classifier_run(label, opt, lr, seed, acc, steps_to_98=430.0, platform=ZEN3, clip=0.05):
    return {"run_id": f"cls-{label}-{opt}-{lr}-{seed}", "task": "classifier", "optimizer": opt, "learning_rate": lr,
            "seed": seed, "label": label, "settings_key": GRID_KEY, "spiked": False, "steps_planned": 1290,
            "final_test_accuracy": acc, "steps_to_98": steps_to_98, "diverged": False, "failure": None,
            "final_train_loss": 0.05, "loss_start": 2.3, "platform": platform, "clip_fraction": clip}  # fmt: skip


def q5a_table(seeds=ADDING_SEEDS, crossed_seed=None):
    """Unclipped at 0.03 diverges in the first 11 seeds; global norm 1 never; quantile diverges where none does
    in seed 12 only."""
    lr = claims.STAGE3_ADDING_DIVERGING
    rows = []
    for i, seed in enumerate(seeds):
        rows.append(adding_run("none", lr, seed, 1e21 if i < 11 else 0.02, diverged=i < 11))
        rows.append(adding_run(CANONICAL, lr, seed, 0.015, platform=ZEN5 if seed == crossed_seed else ZEN3))
        rows.append(adding_run(ADAPTIVE, lr, seed, 0.012 if i != 0 else 5.0, diverged=False))
    return pd.DataFrame(rows)


def test_q5a_counts_divergences_with_exact_mcnemar_on_every_registered_seed():
    primary, secondary = stage3_answers.q5a_divergence(q5a_table())
    assert primary.complete and primary.stage == 3
    assert primary.verdict == "clipping prevents divergence"
    assert math.isclose(primary.effect.p, 2 * 0.5**11)
    assert "diverged unclipped 11 of 19, clipped 0 of 19; prevented 11, caused 0" in primary.numbers
    assert "19 of 19 registered seeds paired" in primary.numbers
    assert secondary.question == "Q5a (secondary)" and "prevented 11" in secondary.numbers


def test_q5a_decides_nothing_until_every_registered_seed_is_in():
    (primary, _) = stage3_answers.q5a_divergence(q5a_table(seeds=ADDING_SEEDS[:-1]))
    assert not primary.complete
    assert primary.verdict == "incomplete (18 of 19 registered seeds paired): decides nothing yet"


def test_a_pair_made_on_two_cpus_is_refused_and_counted():
    table = q5a_table(crossed_seed=20)
    p, refused = stage3_answers.paired(table, (CANONICAL, 0.03), ("none", 0.03))
    assert refused == 1 and 20 not in set(p["seed"]) and len(p) == 18
    (primary, _) = stage3_answers.q5a_divergence(table)
    assert not primary.complete
    assert "1 pair(s) refused: their runs record different platforms" in primary.numbers


def test_a_run_without_a_recorded_platform_is_not_refused():
    table = q5a_table()
    table.loc[table["label"] == "none", "platform"] = stage3_answers.UNKNOWN_PLATFORM
    assert stage3_answers.paired(table, (CANONICAL, 0.03), ("none", 0.03))[1] == 0


def test_a_diverged_run_scores_the_worst_mse_of_its_contrast_and_is_never_averaged():
    p = pd.DataFrame({"final_test_mse": [0.01, 1e21], "outcome": ["learned", "diverged"],
                      "final_test_mse_base": [0.02, 0.03], "outcome_base": ["learned", "learned"]})  # fmt: skip
    arm, base = stage3_answers.scored_mse(p)
    assert list(arm) == [0.01, 0.03] and list(base) == [0.02, 0.03]


def test_steps_to_validation_mse_count_from_step_0_and_never_reaching_scores_the_budget():
    s = pd.DataFrame({"run_id": ["a", "b"]})
    epochs = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 2, "step": [250, 500, 750, 250, 500],
                           "val_mse": [0.2, 0.06, 0.04, 0.3, 0.2]})  # fmt: skip
    got = stage3_answers.with_steps_to_mse(s, epochs, 0.05, 10_000)
    assert list(got["steps_to_val_mse"]) == [750.0, 10_000.0]


def q5b_table():
    tuned = claims.STAGE3_ADDING_TUNED
    rows = []
    for i, seed in enumerate(ADDING_SEEDS):
        rows.append(adding_run("none", tuned["none"], seed, 0.020 + 0.001 * (i % 5)))
        rows.append(adding_run(CANONICAL, tuned[CANONICAL], seed, 0.015 + 0.0012 * (i % 4)))
        rows.append(adding_run(ADAPTIVE, tuned[ADAPTIVE], seed, 0.020 + 0.001 * (i % 5) + 0.0001 * (i % 3)))
    return pd.DataFrame(rows)


def test_q5b_compares_each_arm_at_its_tuned_rate_with_scipys_paired_t_and_holm_across_the_arms():
    table = q5b_table()
    epochs = pd.DataFrame({"run_id": list(table["run_id"]), "step": [250] * len(table),
                           "val_mse": [0.04] * len(table)})  # fmt: skip
    found = {a.question: a for a in stage3_answers.q5b_learning(table, epochs)}
    mse = found["Q5b global norm 1, final test MSE"]
    base = table[table["label"] == "none"].set_index("seed")["final_test_mse"]
    arm = table[table["label"] == CANONICAL].set_index("seed")["final_test_mse"]
    other = table[table["label"] == ADAPTIVE].set_index("seed")["final_test_mse"]
    p_gn = sps.ttest_rel(arm, base).pvalue
    p_q = sps.ttest_rel(other, base).pvalue
    assert math.isclose(mse.effect.p, p_gn, rel_tol=1e-9)
    assert mse.verdict == "lower test MSE with clipping"
    holm = min(1.0, 2 * min(p_gn, p_q))  # the smaller p times 2 (Holm's first step)
    assert f"Holm p={holm:.2g}" in mse.numbers
    # every run reached 0.05 at its first evaluation: no difference in steps, and it says so
    steps = found["Q5b global norm 1, steps to validation MSE 0.05"]
    assert steps.effect.mean == 0 and steps.verdict == "no significant difference"


def q6_table(sgd_delta, momentum_seeds=claims.STAGE3_SEEDS["momentum"]):
    rates = claims.STAGE3_CLASSIFIER_TUNED
    rows = []
    for i, seed in enumerate(SGD_SEEDS):
        base = 0.980 + 0.001 * (i % 7)
        rows.append(classifier_run("none", "sgd", rates["sgd"]["none"], seed, base, steps_to_98=860.0))
        rows.append(classifier_run(CANONICAL, "sgd", rates["sgd"][CANONICAL], seed,
                                   base + sgd_delta + 0.0004 * (i % 3), steps_to_98=math.nan))  # fmt: skip
    for i, seed in enumerate(momentum_seeds):
        rows.append(classifier_run("none", "momentum", rates["momentum"]["none"], seed, 0.985 + 0.0002 * (i % 3)))
        rows.append(classifier_run(CANONICAL, "momentum", rates["momentum"][CANONICAL], seed,
                                   0.985 + 0.0002 * ((i + 1) % 3)))  # fmt: skip
    return pd.DataFrame(rows)


def test_q6_reads_accuracy_with_its_margin_and_steps_to_98_with_a_miss_scoring_the_planned_steps():
    found = {a.question: a for a in stage3_answers.q6_tuned(q6_table(+0.003))}
    assert found["Q6 sgd"].verdict == "clipping better"
    assert found["Q6 momentum"].verdict == "no meaningful difference (within ±0.002)"
    # the clipped SGD runs never reached 98%: each scores its 1,290 planned steps against 860
    steps = found["Q6 sgd (steps to 98%)"]
    assert steps.effect.mean == 1290 - 860
    assert steps.verdict == "clipping reaches 98% later"


def test_q6_holm_runs_across_both_metrics_and_both_optimizers():
    table = q6_table(+0.003)
    answers = stage3_answers.q6_tuned(table)
    raw = [a.effect.p for a in answers]
    order = sorted(range(4), key=lambda i: raw[i])
    expected, running = [0.0] * 4, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * raw[i]))
        expected[i] = running
    for a, q in zip(answers, expected, strict=True):
        assert (f"Holm p={q:.2g}" in a.numbers) or (math.isnan(q) and "Holm p n/a" in a.numbers)


def test_q7_compares_each_percentile_with_the_fixed_1_and_names_normalisation():
    lr = claims.STAGE3_CLASSIFIER_TUNED["sgd"][CANONICAL]
    rows = []
    for i, seed in enumerate(SGD_SEEDS):
        fixed = 0.985 + 0.001 * (i % 5)
        rows.append(classifier_run(CANONICAL, "sgd", lr, seed, fixed))
        p50, p90 = stage3_answers.percentile_label(50), stage3_answers.percentile_label(90)
        rows.append(classifier_run(p50, "sgd", lr, seed, fixed - 0.004 + 0.0003 * (i % 3), clip=0.999))
        rows.append(classifier_run(p90, "sgd", lr, seed, fixed + 0.0002 * (i % 2 - 0.5)))
        rows.append(classifier_run(stage3_answers.percentile_label(99), "sgd", lr, seed, 0.1135, clip=0.003))
    table = pd.DataFrame(rows)
    found = {a.question: a for a in stage3_answers.q7_thresholds(table)}
    assert found["Q7 classifier sgd p50"].verdict == "p50 worse than the fixed 1"
    assert "gradient normalisation, not occasional clipping" in found["Q7 classifier sgd p50"].numbers
    assert found["Q7 classifier sgd p90"].verdict == "no significant difference"
    assert "outcomes of the arm: 30 learned; of the reference: 30 learned" in found["Q7 classifier sgd p90"].numbers
    assert found["Q7 classifier sgd p99"].verdict == "p99 worse than the fixed 1"
    assert not found["Q7 adding sgd p50"].complete  # no adding run in this table
    # the registered default: the best median metric among percentiles clipping at most 90% of steps
    chosen = stage3_answers.recommended_percentile(stage3_answers.claims.gather_evidence(table, table.iloc[0:0])
                                                   .summaries)  # fmt: skip
    assert chosen["classifier sgd"] == 90 and chosen["adding sgd"] is None


def q7_cells(sgd_p50_clip=0.999, adding_p99_learns=False):
    """Q7's three cells by hand: classifier SGD (p50 normalises, p90 learns, p99 never clips and stalls at chance),
    momentum (every percentile clips little and learns; p50 best), the adding problem (p50 and p90 normalise,
    p99 diverges in most seeds unless ``adding_p99_learns``)."""
    label = stage3_answers.percentile_label
    rows = []
    for opt, seeds in (("sgd", SGD_SEEDS), ("momentum", claims.STAGE3_SEEDS["momentum"])):
        lr = claims.STAGE3_CLASSIFIER_TUNED[opt][CANONICAL]
        for seed in seeds:
            rows.append(classifier_run(CANONICAL, opt, lr, seed, 0.986))
            if opt == "sgd":
                rows.append(classifier_run(label(50), opt, lr, seed, 0.980, clip=sgd_p50_clip))
                rows.append(classifier_run(label(90), opt, lr, seed, 0.986, clip=0.05))
                rows.append(classifier_run(label(99), opt, lr, seed, 0.1135, clip=0.0) | {"failure": "chance"})
            else:
                for pct, acc, clip in ((50, 0.989, 0.07), (90, 0.988, 0.01), (99, 0.987, 0.001)):
                    rows.append(classifier_run(label(pct), opt, lr, seed, acc, clip=clip))
    lr = claims.STAGE3_ADDING_TUNED[CANONICAL]
    for i, seed in enumerate(ADDING_SEEDS):
        rows.append(adding_run(CANONICAL, lr, seed, 0.02, clip=0.9))
        rows.append(adding_run(label(50), lr, seed, 0.03, clip=0.999))
        rows.append(adding_run(label(90), lr, seed, 0.03, clip=0.998))
        diverges = not adding_p99_learns and i % 3 != 0  # 12 of 19 diverge, or none
        rows.append(adding_run(label(99), lr, seed, 1e30 if diverges else 0.01, diverged=diverges, clip=0.06))
    return pd.DataFrame(rows)


def q7_evidence(table):
    return stage3_answers.claims.gather_evidence(table, table.iloc[0:0]).summaries


def test_q7_default_is_the_percentile_allowed_in_the_most_cells():
    s = q7_evidence(q7_cells())
    # allowed: clips at most 90% of steps (median) and most of its runs learned; scored by the median metric
    allowed = {
        "adding sgd": {},
        "classifier sgd": {90: 0.986},
        "classifier momentum": {50: 0.989, 90: 0.988, 99: 0.987},
    }
    assert stage3_answers.eligible_percentiles(s) == allowed
    assert stage3_answers.recommended_percentile(s) == {"adding sgd": None, "classifier sgd": 90,
                                                        "classifier momentum": 50}  # fmt: skip
    assert stage3_answers.default_percentile(s) == 90  # allowed in two cells, p50 and p99 in one


def test_q7_default_breaks_a_tie_towards_the_lower_percentile():
    # p99 learns on the adding problem: p90 (SGD, momentum) and p99 (momentum, adding) are allowed in two cells each
    s = q7_evidence(q7_cells(adding_p99_learns=True))
    assert stage3_answers.eligible_percentiles(s)["adding sgd"] == {99: -0.01}
    assert stage3_answers.default_percentile(s) == 90
    # p50 clips half of SGD's steps: p50 and p90 are allowed in two cells each (p99 in one)
    assert stage3_answers.default_percentile(q7_evidence(q7_cells(sgd_p50_clip=0.5))) == 50
    assert stage3_answers.default_percentile(q7_evidence(q7_cells().iloc[0:0])) is None


def test_the_probes_default_percentile_is_q7s_answer_on_the_published_runs():
    """``probe_threshold``'s default follows Q7's registered answer, read from the published bundle once every
    Q7 cell has all its registered seeds."""
    from clipstudy.analysis import report
    from clipstudy.clipping import probe

    rep = report.ProfileReport.load("paper")
    q7 = [a for a in rep.stage3_answers() if a.question.startswith("Q7")]
    assert len(q7) == 9 and all(a.complete for a in q7)
    assert probe.DEFAULT_PERCENTILE == stage3_answers.default_percentile(rep.evidence()) == 90


# --- a complete stage-3 answer decides its claim ----------------------------------------------------------


def answer(question, verdict, complete=True, stage=3):
    return stage2.Answer(question, verdict, f"numbers of {question}", None, "where", complete, stage=stage)


def q1(verdicts):
    return {f"Q1 {o}": answer(f"Q1 {o}", v, stage=2) for o, v in zip(("sgd", "momentum", "rmsprop", "adam"), verdicts)}


SAME = "no meaningful difference (within ±0.002)"


@pytest.mark.parametrize(
    "q5a, expected",
    [
        ("clipping prevents divergence", "supported"),
        ("clipping causes divergence", "refuted"),
        ("no significant difference in divergence", "inconclusive"),
    ],
)
def test_a_complete_q5a_decides_claim_3a_in_place_of_q4(q5a, expected):
    answers = {
        "Q4": answer("Q4", "uninformative: no run learned", stage=2),
        "Q5a": answer("Q5a", q5a),
        "Q5b global norm 1, final test MSE": answer("Q5b global norm 1, final test MSE", "lower test MSE"),
    }
    verdict, words, question = claims._claim_3a_from(answers)  # fmt: skip
    assert (verdict, question) == (expected, "Q5a")
    assert "; at tuned rates (global norm 1, final test MSE: lower test MSE)" in words
    answers["Q5b quantile, final test MSE"] = answer("Q5b quantile, final test MSE", "no significant difference")
    words = claims._claim_3a_from(answers)[1]
    # Q5b's answers are separated from each other by semicolons, inside one parenthesis
    both = "global norm 1, final test MSE: lower test MSE; quantile, final test MSE: no significant difference"
    assert f"; at tuned rates ({both})" in words


def test_an_incomplete_q5a_leaves_claim_3a_to_q4():
    answers = {
        "Q4": answer("Q4", "clipping rescues training", stage=2),
        "Q5a": answer("Q5a", "incomplete (3 of 19 registered seeds paired): decides nothing yet", False),
    }
    assert claims._claim_3a_from(answers)[2] == "Q4"  # fmt: skip


def test_a_complete_q6_replaces_q1s_sgd_and_momentum_answers_for_claim_7():
    answers = q1(["clipping better", "clipping better", SAME, SAME])
    answers["Q6 sgd"] = answer("Q6 sgd", "clipping worse")
    answers["Q6 momentum"] = answer("Q6 momentum", SAME)
    assert claims._claim_7_from(answers) == ("refuted", "worse at tuned rates with sgd", "Q6 + Q1")
    deciding = [a.question for a in claims._deciding(answers, "Q6 + Q1")]
    assert sorted(deciding) == ["Q1 adam", "Q1 rmsprop", "Q6 momentum", "Q6 sgd"]
    assert claims._stage_of("Q6 + Q1") == "stages 3 and 2 (Q6 + Q1)"
    assert claims._stage_of("Q8") == "stage 3 (Q8)" and claims._stage_of("Q3") == "stage 2 (Q3)"
    answers["Q6 momentum"] = answer("Q6 momentum", SAME, complete=False)
    assert claims._claim_7_from(answers)[2] == "Q1"  # half of Q6 is not enough


def test_the_paper_profile_plans_q8_as_registered():
    """Q8's 76 runs: each of the four arms (clipping × warm-up) at Adam 1e-2 on each registered seed, with stage 2's
    detector settings; no earlier run's id moved (a run without warm-up leaves warmup_steps out of its id)."""
    from clipstudy.study.profiles import load_profile

    _, specs = load_profile("paper")
    q8 = [s.config for s in specs if s.config.task == "detector" and s.config.seed in claims.STAGE3_DETECTOR_SEEDS]
    arms = {("none" if c.method == "none" else stage1.DETECTOR_CLIP, c.warmup_steps) for c in q8}
    assert arms == set(claims.STAGE3_DETECTOR_ARMS) and len(q8) == 4 * len(claims.STAGE3_DETECTOR_SEEDS) == 76
    assert {(c.optimizer, c.learning_rate, c.epochs, c.batch_size, c.dataset) for c in q8} == {
        ("adam", 0.01, 3, 32, "full")
    }
    earlier = [s for s in specs if s.config.warmup_steps == 0]
    assert all("warmup_steps" not in s.config.to_params() for s in earlier)


def detector_run(label, seed, collapsed, warmup=0, platform=ZEN3, ap=0.58):
    key = {"batch_size": 32, "dataset": "full", "epochs": 3, "eval_every": 470, "validation": 1000}
    key.update({"warmup_steps": warmup} if warmup else {})
    return {"run_id": f"det-{label}-{warmup}-{seed}", "task": "detector", "optimizer": "adam", "learning_rate": 0.01,
            "seed": seed, "label": contrasts.run_label(label, "-", warmup), "spiked": False,
            "settings_key": json.dumps(key, sort_keys=True),
            "final_AP": 1e-5 if collapsed else ap, "final_AP50": 1e-4 if collapsed else 0.93, "diverged": False,
            "failure": "AP50 below 0.01" if collapsed else None, "final_train_loss": 3.2 if collapsed else 0.7,
            "loss_start": 4.0, "platform": platform, "clip_fraction": 0.001 if label != "none" else 0.0}  # fmt: skip


def test_q8_counts_collapses_and_pairs_the_warm_up_arms_by_seed_across_their_settings():
    """Unclipped collapses in 14 of 19 seeds, global norm 10 in 3 (two of them where none did too): prevented 12,
    caused 1, exact McNemar p = 2 · (1 + 13) / 2¹³; the warm-up arms, whose settings differ, still pair by seed."""
    seeds = claims.STAGE3_DETECTOR_SEEDS
    rows = []
    for i, seed in enumerate(seeds):
        rows.append(detector_run("none", seed, collapsed=i < 14))
        rows.append(detector_run(stage1.DETECTOR_CLIP, seed, collapsed=i in (0, 1, 18)))
        rows.append(detector_run("none", seed, collapsed=i < 2, warmup=claims.STAGE3_WARMUP_STEPS))
        rows.append(detector_run(stage1.DETECTOR_CLIP, seed, collapsed=False, warmup=claims.STAGE3_WARMUP_STEPS))
    found = {a.question: a for a in stage3_answers.q8_detector(pd.DataFrame(rows))}
    primary = found["Q8"]
    assert primary.complete and primary.verdict == "clipping prevents collapse"
    assert math.isclose(primary.effect.p, 2 * 14 / 2**13)
    assert "collapsed unclipped 14 of 19, clipped 3 of 19; prevented 12, caused 1" in primary.numbers
    assert "global norm 10: 16 of 19 learned (final_AP median 0.580" in primary.numbers
    warm = found["Q8 (warm-up vs clipping)"]
    assert "collapsed global norm 10 3 of 19, warm-up 2 of 19" in warm.numbers and warm.effect.n == 19
    assert "the warm-up arm never clipped a step" in warm.numbers
    assert warm.verdict == "no significant difference in collapse"


def test_a_complete_q8_decides_claim_8_in_place_of_q3():
    answers = {
        "Q3": answer("Q3", "inconclusive", stage=2),
        "Q8": answer("Q8", "clipping prevents collapse"),
        "Q8 (warm-up vs clipping)": answer("Q8 (warm-up vs clipping)", "no significant difference in collapse"),
    }
    verdict, words, question = claims._claim_8_from(answers)  # fmt: skip
    assert (verdict, question) == ("supported", "Q8")
    assert words.endswith("; warm-up vs clipping: no significant difference in collapse")
    answers["Q8"] = answer("Q8", "incomplete (3 of 19 registered seeds paired): decides nothing yet", False)
    assert claims._claim_8_from(answers)[2] == "Q3"


def test_no_mcnemar_p_value_from_fewer_than_five_pairs():
    (primary, _) = stage3_answers.q5a_divergence(q5a_table(seeds=ADDING_SEEDS[:3]))
    assert "exact McNemar p n/a (fewer than 5 pairs), n=3" in primary.numbers and math.isnan(primary.effect.p)


def q8_table(collapsed_when, ap_of=lambda arm, i: 0.58, seeds=claims.STAGE3_DETECTOR_SEEDS):
    """Q8's four arms on ``seeds``; ``collapsed_when[arm](i)`` says whether the arm's run of the i-th seed collapsed,
    ``ap_of(arm, i)`` its final AP when it learned."""
    rows = []
    for i, seed in enumerate(seeds):
        for arm in claims.STAGE3_DETECTOR_ARMS:
            rows.append(detector_run(arm[0], seed, collapsed_when[arm](i), warmup=arm[1], ap=ap_of(arm, i)))
    return pd.DataFrame(rows)


NONE_ARM, CLIP_ARM, WARM_ARM, BOTH_ARM = claims.STAGE3_DETECTOR_ARMS


def test_q8_pairs_the_ap_of_runs_that_both_learned_against_scipy_with_holm_across_the_contrasts():
    """Collapses as many with warm-up as with clipping (seeds 0-2), so the AP where both learned decides which
    first: warm-up's AP is higher in 16 pairs (SciPy's paired t); Holm across the three contrasts by hand."""
    jitter = [0.004 * ((7 * i) % 5) for i in range(19)]
    base = {NONE_ARM: 0.50, CLIP_ARM: 0.55, WARM_ARM: 0.60, BOTH_ARM: 0.60}
    shift = {NONE_ARM: 1, CLIP_ARM: 3, WARM_ARM: 0, BOTH_ARM: 3}
    ap_of = lambda arm, i: base[arm] + jitter[(i + shift[arm]) % 19]  # noqa: E731
    collapsed = {NONE_ARM: lambda i: i < 14, CLIP_ARM: lambda i: i < 3, WARM_ARM: lambda i: i < 3,
                 BOTH_ARM: lambda i: i < 3}  # fmt: skip
    found = {a.question: a for a in stage3_answers.q8_detector(q8_table(collapsed, ap_of))}
    diffs = {  # arm − reference over the pairs where both learned
        "Q8": [ap_of(CLIP_ARM, i) - ap_of(NONE_ARM, i) for i in range(14, 19)],
        "Q8 (warm-up vs clipping)": [ap_of(WARM_ARM, i) - ap_of(CLIP_ARM, i) for i in range(3, 19)],
        "Q8 (warm-up + clipping vs warm-up)": [ap_of(BOTH_ARM, i) - ap_of(WARM_ARM, i) for i in range(3, 19)],
    }
    raw = {q: sps.ttest_1samp(d, 0).pvalue for q, d in diffs.items()}
    order = sorted(raw, key=raw.get)
    holm = {}
    for rank, q in enumerate(order):
        holm[q] = max([min(1.0, (3 - rank) * raw[q])] + [holm[o] for o in order[:rank]])
    for q, d in diffs.items():
        shown = f"final_AP {sum(d) / len(d):+.4f} ["
        assert shown in found[q].numbers and f"n={len(d)}, Holm p={holm[q]:.2g}" in found[q].numbers, q
    first = found["Q8 (which first)"]
    assert first.complete and first.effect is None
    # a stage-3 question, as every Q8 row: the claims table's "where" names its stage (it said "stage 2" once)
    assert {a.stage for a in found.values()} == {3} and first.per_optimizer == {}
    assert first.verdict.startswith("warm-up first: as many collapses, a higher AP@[.5:.95] where both learned")
    assert first.verdict.endswith("changed collapses by no significant amount")


def test_q8_which_first_follows_collapses_before_ap_and_says_when_neither():
    all_ap = lambda arm, i: 0.58  # noqa: E731
    # global norm 10 collapses in 12 seeds, warm-up in none: warm-up first (exact McNemar 2·0.5¹², Holm ×3)
    collapsed = {NONE_ARM: lambda i: i < 14, CLIP_ARM: lambda i: i < 12, WARM_ARM: lambda i: False,
                 BOTH_ARM: lambda i: False}  # fmt: skip
    found = {a.question: a for a in stage3_answers.q8_detector(q8_table(collapsed, all_ap))}
    assert found["Q8 (warm-up vs clipping)"].verdict == "fewer collapses with warm-up than with global norm 10"
    assert "Holm-adjusted 0.0015" in found["Q8 (warm-up vs clipping)"].numbers  # 3 · 2 · 0.5¹² = 0.00146
    assert found["Q8 (which first)"].verdict.startswith("warm-up first: it collapsed significantly less often")
    # the reverse, and clipping added to the warm-up rescues it: global norm 10 first, add it to the warm-up
    collapsed = {NONE_ARM: lambda i: i < 14, CLIP_ARM: lambda i: False, WARM_ARM: lambda i: i < 12,
                 BOTH_ARM: lambda i: False}  # fmt: skip
    found = {a.question: a for a in stage3_answers.q8_detector(q8_table(collapsed, all_ap))}
    verdict = found["Q8 (which first)"].verdict
    assert verdict.startswith("global norm 10 first") and "; add global norm 10 to the warm-up" in verdict
    assert found["Q8 (warm-up + clipping vs warm-up)"].verdict == (
        "fewer collapses with warm-up + global norm 10 than with warm-up"
    )
    # as many collapses and the same AP: neither first
    collapsed = {NONE_ARM: lambda i: i < 14, CLIP_ARM: lambda i: i < 2, WARM_ARM: lambda i: 1 <= i < 3,
                 BOTH_ARM: lambda i: i < 2}  # fmt: skip
    found = {a.question: a for a in stage3_answers.q8_detector(q8_table(collapsed, all_ap))}
    assert found["Q8 (which first)"].verdict.startswith("neither first")
    # with seeds missing, nothing is read
    few = q8_table(collapsed, all_ap, seeds=claims.STAGE3_DETECTOR_SEEDS[:4])
    first = {a.question: a for a in stage3_answers.q8_detector(few)}["Q8 (which first)"]
    assert not first.complete and first.verdict.startswith("incomplete")
