"""Stage 3's confirmatory answers (Q5-Q8), by the rules registered in 806d3ba (Q8: e7c8b95) before their first run
(docs/protocol.md, "Stage 3"; the cells and seeds are ``claims.STAGE3_*``):

* every contrast is paired by seed, and a pair whose two runs record different platforms (CPU vendor, family,
  model and oneDNN's instruction set) is refused and counted: a borderline run can train on one CPU and collapse on
  another, so a cross-platform pair would measure the CPU as much as the clipping;
* outcomes are the protocol's kinds (diverged / stalled / learned); nothing is pooled over optimizers; Holm
  within each question as registered;
* an answer is *complete* when every registered seed of its task has its pair; until then its verdict says how
  many are in and it decides nothing (``claims.study_audit`` reads only complete answers).
"""

from __future__ import annotations

import math

import pandas as pd

from clipstudy.analysis import claims, contrasts, outcomes, stage2, stats
from clipstudy.analysis.stage1 import CANONICAL
from clipstudy.analysis.stage2 import Answer

#: The adding problem's step budget in stage 3 (10 epochs of 1,000 steps): a run that never reaches the target
#: validation MSE scores this.
ADDING_BUDGET = 10_000
#: The best adaptive method of the calibration (named in the registration): quantile tracking at its defaults.
ADAPTIVE = next(label for label in claims.STAGE3_ADDING_TUNED if label.startswith("quantile"))
#: A pair's platform is the CPU and the instruction set oneDNN ran: runs on one of these agree bit for bit.
PLATFORM_FIELDS = ("cpu_vendor", "cpu_family", "cpu_model", "onednn_isa")
UNKNOWN_PLATFORM = "?"
#: Q7's cells: (task, optimizer, the clipped arm's tuned rate, the registered seeds' key in STAGE3_SEEDS).
Q7_CELLS = (
    ("adding", "sgd", claims.STAGE3_ADDING_TUNED[CANONICAL], "adding"),
    ("classifier", "sgd", claims.STAGE3_CLASSIFIER_TUNED["sgd"][CANONICAL], "sgd"),
    ("classifier", "momentum", claims.STAGE3_CLASSIFIER_TUNED["momentum"][CANONICAL], "momentum"),
)


def platform_key(platform: dict | None) -> str:
    """The platform a run was made on, as one string (``'?'`` when its summary did not record one)."""
    if not platform:
        return UNKNOWN_PLATFORM
    return " ".join(f"{k}={platform.get(k, '?')}" for k in PLATFORM_FIELDS)


def percentile_label(percentile: int) -> str:
    return f"global_norm (threshold=p{percentile} of probe)"


def stage3_runs(s: pd.DataFrame, task: str, seeds_key: str) -> pd.DataFrame:
    """Stage 3's confirmatory runs of one task (its registered seeds, no spikes; the adding problem's 10,000-step
    condition), each with its outcome kind."""
    rows = s[(s["task"] == task) & s["seed"].isin(claims.STAGE3_SEEDS[seeds_key])]
    if rows.empty:
        return rows.assign(outcome=pd.Series(dtype=str))
    if "spiked" in rows:
        rows = rows[~rows["spiked"].astype(bool)]
    if task == "adding":
        rows = rows[rows["steps_planned"] == ADDING_BUDGET]
    else:
        rows = stage2._grid(rows)
    return outcomes.add_outcomes(rows)


def paired(rows: pd.DataFrame, arm: tuple[str, float], base: tuple[str, float]) -> tuple[pd.DataFrame, int]:
    """Runs of ``arm`` (label, rate) beside the run of ``base`` with the same task, condition, optimizer and seed
    (the base's columns end in ``_base``), and how many such pairs were refused for crossing platforms."""
    keys = stats.present_keys(rows, ["task", "settings_key", "optimizer", "seed"])
    a = contrasts.select(rows[rows["label"] == arm[0]], {"learning_rate": arm[1]}, spiked=None)
    b = contrasts.select(rows[rows["label"] == base[0]], {"learning_rate": base[1]}, spiked=None)
    return one_platform(a.merge(b, on=keys, suffixes=("", "_base")))


def one_platform(p: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Paired runs without the pairs whose two runs record different platforms, and how many those were."""
    if "platform" not in p or p.empty:
        return p, 0
    known = (p["platform"] != UNKNOWN_PLATFORM) & (p["platform_base"] != UNKNOWN_PLATFORM)
    crossed = known & (p["platform"] != p["platform_base"])
    return p[~crossed].reset_index(drop=True), int(crossed.sum())


def scored_mse(p: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Both arms' final test MSE, a diverged run scoring the worst MSE of the contrast's runs that did not
    diverge (it is counted, never dropped, and its 1e21 never averaged)."""
    finite = pd.concat([p.loc[p["outcome"] != "diverged", "final_test_mse"],
                        p.loc[p["outcome_base"] != "diverged", "final_test_mse_base"]])  # fmt: skip
    worst = float(finite.max()) if finite.notna().any() else math.nan
    arm = p["final_test_mse"].where(p["outcome"] != "diverged", worst)
    base = p["final_test_mse_base"].where(p["outcome_base"] != "diverged", worst)
    return arm, base


def with_steps_to_mse(s: pd.DataFrame, epochs: pd.DataFrame, target: float, budget: int) -> pd.DataFrame:
    """``s`` with ``steps_to_val_mse``: the first evaluated step whose validation MSE is below ``target``, counted
    from step 0 (``budget`` when a run never gets there)."""
    s = s.copy()
    if epochs.empty or "val_mse" not in epochs:
        s["steps_to_val_mse"] = float(budget)
        return s
    below = epochs[epochs["val_mse"] < target]
    first = below.groupby("run_id")["step"].min()
    s["steps_to_val_mse"] = s["run_id"].map(first).fillna(budget).astype(float)
    return s


def _coverage(p: pd.DataFrame, seeds_key: str, refused: int) -> tuple[bool, str]:
    """Whether every registered seed is paired, and a note of what is in (and what was refused)."""
    registered = set(claims.STAGE3_DETECTOR_SEEDS if seeds_key == "detector" else claims.STAGE3_SEEDS[seeds_key])
    have = set(p["seed"]) & registered if len(p) else set()
    note = f"{len(have)} of {len(registered)} registered seeds paired"
    if refused:
        note += f"; {refused} pair(s) refused: their runs record different platforms (rerun both on one CPU)"
    return have == registered, note


def _incomplete(note: str) -> str:
    return f"incomplete ({note}): decides nothing yet"


#: The words of Q5a's contrast; Q8's are the same with a collapse (``COLLAPSE``) and, in its secondary contrasts,
#: the two arms' names (``_two_arms``).
DIVERGENCE = {
    "outcome": "diverged",
    "noun": "divergence",
    "arm": "clipped",
    "reference": "unclipped",
    "actor": "clipping",
}
COLLAPSE = {**DIVERGENCE, "outcome": "collapsed", "noun": "collapse"}


def _mcnemar_answer(
    question: str,
    p: pd.DataFrame,
    where: str,
    seeds_key: str,
    refused: int,
    bad: tuple[str, ...] = ("diverged",),
    words: dict | None = None,
    p_shown: float | None = None,
) -> Answer:
    """Bad outcomes (``bad``: divergence for Q5a, a collapse for Q8) of one arm against a reference arm, exact
    McNemar. ``words``: the outcome (``diverged``), its noun, the two arms' names and who acts (``DIVERGENCE``);
    ``p_shown``: a Holm-adjusted p to decide on and show beside the raw one."""
    w = words or DIVERGENCE
    complete, note = _coverage(p, seeds_key, refused)
    hit, hit_base = p["outcome"].isin(bad), p["outcome_base"].isin(bad)
    caused, prevented = int((hit & ~hit_base).sum()), int((hit_base & ~hit).sum())
    n = len(p)
    tested = n >= stats.MIN_TESTED_N  # no p-value from fewer pairs, as everywhere in the study
    raw = stats.exact_mcnemar(caused, prevented) if tested else math.nan
    pval = raw if p_shown is None or not tested else p_shown
    effect = stats.Effect(float(hit.mean() - hit_base.mean()) if n else math.nan, math.nan, math.nan, n, pval,
                          f"{w['noun']} rate, exact McNemar")  # fmt: skip
    adjusted = "" if p_shown is None or not tested else f" (Holm-adjusted {p_shown:.2g})"
    shown = f"p={raw:.2g}" if tested else f"p n/a (fewer than {stats.MIN_TESTED_N} pairs)"
    numbers = (
        f"{where}: {w['outcome']} {w['reference']} {int(hit_base.sum())} of {n}, {w['arm']} {int(hit.sum())} of {n}; "
        f"prevented {prevented}, caused {caused}; exact McNemar {shown}{adjusted}, n={n}; outcomes "
        f"{w['reference']}: {outcomes.counts_text(list(p['outcome_base']))}; {w['arm']}: "
        f"{outcomes.counts_text(list(p['outcome']))}; the {w['arm']} arm {stage2.clip_share(p)}; {note}"
    )
    if not complete:
        verdict = _incomplete(note)
    elif pval < contrasts.ALPHA and "fewer" in w:  # two arms, both possibly treated: which collapses less
        verdict = w["fewer"] if prevented > caused else w["more"]
    elif pval < contrasts.ALPHA:  # complete: every registered seed (at least 11) is paired, so pval is a number
        verdict = f"{w['actor']} {'prevents' if prevented > caused else 'causes'} {w['noun']}"
    elif not hit_base.any():
        verdict = f"inconclusive: no {w['reference']} run {w['outcome']}"
    else:
        verdict = f"no significant difference in {w['noun']}"
    return Answer(question, verdict, numbers, effect, where, complete, stage=3)


def q5a_divergence(s: pd.DataFrame) -> list[Answer]:
    """Q5a: at the lowest rate where an unclipped calibration run diverged, global norm 1 (primary) and the best
    adaptive method (secondary) against none: divergences, exact McNemar, paired by seed."""
    rows = stage3_runs(s, "adding", "adding")
    lr = claims.STAGE3_ADDING_DIVERGING
    found = []
    for question, label in (("Q5a", CANONICAL), ("Q5a (secondary)", ADAPTIVE)):
        p, refused = paired(rows, (label, lr), ("none", lr))
        where = f"adding problem T=50, 10,000 SGD steps, lr={lr:g}: {label} vs none"
        found.append(_mcnemar_answer(question, p, where, "adding", refused))
    return found


def _direction_words(effect: stats.Effect, p_adjusted: float, lower_better: bool, better: str, worse: str) -> str:
    if p_adjusted < contrasts.ALPHA:
        return better if (effect.mean < 0) == lower_better else worse
    return "no significant difference"


def _t_answers(found, question_of, words, stage_where) -> list[Answer]:
    """Paired-t answers, Holm-adjusted across ``found`` (tuples of key, pairs, effect, complete, note, where)."""
    adjusted = stats.holm([e.p for _, _, e, *_ in found])
    answers = []
    for (key, p, effect, complete, note, where), q in zip(found, adjusted, strict=True):
        verdict = words(key, effect, q) if complete else _incomplete(note)
        holm = "Holm p n/a" if math.isnan(q) else f"Holm p={q:.2g}"
        kinds = f"outcomes of the arm: {stage2._kinds(p)}; of the reference: {stage2._kinds(p, '_base')}"
        numbers = f"{where}: {effect.format()}, {holm}; {kinds}; the clipped arm {stage2.clip_share(p)}; {note}"
        answers.append(Answer(question_of(key), verdict, numbers, effect, stage_where(key), complete, stage=3))
    return answers


def q5b_learning(s: pd.DataFrame, epochs: pd.DataFrame) -> list[Answer]:
    """Q5b: each arm at its own tuned rate, global norm 1 and the best adaptive method against none; final test
    MSE (a diverged run the contrast's worst) and steps to validation MSE 0.05 (never: the budget), clipped −
    unclipped, lower is better; Holm across the two arms within each metric."""
    rows = with_steps_to_mse(stage3_runs(s, "adding", "adding"), epochs, claims.STAGE3_ADDING_TARGET_MSE, ADDING_BUDGET)
    tuned = claims.STAGE3_ADDING_TUNED
    answers = []
    for metric, unit in (("final test MSE", "MSE"), ("steps to validation MSE 0.05", "steps")):
        found = []
        for label in (CANONICAL, ADAPTIVE):
            p, refused = paired(rows, (label, tuned[label]), ("none", tuned["none"]))
            if unit == "MSE":
                arm, base = scored_mse(p) if len(p) else (p.get("final_test_mse"), p.get("final_test_mse"))
            else:
                arm, base = p["steps_to_val_mse"], p["steps_to_val_mse_base"]
            effect = stats.tested(stats.paired_effect((arm - base) if len(p) else []))
            complete, note = _coverage(p, "adding", refused)
            where = (f"adding problem T=50, 10,000 SGD steps: {label} at lr={tuned[label]:g} vs none at "
                     f"lr={tuned['none']:g}, {metric} (clipped - unclipped)")  # fmt: skip
            found.append((label, p, effect, complete, note, where))
        better, worse = ("lower test MSE with clipping", "higher test MSE with clipping") if unit == "MSE" else (
            "clipping learns sooner", "clipping learns later")  # fmt: skip
        answers += _t_answers(
            found,
            lambda label, m=metric: f"Q5b {'global norm 1' if label == CANONICAL else 'quantile'}, {m}",
            lambda _, e, q, b=better, w=worse: _direction_words(e, q, True, b, w),
            lambda _: "adding problem T=50, 10,000 SGD steps, each arm at its tuned rate",
        )
    return answers


def q6_tuned(s: pd.DataFrame) -> list[Answer]:
    """Q6: per optimizer (SGD, momentum), global norm 1 at its tuned rate against none at its own; final test
    accuracy (margin 0.002) and steps to 98% test accuracy (never: the planned steps), Holm across the four."""
    found = []
    for opt, rates in claims.STAGE3_CLASSIFIER_TUNED.items():
        rows = stage3_runs(s[s["optimizer"] == opt], "classifier", opt)
        p, refused = paired(rows, (CANONICAL, rates[CANONICAL]), ("none", rates["none"]))
        complete, note = _coverage(p, opt, refused)
        where = f"classifier, {opt}: {CANONICAL} at lr={rates[CANONICAL]:g} vs none at lr={rates['none']:g}, 3 epochs"
        acc = p["final_test_accuracy"] - p["final_test_accuracy_base"] if len(p) else []
        found.append(((opt, "accuracy"), p, stats.tested(stats.paired_effect(acc)), complete, note,
                      f"{where}, final test accuracy"))  # fmt: skip
        if len(p):
            steps = p["steps_to_98"].fillna(p["steps_planned"]) - p["steps_to_98_base"].fillna(p["steps_planned_base"])
        else:
            steps = []
        found.append(((opt, "steps"), p, stats.tested(stats.paired_effect(steps)), complete, note,
                      f"{where}, steps to 98% test accuracy (clipped - unclipped)"))  # fmt: skip
    margin = stage2.CONFIRM_MARGINS["final_test_accuracy"]

    def words(key, effect, q):
        if key[1] == "accuracy":
            return stage2._compare(effect, q, margin, effect.n)
        return _direction_words(effect, q, True, "clipping reaches 98% sooner", "clipping reaches 98% later")

    return _t_answers(
        found,
        lambda key: f"Q6 {key[0]}" if key[1] == "accuracy" else f"Q6 {key[0]} (steps to 98%)",
        words,
        lambda key: f"classifier, {key[0]}, each arm at its tuned rate (refined grid), 3 epochs",
    )


def q7_thresholds(s: pd.DataFrame) -> list[Answer]:
    """Q7: global norm at the probe's 50th, 90th and 99th percentile against the fixed 1, at the clipped arm's
    tuned rate, per task and optimizer; final test accuracy (classifier) or test MSE (adding, a diverged run the
    contrast's worst), percentile − fixed; Holm across the three thresholds of each cell."""
    answers = []
    for task, opt, lr, seeds_key in Q7_CELLS:
        rows = stage3_runs(s[s["optimizer"] == opt], task, seeds_key)
        found = []
        for pct in claims.STAGE3_PERCENTILES:
            p, refused = paired(rows, (percentile_label(pct), lr), (CANONICAL, lr))
            if task == "adding":
                arm, base = scored_mse(p) if len(p) else ([], [])
                diff = (arm - base) if len(p) else []
            else:
                diff = p["final_test_accuracy"] - p["final_test_accuracy_base"] if len(p) else []
            complete, note = _coverage(p, seeds_key, refused)
            metric = "final test MSE" if task == "adding" else "final test accuracy"
            where = f"{task}, {opt} lr={lr:g}: p{pct} of probe vs threshold 1, {metric} (percentile - fixed)"
            found.append(((task, opt, pct), p, stats.tested(stats.paired_effect(diff)), complete, note, where))
        answers += _t_answers(
            found,
            lambda key: f"Q7 {key[0]} {key[1]} p{key[2]}",
            lambda key, e, q: _direction_words(
                e, q, key[0] == "adding", f"p{key[2]} better than the fixed 1", f"p{key[2]} worse than the fixed 1"
            ),  # fmt: skip
            lambda key: f"{key[0]}, {key[1]} at global norm 1's tuned rate",
        )
    return answers


def eligible_percentiles(s: pd.DataFrame) -> dict[str, dict[int, float]]:
    """Per Q7 cell, the percentiles that may be ``probe_threshold``'s default there, each with its median final
    metric (higher is better: accuracy, or minus the test MSE): those whose median share of clipped steps is at most
    90% (``outcomes.NORMALISES``; more is normalisation) and most of whose runs learned (an arm whose runs mostly
    diverged or stalled does best at nothing)."""
    found = {}
    for task, opt, lr, seeds_key in Q7_CELLS:
        rows = stage3_runs(s[s["optimizer"] == opt], task, seeds_key)
        scores = {}
        for pct in claims.STAGE3_PERCENTILES:
            arm = contrasts.select(rows[rows["label"] == percentile_label(pct)], {"learning_rate": lr}, spiked=None)
            if arm.empty or arm["clip_fraction"].median() > outcomes.NORMALISES:
                continue
            if (arm["outcome"] == "learned").sum() * 2 <= len(arm):
                continue
            if task == "adding":  # a diverged run scores the worst MSE there is
                scores[pct] = float(-arm["final_test_mse"].where(arm["outcome"] != "diverged", math.inf).median())
            else:
                scores[pct] = float(arm["final_test_accuracy"].median())
        found[f"{task} {opt}"] = scores
    return found


def recommended_percentile(s: pd.DataFrame) -> dict[str, int | None]:
    """Per Q7 cell, the registered choice of ``probe_threshold``'s default: among the eligible percentiles
    (``eligible_percentiles``), the one with the best median final test metric (``None`` when none is)."""
    return {cell: max(scores, key=scores.get) if scores else None
            for cell, scores in eligible_percentiles(s).items()}  # fmt: skip


def default_percentile(s: pd.DataFrame) -> int | None:
    """The one default for every cell (docs/protocol.md, written before Q7's adding cell was complete): the
    percentile eligible in the most Q7 cells; a tie goes to the lower percentile (it clips more while staying
    under the bound). ``None`` when no percentile is eligible anywhere."""
    counts: dict[int, int] = {}
    for scores in eligible_percentiles(s).values():
        for pct in scores:
            counts[pct] = counts.get(pct, 0) + 1
    return min(counts, key=lambda pct: (-counts[pct], pct)) if counts else None


def detector_runs(s: pd.DataFrame) -> pd.DataFrame:
    """Q8's runs: the detector at its unstable rate on Q8's seeds, each with its outcome, ``warmup_steps`` (a
    setting: read from the run's settings) and its clipping ``label`` without the warm-up."""
    cell = claims.STAGE3_DETECTOR
    rows = s[(s["task"] == cell["task"]) & s["seed"].isin(claims.STAGE3_DETECTOR_SEEDS)]
    rows = contrasts.select(rows[rows["optimizer"] == cell["optimizer"]], {"learning_rate": cell["learning_rate"]},
                         spiked=None)  # fmt: skip
    if rows.empty:
        return rows.assign(outcome=pd.Series(dtype=str), warmup_steps=pd.Series(dtype=int))
    warmup = contrasts.warmup_steps(rows)
    label = [lab.removesuffix(f"{contrasts.WARMUP_SUFFIX}{w}") for lab, w in zip(rows["label"], warmup, strict=True)]
    return outcomes.add_outcomes(rows.assign(warmup_steps=warmup, label=label))


def _detector_pair(rows: pd.DataFrame, arm: tuple[str, int], base: tuple[str, int]) -> tuple[pd.DataFrame, int]:
    """Q8's runs of ``arm`` (label, warm-up steps) beside ``base``'s of the same seed; cross-platform pairs refused."""
    pick = [rows[(rows["label"] == label) & (rows["warmup_steps"] == w)] for label, w in (arm, base)]
    return one_platform(pick[0].merge(pick[1], on=["seed"], suffixes=("", "_base")))


def detector_arms(s: pd.DataFrame) -> pd.DataFrame:
    """Q8's runs (``detector_runs``) with each run's ``arm`` named as in its verdicts (``warm-up + global norm 10``)."""
    rows = detector_runs(s)
    names = {arm: _short_name(arm) for arm in claims.STAGE3_DETECTOR_ARMS}
    return rows.assign(arm=[names.get((lab, w), lab) for lab, w in zip(rows["label"], rows["warmup_steps"])])


def _arm_name(arm: tuple[str, int]) -> str:
    clip = "global norm 10" if arm[0] != "none" else "no clipping"
    return clip + (f" with a {arm[1]}-step warm-up" if arm[1] else "")


def _short_name(arm: tuple[str, int]) -> str:
    """An arm's name in a verdict: ``no clipping``, ``global norm 10``, ``warm-up``, ``warm-up + global norm 10``."""
    clip = "global norm 10" if arm[0] != "none" else ""
    return " + ".join(n for n in ("warm-up" if arm[1] else "", clip) if n) or "no clipping"


def _two_arms(arm: tuple[str, int], base: tuple[str, int]) -> dict:
    """The words of a contrast between two arms that may both be treated (Q8's secondary ones)."""
    a, b = _short_name(arm), _short_name(base)
    return {**COLLAPSE, "arm": a, "reference": b, "actor": a, "fewer": f"fewer collapses with {a} than with {b}",
            "more": f"more collapses with {a} than with {b}"}  # fmt: skip


def _learned_ap(rows: pd.DataFrame) -> str:
    """Per arm, the final AP and AP50 of the runs that did not collapse (median and range), and the clip share."""
    parts = []
    for arm in claims.STAGE3_DETECTOR_ARMS:
        runs = rows[(rows["label"] == arm[0]) & (rows["warmup_steps"] == arm[1])]
        ok = runs[runs["outcome"] == "learned"]
        ap = ", ".join(f"{m} median {ok[m].median():.3f} [{ok[m].min():.3f}, {ok[m].max():.3f}]"
                       for m in AP_METRICS if m in ok and len(ok))  # fmt: skip
        share = f", {outcomes.clipping_words(float(runs['clip_fraction'].mean()))}" if len(runs) else ""
        parts.append(f"{_arm_name(arm)}: {len(ok)} of {len(runs)} learned" + (f" ({ap})" if ap else "") + share)
    return "; ".join(parts)


#: Q8's AP metrics, compared among runs that did not collapse.
AP_METRICS = ("final_AP", "final_AP50")


def _both_learned_effects(pairs: list[pd.DataFrame]) -> list[dict[str, tuple[stats.Effect, float]]]:
    """Per contrast (its pairs), per AP metric: the paired effect (arm − reference) over the pairs where both runs
    learned (interval and p only from 5 such pairs) and its p Holm-adjusted across the contrasts, per metric."""
    effects = []
    for p in pairs:
        both = p[(p["outcome"] == "learned") & (p["outcome_base"] == "learned")] if len(p) else p
        effects.append({m: stats.tested(stats.paired_effect((both[m] - both[f"{m}_base"]) if len(both) else []))
                        for m in AP_METRICS})  # fmt: skip
    found = [{} for _ in pairs]
    for m in AP_METRICS:
        for i, q in enumerate(stats.holm([e[m].p for e in effects])):
            found[i][m] = (effects[i][m], q)
    return found


def _ap_text(found: dict[str, tuple[stats.Effect, float]]) -> str:
    if not any(e.n for e, _ in found.values()):
        return "no pair where both runs learned"
    parts = [f"{m} {e.format()}" + ("" if math.isnan(q) else f", Holm p={q:.2g}") for m, (e, q) in found.items()]
    return "where both runs of a pair learned (arm − reference): " + "; ".join(parts)


def _collapses(p: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    return p["outcome"].isin(COLLAPSED), p["outcome_base"].isin(COLLAPSED)


#: A collapsed detector run: the protocol's failed kinds.
COLLAPSED = ("diverged", "stalled")


def q8_detector(s: pd.DataFrame) -> list[Answer]:
    """Q8: the detector at Adam 1e-2 in four arms. Primary: collapses (diverged or stalled) of global norm 10 against
    none, exact McNemar; secondary: warm-up against global norm 10, warm-up with global norm 10 against warm-up
    alone, Holm across the three contrasts; the AP of runs that learned (per arm, and paired where both runs of a
    pair learned, Holm across the three contrasts per metric) and each arm's clip share beside them; then which
    to reach for first (``q8_first``)."""
    rows = detector_runs(s)
    none, clip, warm, both = claims.STAGE3_DETECTOR_ARMS
    contrasts = [("Q8", clip, none), ("Q8 (warm-up vs clipping)", warm, clip), ("Q8 (warm-up + clipping vs warm-up)",
                                                                            both, warm)]  # fmt: skip
    found = [(q, arm, base, *_detector_pair(rows, arm, base)) for q, arm, base in contrasts]
    raw = []
    for _, _, _, p, _ in found:
        bad, bad_base = _collapses(p)
        raw.append(stats.exact_mcnemar(int((bad & ~bad_base).sum()), int((bad_base & ~bad).sum())) if len(p) else 1.0)
    adjusted = stats.holm(raw)
    ap = _both_learned_effects([p for *_, p, _ in found])
    answers = []
    for i, (question, arm, base, p, refused) in enumerate(found):
        where = (f"detector, Adam lr=0.01, 30,000 canvases, 3 epochs: {_arm_name(arm)} (the arm) vs {_arm_name(base)} "
                 "(the reference), collapses (diverged or stalled)")  # fmt: skip
        answer = _mcnemar_answer(question, p, where, "detector", refused, COLLAPSED,
                                 _two_arms(arm, base) if i else COLLAPSE, None if i == 0 else adjusted[i])  # fmt: skip
        answer.numbers += "; " + _ap_text(ap[i])
        if i == 0:
            answer.numbers += f"; among runs that learned: {_learned_ap(rows)}"
        answers.append(answer)
    return answers + [q8_first(answers[1], answers[2], ap[1]["final_AP"])]


def q8_first(warm_vs_clip: Answer, both_vs_warm: Answer, ap: tuple[stats.Effect, float]) -> Answer:
    """Which to reach for first against the detector's start-up collapse, warm-up or global norm 10, read from Q8's
    two secondary contrasts once both are complete (the rule of docs/protocol.md, "Q8: which first", added to the
    registration as a design change):

    * the arm with significantly fewer collapses (warm-up against global norm 10, exact McNemar, Holm p < 0.05);
    * if neither, the one with the higher final AP@[.5:.95] where both runs of a pair learned (at least 5 such
      pairs, Holm p < 0.05 across the three contrasts);
    * otherwise neither comes first: the runs do not tell them apart;
    * then whether to add global norm 10 to the warm-up: the warm-up with it against the warm-up alone.
    """
    question, where = "Q8 (which first)", "detector, Adam lr=0.01: warm-up vs global norm 10, then both vs warm-up"
    complete = warm_vs_clip.complete and both_vs_warm.complete
    basis = f"warm-up vs global norm 10: {warm_vs_clip.verdict}; warm-up + global norm 10 vs warm-up: " + (
        both_vs_warm.verdict)  # fmt: skip
    effect, p = ap
    if not complete:
        return Answer(
            question, _incomplete("read once Q8's contrasts are complete"), basis, None, where, False, stage=3
        )
    if warm_vs_clip.verdict.startswith("fewer"):
        first = "warm-up first: it collapsed significantly less often than global norm 10"
    elif warm_vs_clip.verdict.startswith("more"):
        first = "global norm 10 first: it collapsed significantly less often than the warm-up"
    elif p < contrasts.ALPHA:
        better = "warm-up" if effect.mean > 0 else "global norm 10"
        first = f"{better} first: as many collapses, a higher AP@[.5:.95] where both learned"
    else:
        first = "neither first: warm-up and global norm 10 differ significantly neither in collapses nor in AP"
    add = {
        "fewer": "; add global norm 10 to the warm-up: together they collapsed significantly less often",
        "more": "; do not add global norm 10 to the warm-up: together they collapsed significantly more often",
    }
    first += add.get(both_vs_warm.verdict.split()[0], "; adding global norm 10 to the warm-up changed collapses "
                                                     "by no significant amount")  # fmt: skip
    numbers = f"{basis}; AP@[.5:.95], warm-up − global norm 10, where both learned: {effect.format()}" + (
        "" if math.isnan(p) else f", Holm p={p:.2g}")  # fmt: skip
    return Answer(question, first, numbers, None, where, True, stage=3)


def answers(summaries: pd.DataFrame, epochs: pd.DataFrame) -> list[Answer]:
    """Every stage-3 answer (Q5a, Q5b, Q6, Q7, Q8) over the profile's runs (summaries with ``platform``)."""
    if summaries.empty:
        return []
    return [*q5a_divergence(summaries), *q5b_learning(summaries, epochs), *q6_tuned(summaries),
            *q7_thresholds(summaries), *q8_detector(summaries)]  # fmt: skip
