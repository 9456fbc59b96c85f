"""The README's findings block says each claim's evidence once, from its row of the claims table."""

import math

import pandas as pd

from clipstudy.analysis import summary


def row(**fields):
    base = {"claim": "3b", "text": "Clipping prevents vanishing gradients.", "verdict": "refuted", "n": 0,
            "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}  # fmt: skip
    return {**base, **fields}


def test_a_claim_decided_by_construction_says_so_once():
    audit = pd.DataFrame([row(kind="by construction", words="refuted by construction")])
    assert summary.findings_rows(audit)[0][3] == "refuted by construction"


def test_a_stage_1_claim_carries_its_effect_interval_p_and_n():
    audit = pd.DataFrame([row(claim="2", kind="statistical", verdict="inconclusive", words="no effect shown",
                              effect=0.0012, ci_low=-0.001, ci_high=0.0034, p_value=0.2, n=5)])  # fmt: skip
    because = summary.findings_rows(audit)[0][3]
    assert because == "no effect shown (stage 1 (exploratory): +0.0012 [-0.001, +0.0034], p=0.2, n=5)"


def test_the_verdicts_at_a_glance_name_the_stage_or_the_definitions_that_decided_each():
    audit = pd.DataFrame(
        [
            row(kind="by construction", words="refuted by construction", decided_by="stage 1"),
            row(claim="7", text="Clipping combines with SGD.", verdict="inconclusive", kind="data",
                decided_by="stage 2 (Q1)"),
        ]
    )  # fmt: skip
    lines = summary.glance(audit).splitlines()
    assert lines[4] == "| 3b | Clipping prevents vanishing gradients | **refuted** | the methods' definitions |"
    assert lines[5] == "| 7 | Clipping combines with SGD | **inconclusive** | stage 2 (Q1) |"
    assert summary.markdown(audit) == summary.glance(audit) + "\n\n" + summary.details(audit)
