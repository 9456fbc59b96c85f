"""Stage 1's audit (exploratory, seeds 0-4): one verdict per claim of the article, each decided by one contrast
named before the decisive profile's data was read.

Every claim names its primary contrast: which cells, which metric, which direction, which margin. Scans over many
cells are secondary, their p-values Holm-adjusted, and never decide a verdict. A verdict is of one of three kinds:

* ``data``: from paired differences over seeds (Student-t, p-value beside the interval); it needs
  at least ``MIN_SEEDS`` seeds in its deciding cells, else it is ``inconclusive``;
* ``deterministic``: the compared runs were bit-identical at every step of the whole run;
* ``by construction``: true of the methods' definitions, whatever the data.

Failed runs (diverged or collapsed, as their task defines it) stay in every comparison, scored as
what they achieved, and failure rates are compared with an exact McNemar test over paired runs.
Learning rates are chosen on validation data, never on the test set. The later stages' answers, and which of
them decides which claim, are in ``stage2``, ``stage3_answers`` and ``claims``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from clipstudy.analysis import stats
from clipstudy.analysis.contrasts import (
    ALPHA,
    MARGINS,
    MIN_SEEDS,
    Verdict,
    directional,
    failure_contrast,
    failure_effect,
    fewest_seeds,
    identical,
    longest_settings,
    pairs,
    scan,
    scan_summary,
    select,
)

#: Stage 1's seeds (exploratory); stage 2 has 5-9, stage 3 10 and up.
STAGE1_SEEDS = (0, 1, 2, 3, 4)
#: Non-inferiority margin for "combines with every optimizer" (claim 7).
NON_INFERIORITY = 0.005

ARTICLE = {"task": "classifier", "optimizer": "adam", "learning_rate": 1e-3}
ARTICLE_CLIP = "value (threshold=5)"  # the article's formula and threshold, as it meant them
CANONICAL = "global_norm (threshold=1)"  # torch clip_grad_norm_ / Keras global_clipnorm at 1
HARM_CELL = {"task": "classifier", "optimizer": "sgd", "learning_rate": 0.1}
HARM_CLIP = "autoclip (percentile=10)"  # clips about nine steps in ten by design
LOW_T, HIGH_T = "global_norm (threshold=1)", "global_norm (threshold=5)"
DETECTOR_CLIP = "global_norm (threshold=10)"  # Ultralytics YOLO's hard-coded value


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    primary: str  # the pre-registered contrast, in words
    rule: str
    figure: str
    decide: Callable[[Evidence], Verdict]
    tested_where: str = ""  # stage 1: task, optimizers, rates, thresholds, epochs the verdict rests on


@dataclass
class Evidence:
    summaries: pd.DataFrame  # one row per run (spiked runs included), with ``auc`` and ``failed``
    overhead: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["method", "ratio", "source"]))


# --- the claims -------------------------------------------------------------------------------------


def _article_pairs(ev: Evidence) -> pd.DataFrame:
    return pairs(longest_settings(select(ev.summaries, ARTICLE)), ARTICLE_CLIP)


def _article(ev: Evidence, metric: str, what: str) -> Verdict:
    p = _article_pairs(ev)
    if identical(p):
        return Verdict(
            "refuted",
            "deterministic",
            f"{what}: value clipping at ±5 never engaged (clip fraction 0) and all {len(p)} clipped runs "
            "were bit-identical to their unclipped pairs at every step",
            stats.paired_effect([0.0] * len(p)),
            words="no effect at the article's setting, where its threshold (±5 per element) is never reached",
        )
    return directional(p, metric, +1, what)


def _from_step_0(p: pd.DataFrame) -> str:
    """Secondary: convergence measured from step 0 (the mean per-step training loss), decides nothing."""
    if p.empty or "mean_train_loss" not in p or p["mean_train_loss"].isna().all():
        return "from step 0: no per-step training losses"
    effect = stats.paired_effect(p["mean_train_loss"] - p["mean_train_loss_base"])
    return f"from step 0, mean training loss over all steps (lower = faster): {effect.format()}"


def claim_1(ev: Evidence) -> Verdict:
    verdict = _article(ev, "auc", "article's setting, value ±5 vs unclipped")
    verdict.secondary = _from_step_0(_article_pairs(ev))
    return verdict


def claim_2(ev: Evidence) -> Verdict:
    verdict = _article(ev, "final_test_accuracy", "article's setting, value ±5 vs unclipped")
    table = scan(select(ev.summaries, ARTICLE))
    verdict.secondary = "every method at the article's setting: " + scan_summary(
        table[table["metric"] == "final_test_accuracy"]
    )
    return verdict


def _high_rate_failures(ev: Evidence) -> str:
    s = ev.summaries[~ev.summaries["spiked"] & ev.summaries["optimizer"].isin(["sgd", "momentum"])]
    none = s[s["label"] == "none"].groupby(stats.present_keys(s, stats.CELL_KEYS))["failed"].mean()
    failing = none[none >= 0.5].index.to_frame(index=False)
    if failing.empty:
        return "secondary: no SGD or momentum cell where the unclipped run failed in half the seeds or more"
    rows = s.merge(failing, on=list(failing.columns))
    results = []
    for label in sorted(set(rows["label"]) - {"none"}):
        p = pairs(rows, label)
        if len(p):
            clipped_only, base_only, pval = failure_contrast(p)
            results.append((label, p["failed"].mean(), p["failed_base"].mean(), pval, len(p)))
    adjusted = stats.holm([r[3] for r in results])
    return "secondary, SGD/momentum cells where the unclipped run fails: " + "; ".join(
        f"{label} failed {rate:.2f} vs {base:.2f} (Holm p={q:.2g}, n={n})"
        for (label, rate, base, _, n), q in zip(results, adjusted)
    )


def claim_3a(ev: Evidence) -> Verdict:
    p = pairs(ev.summaries[ev.summaries["spiked"]], CANONICAL)
    secondary = _high_rate_failures(ev)
    if p.empty:
        return Verdict(
            "inconclusive", "data", "no spike runs of global_norm (threshold=1) and none", secondary=secondary
        )
    effect, base_rate, clip_rate, clipped_only, base_only = failure_effect(p)
    pval = effect.p
    numbers = (
        f"runs with injected spikes ({', '.join(sorted(set(p['optimizer'])))}): unclipped failed "
        f"{base_rate:.2f}, {CANONICAL} failed {clip_rate:.2f} of {len(p)} paired runs; rescued by clipping "
        f"{base_only}, broken by it {clipped_only}; exact McNemar p={pval:.2g}"
    )
    if fewest_seeds(p) < MIN_SEEDS:
        return Verdict("inconclusive", "data", f"{numbers}; {fewest_seeds(p)} seeds < {MIN_SEEDS}", effect, secondary)
    if pval < ALPHA:
        return Verdict("supported" if base_only > clipped_only else "refuted", "data", numbers, effect, secondary)
    if base_rate == 0:
        return Verdict(
            "inconclusive", "data", numbers + "; no unclipped run failed: nothing to prevent", effect, secondary
        )
    if clip_rate >= base_rate:
        return Verdict("refuted", "data", numbers + "; clipping failed at least as often", effect, secondary)
    return Verdict("inconclusive", "data", numbers, effect, secondary)


def claim_3b(ev: Evidence) -> Verdict:
    return Verdict(
        "refuted",
        "by construction",
        words="refuted by construction",
        numbers="every method returns gradients no longer than it was given (‖clip(g)‖ ≤ ‖g‖; each method's tests "
        "check it), so none can enlarge a vanishing gradient",
    )


def claim_4(ev: Evidence) -> Verdict:
    s = ev.summaries
    counts = (
        "; ".join(
            f"{task}: {', '.join(f'{int(v):,}' for v in sorted(g['parameters'].unique()))} parameters"
            for task, g in s.groupby("task")
        )
        if "parameters" in s
        else "no parameter counts recorded"
    )
    o = ev.overhead[ev.overhead["source"].str.startswith("make bench")] if len(ev.overhead) else ev.overhead
    timing = (
        (
            "measured step time relative to none ("
            + str(o["source"].iloc[0])
            + "): "
            + ", ".join(f"{r.method} {r.ratio:.3f}" for r in o.itertuples() if r.method != "none")
        )
        if len(o)
        else "step times: run `make bench`"
    )
    return Verdict(
        "refuted",
        "by construction",
        "clipping changes no layer and removes no weight, so model complexity and storage are unchanged "
        f"({counts}); it adds work to every step, never removes any; {timing}",
        words="refuted by construction",
    )


def claim_5(ev: Evidence) -> Verdict:
    p = pairs(longest_settings(select(ev.summaries, HARM_CELL)), HARM_CLIP)
    verdict = directional(p, "auc", -1, f"SGD lr 0.1, {HARM_CLIP} vs unclipped", null_refutes=False)
    verdict.secondary = _from_step_0(p) + "; " + scan_summary(scan(ev.summaries))
    return verdict


def claim_6(ev: Evidence) -> Verdict:
    p = pairs(longest_settings(select(ev.summaries, HARM_CELL)), HIGH_T, base=LOW_T)
    return directional(p, "final_test_accuracy", 0, f"SGD lr 0.1, {HIGH_T} vs {LOW_T}")


def _at_best_rate(rows: pd.DataFrame, validation_metric: str) -> pd.DataFrame:
    """The runs at the learning rate where the unclipped runs' mean validation metric is best."""
    none = rows[rows["label"] == "none"].groupby("learning_rate")[validation_metric].mean().dropna()
    return rows[rows["learning_rate"] == none.idxmax()] if len(none) else rows.iloc[0:0]


def _with_validation(s: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """The unspiked runs of ``task`` that were scored on validation data (``metric``)."""
    rows = s[(s["task"] == task) & ~s["spiked"]]
    return rows[rows[metric].notna()] if metric in rows else rows.iloc[0:0]


def claim_7(ev: Evidence) -> Verdict:
    rows = _with_validation(ev.summaries, "classifier", "final_val_accuracy")
    if rows.empty:
        return Verdict(
            "inconclusive",
            "data",
            "no classifier runs with a validation split: learning rates "
            "cannot be chosen without looking at the test set",
        )
    chosen = {
        opt: pairs(_at_best_rate(rows[rows["optimizer"] == opt], "final_val_accuracy"), CANONICAL)
        for opt in ("sgd", "momentum", "rmsprop", "adam")
    }
    missing = [opt for opt, p in chosen.items() if p.empty]
    p = pd.concat([p for p in chosen.values() if len(p)]) if len(missing) < 4 else rows.iloc[0:0]
    effect = stats.paired_effect(p["final_test_accuracy"] - p["final_test_accuracy_base"]) if len(p) else None
    rates = ", ".join(f"{opt} lr={q['learning_rate'].iloc[0]:g}" for opt, q in chosen.items() if len(q))
    numbers = (
        f"{CANONICAL} vs unclipped at each optimizer's best rate on validation ({rates}), pooled "
        f"final_test_accuracy: {effect.format() if effect else 'no pairs'}"
    )
    if missing or fewest_seeds(p) < MIN_SEEDS:
        why = f"missing: {', '.join(missing)}" if missing else f"{fewest_seeds(p)} seeds < {MIN_SEEDS}"
        return Verdict("inconclusive", "data", f"{numbers}; {why}", effect)
    if effect.low > -NON_INFERIORITY:
        return Verdict(
            "supported",
            "data",
            f"{numbers}; not worse by more than {NON_INFERIORITY}",
            effect,
            words=f"non-inferior within {NON_INFERIORITY} (pooled over the four optimizers)",
        )
    if effect.high < -NON_INFERIORITY:
        return Verdict("refuted", "data", f"{numbers}; worse by more than {NON_INFERIORITY}", effect)
    return Verdict("inconclusive", "data", numbers, effect)


def claim_8(ev: Evidence) -> Verdict:
    rows = _with_validation(ev.summaries, "detector", "final_val_AP50")
    if rows.empty:
        return Verdict(
            "inconclusive",
            "data",
            "no detector runs with validation canvases: the learning rate "
            "cannot be chosen without looking at the test set",
        )
    p = pairs(_at_best_rate(rows, "final_val_AP50"), DETECTOR_CLIP)
    rate = f"lr={p['learning_rate'].iloc[0]:g}" if len(p) else "no rate"
    return directional(
        p, "final_AP50", +1, f"detector at its best rate on validation ({rate}), {DETECTOR_CLIP} vs unclipped"
    )


_DATA_RULE = (
    f"Paired over seeds (≥ {MIN_SEEDS} per deciding cell, else inconclusive): supported if the 95% "
    "interval excludes 0 in the claimed direction, refuted if it excludes 0 the other way"
)

CLAIMS = [
    Claim(
        "1",
        "Clipping makes the MNIST CNN converge faster (Adam, lr 1e-3, batch 128, threshold 5).",
        "classifier, Adam lr 1e-3, the longest-trained condition: value ±5 − unclipped, area under the "
        "test-accuracy curve (higher = faster), direction +",
        f"{_DATA_RULE} or lies within ±{MARGINS['auc']}; refuted (deterministic) if clipping never engaged and "
        "every pair is bit-identical over the whole run.",
        "learning_curves",
        claim_1,
        "classifier (MNIST CNN, 60,000 images), Adam lr 1e-3, batch 128, 10 epochs; value ±5 vs none, 2 seeds",
    ),
    Claim(
        "2",
        "Clipping raises validation/test accuracy.",
        "classifier, Adam lr 1e-3, the longest-trained condition: value ±5 − unclipped, final test accuracy, "
        "direction +",
        f"{_DATA_RULE} or lies within ±{MARGINS['final_test_accuracy']}; refuted (deterministic) if every pair is "
        "bit-identical. Secondary: every method at that setting, Holm-adjusted.",
        "final_accuracy",
        claim_2,
        "classifier, Adam lr 1e-3, batch 128, 10 epochs; value ±5 vs none (2 seeds); norm 1, AGC 0.01, ZClip (5 seeds)",
    ),
    Claim(
        "3a",
        "Clipping prevents exploding gradients.",
        f"runs with injected ×100 loss spikes, every optimizer: failure (diverged or collapsed) of {CANONICAL} "
        "vs unclipped, paired runs, exact McNemar test, direction: fewer failures",
        f"Supported if clipping fails significantly less often (p < {ALPHA}); refuted if significantly more often, "
        "or at least as often where the unclipped run fails; inconclusive if no unclipped run fails or seeds < "
        f"{MIN_SEEDS}. Secondary: SGD and momentum cells where the unclipped run fails, Holm-adjusted.",
        "spike_recovery",
        claim_3a,
        "classifier, three ×100 loss batches in one epoch; SGD 0.1, momentum 0.01, Adam 1e-3; global norm 1 vs "
        "none, 5 seeds",
    ),
    Claim(
        "3b",
        "Clipping prevents vanishing gradients.",
        "none: a statement about the methods' definitions",
        "Refuted by construction: clipping only ever shrinks a gradient.",
        "norms_adam",
        claim_3b,
        "every method, by its definition",
    ),
    Claim(
        "4",
        "Clipping reduces model complexity, computation and storage cost.",
        "none for complexity and storage (by construction); computation: make bench's interleaved step times",
        "Refuted by construction: no weight or layer is removed, and every method adds work to each step; "
        "the measured step-time ratios are given.",
        "overhead",
        claim_4,
        "every method; step times from make bench (classifier, batch 128)",
    ),
    Claim(
        "5",
        "Clipping can slow convergence or cost accuracy in some settings.",
        f"classifier, SGD lr 0.1: {HARM_CLIP} − unclipped, area under the test-accuracy curve, direction −",
        f"{_DATA_RULE}; a null result leaves this existential claim inconclusive. Secondary: every setting in "
        "every cell, harms and benefits alike, Holm-adjusted.",
        "final_accuracy",
        claim_5,
        "classifier, SGD lr 0.1, 3 epochs; AutoClip p10 vs none, 5 seeds",
    ),
    Claim(
        "6",
        "The threshold matters and must be tuned per model and task.",
        f"classifier, SGD lr 0.1: {HIGH_T} − {LOW_T}, final test accuracy, either direction",
        f"Paired over seeds (≥ {MIN_SEEDS} per deciding cell, else inconclusive): supported if the 95% interval "
        f"excludes 0 either way; refuted if it lies within ±{MARGINS['final_test_accuracy']}.",
        "final_accuracy",
        claim_6,
        "classifier, SGD lr 0.1, 3 epochs; global norm 5 vs 1, 5 seeds",
    ),
    Claim(
        "7",
        "Clipping combines with SGD, momentum, RMSprop and Adam.",
        f"classifier, each optimizer at the rate where the unclipped run is best on validation: {CANONICAL} − "
        "unclipped, final test accuracy, pooled over the four optimizers and seeds; non-inferiority",
        f"Supported if the interval's lower end is above −{NON_INFERIORITY}; refuted if its upper end is below "
        f"−{NON_INFERIORITY}; inconclusive otherwise, or with an optimizer missing or fewer than {MIN_SEEDS} seeds.",
        "stability_map",
        claim_7,
        "classifier, 3 epochs; SGD 0.1, momentum 0.01, RMSprop 1e-3, Adam 1e-3 (the unclipped arm's best "
        "rates); global norm 1 vs none, 5 seeds",
    ),
    Claim(
        "8",
        "Clipping helps object detection as well as classification.",
        f"detector at the rate where the unclipped run is best on validation: {DETECTOR_CLIP} − unclipped, "
        "final test AP50, direction +",
        f"{_DATA_RULE} or lies within ±{MARGINS['final_AP50']}.",
        "detector_ap50",
        claim_8,
        "detector (CenterNet-style, 30,000 canvases), Adam 3e-3, 3 epochs; global norm 10 vs none, 5 seeds",
    ),
]


def gather_evidence(
    summaries: pd.DataFrame,
    epochs: pd.DataFrame,
    overhead: pd.DataFrame | None = None,
    steps: pd.DataFrame | None = None,
) -> Evidence:
    """Every run with its learning-curve area (classifier), its mean training loss from step 0 (when ``steps``
    are given) and whether it failed."""
    s = summaries.copy()
    if steps is not None:
        s = stats.add_training_loss_means(s, steps)
    if "spiked" not in s:
        s["spiked"] = False
    cls_epochs = epochs[epochs["task"] == "classifier"] if "task" in epochs else epochs
    s = stats.add_curve_areas(s, cls_epochs, "test_accuracy") if len(cls_epochs) else s.assign(auc=math.nan)
    s["failed"] = s["failure"].notna() if "failure" in s else s["diverged"].astype(bool)
    return Evidence(s) if overhead is None else Evidence(s, overhead)


def audit(
    summaries: pd.DataFrame,
    epochs: pd.DataFrame,
    overhead: pd.DataFrame | None = None,
    steps: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per claim: its text, primary contrast, rule, verdict and kind, the primary effect with
    interval, p-value and n, the numbers behind it, the secondary analyses, and the figure to look at.
    These are stage 1's claims, read from stage 1's seeds (``STAGE1_SEEDS``) only, so that stage 1 stays as it
    was published while the later stages' runs (seeds 5 and up) arrive in the same bundle."""
    if "seed" in summaries:
        summaries = summaries[summaries["seed"].isin(STAGE1_SEEDS)]
    ev = gather_evidence(summaries, epochs, overhead, steps)
    rows = []
    for c in CLAIMS:
        v = c.decide(ev)
        e = v.effect
        rows.append(
            {
                "claim": c.id,
                "text": c.claim,
                "primary": c.primary,
                "rule": c.rule,
                "verdict": v.verdict,
                "words": v.words or v.verdict,
                "kind": v.kind,
                "effect": e.mean if e else math.nan,
                "ci_low": e.low if e else math.nan,
                "ci_high": e.high if e else math.nan,
                "p_value": e.p if e else math.nan,
                "n": e.n if e else 0,
                "numbers": v.numbers,
                "secondary": v.secondary,
                "figure": f"figures/{c.figure}.png",
            }
        )
    return pd.DataFrame(rows)


#: The margin of no meaningful effect drawn beside each claim's primary effect (stage 1's rules).
STAGE1_MARGINS = {
    "1": MARGINS["auc"],
    "2": MARGINS["final_test_accuracy"],
    "5": MARGINS["auc"],
    "6": MARGINS["final_test_accuracy"],
    "7": NON_INFERIORITY,
    "8": MARGINS["final_AP50"],
}
#: What each effect measures (the x axis of its row in the headline figure).
STAGE1_METRICS = {
    "1": "Δ area under test accuracy",
    "2": "Δ final test accuracy",
    "3a": "Δ failure rate",
    "5": "Δ area under test accuracy",
    "6": "Δ final test accuracy",
    "7": "Δ final test accuracy (pooled)",
    "8": "Δ final test AP50",
}
