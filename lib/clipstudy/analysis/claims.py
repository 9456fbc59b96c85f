"""The audit: one verdict per claim of the article, computed from a profile's runs.

Each claim carries the rule that decides it, written here before any data was read. A verdict is
``supported``, ``refuted`` or ``inconclusive``; ``numbers`` gives the measurements it rests on and
``figure`` the figure of the report that shows them. Effects are paired differences against the
unclipped run with the same optimizer, learning rate, seed and settings, with 95% intervals over
seeds (``clipstudy.analysis``); "the article's setting" is the classifier with Adam at lr 1e-3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from clipstudy import clipping
from clipstudy.analysis import stats as analysis
from clipstudy.fileio import atomic_target
from clipstudy.tasks import classification

ARTICLE_OPTIMIZER, ARTICLE_LR = "adam", 1e-3
ARTICLE_CLIP = "value (threshold=5)"  # the article's formula and threshold, as it meant them


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    rule: str
    figure: str
    decide: Callable[["Evidence"], tuple[str, str]]


@dataclass
class Evidence:
    summaries: pd.DataFrame          # one row per run, with an ``auc`` column (area under the test curve)
    steps: pd.DataFrame
    accuracy: pd.DataFrame           # paired differences in final test accuracy (classifier)
    auc: pd.DataFrame                # paired differences in area under the test-accuracy curve
    ap50: pd.DataFrame               # paired differences in final AP50 (detector)


def _fmt_effect(row) -> str:
    return (f"{row['label']} {row['optimizer']} lr={row['learning_rate']:g}: {row['mean_difference']:+.4f} "
            f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] (n={row['pairs']})")


def _effects(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table.assign(effect=[])
    return table.assign(effect=[analysis.classify_effect(r.ci_low, r.ci_high, r.mean_difference)
                                for r in table.itertuples()])


def _article(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return table[(table["optimizer"] == ARTICLE_OPTIMIZER) & (table["learning_rate"] == ARTICLE_LR)]


def _article_clip_row(ev: Evidence, table: pd.DataFrame):
    rows = _effects(_article(table))
    rows = rows[rows["label"] == ARTICLE_CLIP] if len(rows) else rows
    return rows.iloc[0] if len(rows) else None


def _article_clip_fraction(ev: Evidence) -> float:
    s = ev.summaries
    runs = s[(s["task"] == "classifier") & (s["label"] == ARTICLE_CLIP) & (s["optimizer"] == ARTICLE_OPTIMIZER)
             & (s["learning_rate"] == ARTICLE_LR)]
    return float(runs["clip_fraction"].mean()) if len(runs) else math.nan


def claim_1(ev: Evidence):
    row = _article_clip_row(ev, ev.auc)
    if row is None:
        return "inconclusive", "the profile has no article-setting run with value clipping at ±5"
    fraction = _article_clip_fraction(ev)
    effect = analysis.classify_effect(row.ci_low, row.ci_high, row.mean_difference)
    numbers = f"area under the test-accuracy curve, clipped − unclipped: {_fmt_effect(row)}; clip fraction {fraction:.4f}"
    if effect == "better":
        return "supported", numbers
    if effect in ("worse", "identical") or fraction == 0:
        return "refuted", numbers
    return "inconclusive", numbers


def claim_2(ev: Evidence):
    row = _article_clip_row(ev, ev.accuracy)
    if row is None:
        return "inconclusive", "the profile has no article-setting run with value clipping at ±5"
    best = _effects(_article(ev.accuracy)).sort_values("mean_difference", ascending=False)
    numbers = f"final test accuracy, clipped − unclipped: {_fmt_effect(row)}; clip fraction {_article_clip_fraction(ev):.4f}"
    if len(best):
        numbers += f"; best method there: {_fmt_effect(best.iloc[0])}"
    effect = analysis.classify_effect(row.ci_low, row.ci_high, row.mean_difference)
    if effect == "better":
        return "supported", numbers
    if effect in ("worse", "identical"):
        return "refuted", numbers
    return "inconclusive", numbers


def claim_3(ev: Evidence):
    s = ev.summaries
    base = s[s["method"] == "none"].groupby(analysis.present_keys(s, analysis.CELL_KEYS))["diverged"].mean()
    exploding = base[base >= 0.5]
    steps = ev.steps
    norm_methods = steps[steps["method"] != "none"]
    grew = int((norm_methods["norm_after"] > norm_methods["norm_before"] * (1 + 1e-6)).sum())
    vanishing = (f"clipping raised the gradient norm on {grew} of {len(norm_methods)} clipped-method steps "
                 f"(it can only shrink gradients, so it cannot counter vanishing ones)")
    if exploding.empty:
        return "refuted" if grew == 0 else "inconclusive", \
            f"no setting where the unclipped run diverged in at least half the seeds; {vanishing}"
    cells = exploding.index.to_frame(index=False)
    clipped = s[s["method"] != "none"].merge(cells, on=list(cells.columns))
    rates = clipped.groupby("label")["diverged"].mean().sort_values()
    numbers = (f"{len(exploding)} setting(s) where the unclipped run diverged (rate {exploding.mean():.2f}); "
               f"divergence there per method: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()) + f"; {vanishing}")
    # The claim joins two halves; the vanishing half fails whenever clipping never raised a norm.
    return ("refuted" if grew == 0 else "inconclusive"), numbers


def claim_4(ev: Evidence):
    s = ev.summaries
    if "parameters" not in s:
        return "inconclusive", "the runs record no parameter count"
    same_params = bool((s.groupby("task")["parameters"].nunique() == 1).all())
    model = classification.seed_cnn()
    step = classification.training_step_flops(model, 128)
    extra = {m: cls.flops_per_parameter * model.count_params() for m, cls in clipping.REGISTRY.items()
             if m != "none" and m in set(s["method"])}
    numbers = (f"parameters identical with and without clipping: {same_params} "
               f"({', '.join(f'{t} {int(p):,}' for t, p in s.groupby('task')['parameters'].first().items())}); "
               f"seed CNN training step at batch 128 ≈ {step / 1e6:.0f} MFLOP; clipping adds ≈ "
               + ", ".join(f"{m} {f / 1e3:.0f} kFLOP" for m, f in extra.items())
               + " per step; measured step times: see the overhead figure and `make bench`")
    if same_params and all(f > 0 for f in extra.values()):
        return "refuted", numbers
    return "inconclusive", numbers


def claim_5(ev: Evidence):
    harms = []
    for name, table in (("accuracy", ev.accuracy), ("learning-curve area", ev.auc), ("AP50", ev.ap50)):
        t = _effects(table)
        harms += [f"{name}: {_fmt_effect(r)}" for _, r in t[t["effect"] == "worse"].iterrows()]
    if harms:
        return "supported", f"{len(harms)} setting(s) where clipping was significantly worse, e.g. " + "; ".join(harms[:4])
    return "inconclusive", "no setting where a clipping method was significantly worse than the unclipped run"


def claim_6(ev: Evidence):
    s = ev.summaries
    findings, best = [], {}
    for task, metric in (("classifier", "final_test_accuracy"), ("detector", "final_AP50")):
        g = s[(s["task"] == task) & (s["method"] == "global_norm")]
        if g["clip_params"].nunique() < 2:
            continue
        pivot = g.pivot_table(index=["optimizer", "learning_rate", "seed"], columns="clip_params", values=metric)
        cols = list(pivot.columns)
        for (opt, lr), cell in pivot.groupby(level=[0, 1]):
            for i in range(len(cols)):
                for j in range(i + 1, len(cols)):
                    mean, low, high, n = analysis.mean_ci(cell[cols[j]] - cell[cols[i]])
                    effect = analysis.classify_effect(low, high, mean)
                    if effect in ("better", "worse"):
                        findings.append(f"{task} {opt} lr={lr:g}: {cols[j]} − {cols[i]} {mean:+.4f} [{low:+.4f}, {high:+.4f}]")
        means = g.groupby("clip_params")[metric].mean()
        best[task] = means.idxmax()
    numbers = ("threshold differences excluding 0: " + ("; ".join(findings[:4]) if findings else "none")
               + "; best global_norm threshold per task: " + (", ".join(f"{k} {v}" for k, v in best.items()) or "n/a"))
    if not best:
        return "inconclusive", "the profile compares no two thresholds of one method"
    if findings:
        return "supported", numbers
    return "inconclusive", numbers


def claim_7(ev: Evidence):
    wanted = ["sgd", "momentum", "rmsprop", "adam"]
    s = ev.summaries[ev.summaries["task"] == "classifier"]
    present = sorted(set(s["optimizer"]))
    verdicts = {}
    for opt in present:
        t = _effects(ev.accuracy[(ev.accuracy["optimizer"] == opt) & (ev.accuracy["task"] == "classifier")])
        t = t[t["method"] == "global_norm"]
        base = s[(s["optimizer"] == opt) & (s["method"] == "none")].groupby("learning_rate")["final_test_accuracy"].mean()
        if t.empty or base.dropna().empty:
            continue
        at_best = t[t["learning_rate"] == base.idxmax()]
        verdicts[opt] = "worse" if (len(at_best) and (at_best["effect"] == "worse").all()) else "works"
    numbers = "global_norm at each optimizer's best unclipped learning rate: " + \
        ", ".join(f"{k} {v}" for k, v in verdicts.items())
    missing = [o for o in wanted if o not in verdicts]
    if any(v == "worse" for v in verdicts.values()):
        return "refuted", numbers
    if missing:
        return "inconclusive", numbers + f"; not in this profile: {', '.join(missing)}"
    return "supported", numbers


def claim_8(ev: Evidence):
    det = _effects(ev.ap50)
    cls = _effects(ev.accuracy)
    if det.empty:
        return "inconclusive", "the profile has no detector runs"
    better = det[det["effect"] == "better"]
    worse = det[det["effect"] == "worse"]
    numbers = (f"detector AP50, clipped − unclipped: {len(better)} setting(s) better, {len(worse)} worse, "
               f"{len(det) - len(better) - len(worse)} unclear or identical")
    if len(better):
        numbers += "; e.g. " + "; ".join(_fmt_effect(r) for _, r in better.head(3).iterrows())
    cls_better = int((cls["effect"] == "better").sum()) if len(cls) else 0
    numbers += f"; classifier accuracy: {cls_better} setting(s) better"
    if len(better) and cls_better:
        return "supported", numbers
    if len(worse) and not len(better):
        return "refuted", numbers
    return "inconclusive", numbers


CLAIMS = [
    Claim("1", "Clipping makes the MNIST CNN converge faster (Adam, lr 1e-3, batch 128, threshold 5).",
          "At the article's setting, value clipping at ±5 vs unclipped, paired over seeds: supported if the 95% CI "
          "of the difference in area under the test-accuracy curve lies above 0; refuted if it lies below 0, or if "
          "clipping never engaged (clip fraction 0: the runs are identical); otherwise inconclusive.",
          "learning_curves", claim_1),
    Claim("2", "Clipping raises validation/test accuracy.",
          "At the article's setting: supported if value clipping at ±5 raises final test accuracy with a paired 95% CI "
          "above 0; refuted if the CI lies below 0 or the runs are identical; otherwise inconclusive.",
          "final_accuracy", claim_2),
    Claim("3", "Clipping prevents exploding gradients, and also vanishing gradients.",
          "Both halves must hold. Vanishing: refuted if no clipping method ever raised a gradient norm (clipping only "
          "shrinks). Exploding: reported as the divergence rate of each method where the unclipped run diverged in at "
          "least half the seeds.",
          "divergence", claim_3),
    Claim("4", "Clipping reduces model complexity, computation and storage cost.",
          "Refuted if every method leaves the parameter count unchanged and adds floating-point work to each step "
          "(counted from its rule) instead of removing any; otherwise inconclusive. Measured step times are shown "
          "beside it (make bench) but do not decide it, as timings are noisy.",
          "overhead", claim_4),
    Claim("5", "Clipping can slow convergence or cost accuracy in some settings.",
          "Supported if any method setting is significantly worse (paired 95% CI below 0) than the unclipped run in "
          "final accuracy, learning-curve area or detector AP50 in any setting; otherwise inconclusive.",
          "final_accuracy", claim_5),
    Claim("6", "The threshold matters and must be tuned per model and task.",
          "Supported if two thresholds of global_norm differ significantly (paired 95% CI excluding 0) in some "
          "setting; inconclusive if no difference is significant or the profile compares no two thresholds.",
          "detector_ap50", claim_6),
    Claim("7", "Clipping combines with SGD, momentum, RMSprop and Adam.",
          "For each optimizer, global_norm at the learning rate where the unclipped run is best: refuted if it is "
          "significantly worse there for some optimizer; supported if it is not for all four; otherwise (an optimizer "
          "missing from the profile) inconclusive.",
          "final_accuracy", claim_7),
    Claim("8", "Clipping helps object detection as well as classification.",
          "Supported if some method setting raises detector AP50 and some raises classifier accuracy, each with a "
          "paired 95% CI above 0; refuted if clipping only ever lowers AP50 significantly; otherwise inconclusive.",
          "detector_ap50", claim_8),
]


def gather_evidence(summaries: pd.DataFrame, steps: pd.DataFrame, epochs: pd.DataFrame) -> Evidence:
    cls = summaries[summaries["task"] == "classifier"]
    det = summaries[summaries["task"] == "detector"]
    cls = analysis.add_curve_areas(cls, epochs[epochs["task"] == "classifier"], "test_accuracy")
    empty = pd.DataFrame(columns=["task", "optimizer", "learning_rate", "method", "label", "mean_difference",
                                  "ci_low", "ci_high", "pairs"])
    return Evidence(
        summaries=pd.concat([cls, det], ignore_index=True),
        steps=steps,
        accuracy=analysis.paired_differences(cls, "final_test_accuracy") if len(cls) else empty,
        auc=analysis.paired_differences(cls, "auc") if len(cls) else empty,
        ap50=analysis.paired_differences(det, "final_AP50") if len(det) else empty,
    )


def audit(summaries: pd.DataFrame, steps: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: claim, rule, numbers, verdict, figure."""
    ev = gather_evidence(summaries, steps, epochs)
    rows = []
    for c in CLAIMS:
        verdict, numbers = c.decide(ev)
        rows.append({"claim": c.id, "text": c.claim, "rule": c.rule, "numbers": numbers, "verdict": verdict,
                     "figure": f"figures/{c.figure}.png"})
    return pd.DataFrame(rows)


def write_csv(audit: pd.DataFrame, path) -> None:
    """``claims.csv``, written to a temporary name, then renamed."""
    with atomic_target(path) as tmp:
        audit.to_csv(tmp, index=False)
