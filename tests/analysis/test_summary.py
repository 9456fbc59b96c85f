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
