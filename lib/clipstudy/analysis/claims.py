"""The claims table: each claim's verdict in force, from stage 1's audit (``stage1``) or, where a complete later
answer speaks to it, from that answer (stage 2's questions in ``stage2``, stage 3's in ``stage3_answers``, by the
rules below); stage 3's registered design; the design history; and the headline figure's rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from clipstudy.analysis.stage1 import (
    CANONICAL,
    CLAIMS,
    DETECTOR_CLIP,
    STAGE1_MARGINS,
    STAGE1_METRICS,
    audit,
    gather_evidence,
)
from clipstudy.analysis.stage2 import CONFIRM_MARGINS, CONFIRM_SEEDS, Answer, confirmatory_answers
from clipstudy.fileio import atomic_target

# --- stage 3: registered before its first confirmatory run (docs/protocol.md, "Stage 3") -----------------
#
# The cells below are the exploratory calibration's choices (seeds 10-11, analysis.stage3), the seeds come from
# the power calculation (analysis.power), both computed from the bundle with all 90 calibration runs in and
# committed with the paper profile's stage-3 experiments, before any of their runs. Every pair must share its
# recorded platform (the analysis refuses one that does not); outcomes are diverged / stalled / learned.
STAGE3_SEEDS = {"adding": tuple(range(12, 31)), "sgd": tuple(range(12, 42)), "momentum": tuple(range(12, 23))}
#: Q5, the positive control (adding problem, T = 50, 10,000 SGD steps): each arm's tuned rate, the best adaptive
#: method of the calibration, and the lowest rate where an unclipped calibration run diverged (Q5a's cell).
STAGE3_ADDING_TUNED = {"none": 0.01, CANONICAL: 0.03, "quantile (initial_threshold=0.1, learning_rate=0.2, "
                       "target_quantile=0.5)": 0.03}  # fmt: skip
STAGE3_ADDING_DIVERGING = 0.03
#: Q5b's second endpoint: steps until the validation MSE first falls below this (from step 0).
STAGE3_ADDING_TARGET_MSE = 0.05
#: Q6, tuned against tuned on the refined grid (classifier, 3 epochs): each arm's tuned rate per optimizer.
STAGE3_CLASSIFIER_TUNED = {"sgd": {"none": 0.3, CANONICAL: 1.0}, "momentum": {"none": 0.03, CANONICAL: 0.1}}
#: Q7, which threshold: the probe's percentiles, each against the fixed 1 at the clipped arm's tuned rate.
STAGE3_PERCENTILES = (50, 90, 99)
#: Q8, the unstable detector (registered with its power calculation before its first run; docs/protocol.md):
#: Adam 1e-2, stage 2's settings (30,000 canvases, 3 epochs, batch 32), four arms: none, YOLO's global norm 10,
#: a linear learning-rate warm-up without clipping, and the warm-up with global norm 10. The warm-up length: every
#: published collapse at this rate is visible by step 50 (training loss >= 3.4 there in every collapsed run, <=
#: 2.95 in every run that learned; the largest norm at steps 2 to 7), so 300 steps (a third of an epoch, six
#: times that) keep the rate below a sixth of 1e-2 through it. Seeds 12-30: 19 for 80% power against collapse
#: rates 0.7 and 0.2 with the exact McNemar test (analysis.power).
STAGE3_DETECTOR = {"task": "detector", "optimizer": "adam", "learning_rate": 0.01}
STAGE3_WARMUP_STEPS = 300
STAGE3_DETECTOR_SEEDS = tuple(range(12, 31))
STAGE3_DETECTOR_ARMS = (("none", 0), (DETECTOR_CLIP, 0), ("none", STAGE3_WARMUP_STEPS),
                        (DETECTOR_CLIP, STAGE3_WARMUP_STEPS))  # fmt: skip

#: Every change made to the paper profile's design after its first run was committed (9c5090a, 2026-11-28
#: 19:28 UTC), with the commit that made it: design_changes.yaml beside this module. The report shows this table.
DESIGN_CHANGES = yaml.safe_load((Path(__file__).parent / "design_changes.yaml").read_text(encoding="utf-8"))


# --- which confirmatory answer decides which claim ------------------------------------------------------
#
# Written after 48 of the 156 confirmatory runs were in the bundle, before any answer had been computed from
# them (disclosed in the report). An answer decides a claim only when it is complete (every cell it reads has
# its five seeds); until then the claim keeps stage 1's verdict, and the table says so.
#   claim 7 (combines with SGD, momentum, RMSprop, Adam) <- Q1, per optimizer: refuted if clipping is worse
#     with any optimizer; supported if it is better or within the margin with every one; else inconclusive.
#   claim 3a (prevents exploding gradients) <- Q4, the positive control (a vanilla RNN on the adding problem):
#     supported if clipping rescues training, refuted if it harms it, inconclusive otherwise. Q2 (the
#     classifier at its failing rates) is reported beside it.
#   claim 8 (helps detection as classification) <- Q3: supported if clipping is better at the detector's
#     unstable rate, refuted if worse or within the margin; Q2, the classifier's pattern, is named beside it.
#
# Stage 3 (registered in 806d3ba; Q8 in e7c8b95): Q8 decides claim 8 in place of Q3 (supported if clipping
# prevents collapses, refuted if it causes them; its warm-up contrasts beside it); Q5a decides claim 3a in place of
# Q4 (supported if clipping prevents divergence, refuted if it causes it, inconclusive otherwise; Q5b beside it),
# and Q6 decides claim 7 for SGD and momentum in
# place of Q1's answers for them (Q1's RMSprop and Adam answers stand). Of Q6's co-primary metrics the final test
# accuracy is the one claim 7's rule reads (better / worse / within the margin); steps to 98% is reported beside
# it. This reading of "decides claim 7" was written down on 2026-12-04 (b0c5984) with 20 of stage 3's 338
# confirmatory runs in the bundle (3 SGD pairs: n = 3, no interval, no p-value) (design changes, the report).


def _per_optimizer_tuned(answers: dict[str, Answer]) -> tuple[dict[str, str], str] | None:
    """Each optimizer's tuned-against-tuned verdict: Q6's (stage 3, accuracy) for SGD and momentum once both are
    complete, Q1's otherwise; and the questions that gave them."""
    q1 = {q.removeprefix("Q1 "): a for q, a in answers.items() if q.startswith("Q1 ")}
    if len(q1) != 4 or not all(a.complete for a in q1.values()):
        return None
    opt = {o: a.verdict for o, a in q1.items()}
    q6 = {o: answers.get(f"Q6 {o}") for o in STAGE3_CLASSIFIER_TUNED}
    if all(a is not None and a.complete for a in q6.values()):
        opt.update({o: a.verdict for o, a in q6.items()})
        return opt, "Q6 + Q1"
    return opt, "Q1"


def _claim_7_from(answers: dict[str, Answer]) -> tuple[str, str, str] | None:
    found = _per_optimizer_tuned(answers)
    if found is None:
        return None
    opt, question = found
    worse = [o for o, v in opt.items() if v == "clipping worse"]
    better = [o for o, v in opt.items() if v == "clipping better"]
    same = [o for o, v in opt.items() if v.startswith("no meaningful difference")]
    margin = CONFIRM_MARGINS["final_test_accuracy"]
    if worse:
        return "refuted", f"worse at tuned rates with {', '.join(worse)}", question
    if len(better) + len(same) == 4:
        parts = ([f"better with {', '.join(better)}"] if better else []) + (
            [f"within ±{margin:g} with {', '.join(same)}"] if same else []
        )
        return "supported", "combines, each arm at its own tuned rate: " + "; ".join(parts), question
    undecided = [o for o in opt if o not in better + same]
    return "inconclusive", f"undecided with {', '.join(undecided)}", question


def _claim_3a_from(answers: dict[str, Answer]) -> tuple[str, str, str] | None:
    rnn = "on the adding problem (vanilla RNN)"
    q5a = answers.get("Q5a")
    if q5a is not None and q5a.complete:
        verdict, text = _in_words(q5a, "divergence", rnn, f"prevents divergence {rnn}", f"causes divergence {rnn}")
        q5b = [a for q, a in answers.items() if q.startswith("Q5b") and a.complete]
        if q5b:
            each = "; ".join(f"{a.question.removeprefix('Q5b ')}: {a.verdict}" for a in q5b)
            text += f"; at tuned rates ({each})"
        return verdict, text + _q2_beside(answers.get("Q2")), "Q5a"
    q4 = answers.get("Q4")
    if q4 is None or not q4.complete:
        return None
    words = {"clipping rescues training": ("supported", f"prevents divergence {rnn}"),
             "clipping harms training": ("refuted", f"causes failures {rnn}")}  # fmt: skip
    verdict, text = words.get(q4.verdict, ("inconclusive", f"{rnn}: {q4.verdict}"))
    return verdict, text + _q2_beside(answers.get("Q2")), "Q4"


def _in_words(answer: Answer, noun: str, where: str, prevents: str, causes: str) -> tuple[str, str]:
    """A claim's verdict and words from a complete McNemar answer (``clipping prevents/causes <noun>``)."""
    if answer.verdict == f"clipping prevents {noun}":
        return "supported", prevents
    if answer.verdict == f"clipping causes {noun}":
        return "refuted", causes
    return "inconclusive", f"{where}: {answer.verdict}"


def _claim_8_from(answers: dict[str, Answer]) -> tuple[str, str, str] | None:
    q8 = answers.get("Q8")
    if q8 is not None and q8.complete:
        where = "on the detector at its unstable rate"
        verdict, text = _in_words(q8, "collapse", where, f"prevents collapses {where}", f"causes collapses {where}")
        beside = [a for q, a in answers.items() if q.startswith("Q8 (") and a.complete]
        text += "".join(f"; {a.question.removeprefix('Q8 (').rstrip(')')}: {a.verdict}" for a in beside)
        return verdict, text + _q2_beside(answers.get("Q2")), "Q8"
    q3 = answers.get("Q3")
    if q3 is None or not q3.complete:
        return None
    if q3.verdict == "clipping better":
        verdict, text = "supported", "helps the detector at its unstable rate"
    elif q3.verdict == "clipping worse":
        verdict, text = "refuted", "hurts the detector at its unstable rate"
    elif q3.verdict.startswith("no meaningful difference"):
        within = q3.verdict.split("(")[-1].removesuffix(")")
        verdict, text = "refuted", f"no effect on the detector at its unstable rate ({within} AP)"
    else:
        verdict, text = "inconclusive", "undecided on the detector at its unstable rate"
    text += _q2_beside(answers.get("Q2"))
    return verdict, text, "Q3"


def _q2_beside(q2: Answer | None) -> str:
    """Q2, reported beside the claims it speaks to: its pooled verdict and its pairs per optimizer."""
    if q2 is None or not q2.complete:
        return ""
    per = ", ".join(
        f"{opt} {rescued} of {n}" + (f" ({broken} broken)" if broken else "")
        for opt, (broken, rescued, n) in q2.per_optimizer.items()
    )
    return f"; the classifier at its failing rates: {q2.verdict}, pooled" + (f" (rescued: {per})" if per else "")


DECIDED_BY = {"7": _claim_7_from, "3a": _claim_3a_from, "8": _claim_8_from}
#: Where a later question decides a claim at one setting, stage 1's words at the other, said beside it: claim 8
#: asks for the classifier's pattern on the detector (clipping rescues the unstable rate, costs nothing at the
#: stable one), and Q8 tests only the unstable rate.
STAGE1_BESIDE = {("8", "Q8"): "at its stable rate (Adam 3e-3), stage 1 (exploratory): "}


def _deciding(answers: dict[str, Answer], question: str) -> list[Answer]:
    """The answers behind a claim decided by ``question`` ("Q1", "Q5a", "Q6 + Q1": Q6's optimizers replace
    Q1's)."""
    asked = question.split(" + ")
    found = [a for q, a in answers.items() if q.split()[0] in asked and a.complete]
    if "Q6" in asked:
        found = [a for a in found if not (a.question.split()[0] == "Q1" and f"Q6 {a.question.split()[1]}" in answers)]
    return found


def _where_by_stage(deciding: list[Answer]) -> str:
    """Where the deciding answers were tested, by stage: ``'stage 3: A; B; stage 2: C'``."""
    stages = dict.fromkeys(a.stage for a in sorted(deciding, key=lambda a: -a.stage))
    return "; ".join(
        f"stage {k}: " + "; ".join(dict.fromkeys(a.tested_where for a in deciding if a.stage == k)) for k in stages
    )


def _stage_of(question: str) -> str:
    """``'stage 2 (Q1)'``, ``'stage 3 (Q5a)'``, ``'stages 3 and 2 (Q6 + Q1)'``: which registration decided."""
    stages = [3 if q.startswith(("Q5", "Q6", "Q7", "Q8")) else 2 for q in question.split(" + ")]
    word = f"stage {stages[0]}" if len(set(stages)) == 1 else "stages " + " and ".join(map(str, dict.fromkeys(stages)))
    return f"{word} ({question})"


def study_audit(
    summaries: pd.DataFrame,
    epochs: pd.DataFrame,
    overhead: pd.DataFrame | None = None,
    steps: pd.DataFrame | None = None,
    later: list[Answer] | None = None,
) -> pd.DataFrame:
    """The claims with every stage: stage 1's audit (``audit``), each claim's ``tested_where``, and, where a
    complete confirmatory answer speaks to the claim (stage 2's, or stage 3's given as ``later``), that answer's
    verdict, which then decides (``decided_by``). ``verdict``/``words`` are the deciding ones; ``stage1_*`` and
    ``confirmatory_*`` keep both."""
    table = audit(summaries, epochs, overhead, steps)
    table["tested_where"] = [c.tested_where for c in CLAIMS]
    table["stage1_verdict"], table["stage1_words"] = table["verdict"], table["words"]
    s = gather_evidence(summaries, epochs, overhead).summaries
    answers = {a.question: a for a in confirmatory_answers(s)} if (s["seed"].isin(CONFIRM_SEEDS)).any() else {}
    answers.update({a.question: a for a in later or []})
    decided = {cid: rule(answers) for cid, rule in DECIDED_BY.items()} if answers else {}
    conf_v, conf_w, conf_n, conf_where, by = [], [], [], [], []
    for c in table["claim"]:
        d = decided.get(c)
        if d is None:
            for column in (conf_v, conf_w, conf_n, conf_where):
                column.append("")
            by.append("stage 1")
            continue
        verdict, words, question = d
        deciding = _deciding(answers, question)
        if (c, question) in STAGE1_BESIDE:
            stage1_words = table.loc[table["claim"] == c, "stage1_words"].iloc[0]
            words += f"; {STAGE1_BESIDE[c, question]}{stage1_words}"
        conf_v.append(verdict)
        conf_w.append(words)
        conf_n.append("; ".join(a.numbers for a in deciding))
        conf_where.append(_where_by_stage(deciding))
        by.append(_stage_of(question))
    table["confirmatory_verdict"], table["confirmatory_words"] = conf_v, conf_w
    table["confirmatory_numbers"], table["decided_by"] = conf_n, by
    later_stage = table["decided_by"] != "stage 1"
    table.loc[later_stage, "verdict"] = table.loc[later_stage, "confirmatory_verdict"]
    table.loc[later_stage, "words"] = table.loc[later_stage, "confirmatory_words"]
    # where the deciding test ran, then stage 1's (the effect columns stay stage 1's: the headline reads them)
    where = pd.Series(conf_where, index=table.index)
    table.loc[later_stage, "tested_where"] = where[later_stage] + "; stage 1: " + table.loc[later_stage, "tested_where"]
    return table


CONFIRM_METRICS = {
    "Q1": "Δ final test accuracy",
    "Q2": "Δ failure rate",
    "Q3": "Δ final test AP",
    "Q4": "Δ failure rate",
    "Q5a": "Δ divergence rate",
    "Q6": "Δ final test accuracy",
    "Q8": "Δ collapse rate",
}
#: The claim each confirmatory question speaks to (Q2 is reported beside claim 3a, and decides nothing).
QUESTION_CLAIM = {"Q1": "7", "Q2": "3a", "Q3": "8", "Q4": "3a", "Q5a": "3a", "Q6": "7", "Q8": "8"}


def _in_headline(a: Answer, claim: str) -> bool:
    """A confirmatory answer has a headline row when it speaks to ``claim`` with an effect; a stage-3 answer only
    once complete, and only its primary accuracy or divergence contrast."""
    if QUESTION_CLAIM.get(a.question.split()[0]) != claim or a.effect is None:
        return False
    return a.stage < 3 or (a.complete and "(" not in a.question)


def headline(audit_table: pd.DataFrame, answers: list[Answer]) -> pd.DataFrame:
    """One row per primary effect for the headline (forest) figure: each claim's stage-1 effect, then the
    confirmatory answers that speak to it, with interval, margin, p and n. Claims decided by construction
    have no row."""
    rows = []
    for r in audit_table.itertuples():
        if r.kind == "by construction":
            continue
        superseded = str(getattr(r, "decided_by", "stage 1")) != "stage 1"
        rows.append(
            {
                "claim": r.claim,
                "row": f"claim {r.claim}",
                "stage": "stage 1 (exploratory)",
                "metric": STAGE1_METRICS.get(r.claim, "effect"),
                "effect": r.effect,
                "low": r.ci_low,
                "high": r.ci_high,
                "margin": STAGE1_MARGINS.get(r.claim, math.nan),
                "p": r.p_value,
                "n": int(r.n),
                "verdict": r.verdict,  # the verdict in force (the claims table's), whichever stage decided it
                "answer": "stage 1's effect" + (" (superseded)" if superseded else ""),
            }
        )
        rows += [_headline_answer(r, a) for a in answers if _in_headline(a, r.claim)]
    return pd.DataFrame(rows)


def _headline_answer(claim_row, a: Answer) -> dict:
    """The headline row of a confirmatory answer ``a`` that speaks to the claim of ``claim_row``."""
    q = a.question.split()[0]
    margin = (
        CONFIRM_MARGINS["final_test_accuracy"]
        if q in ("Q1", "Q6")
        else CONFIRM_MARGINS["final_AP"]
        if q == "Q3"
        else math.nan
    )
    return {
        "claim": claim_row.claim,
        "row": f"claim {claim_row.claim} · {a.question}",
        "stage": f"stage {a.stage} (confirmatory)",
        "metric": CONFIRM_METRICS[q],
        "effect": a.effect.mean,
        "low": a.effect.low,
        "high": a.effect.high,
        "margin": margin,
        "p": a.effect.p,
        "n": int(a.effect.n),
        "verdict": claim_row.verdict,
        "answer": f"{q}: {a.verdict.split(':')[0]}",
    }


def write_csv(audit: pd.DataFrame, path) -> None:
    """``claims.csv``, written to a temporary name, then renamed."""
    with atomic_target(path) as tmp:
        audit.to_csv(tmp, index=False)
