"""Every claim rule reaches each of its verdicts on small synthetic run tables.

Each case builds the runs a profile could have produced (three seeds per cell unless said), and the
expected verdict follows from the rule text in ``claims.CLAIMS`` by hand: a paired 95% t-interval
over seeds of (clipped − unclipped) wholly above 0 is "better", wholly below 0 "worse".
"""
import pandas as pd
import pytest

from clipstudy.analysis import claims

SEEDS = (0, 1, 2)
BASE = [0.90, 0.91, 0.92]
HIGHER = [0.95, 0.96, 0.975]       # +0.05, +0.05, +0.055: interval above 0
LOWER = [0.85, 0.86, 0.865]        # −0.05, −0.05, −0.055: interval below 0
NOISY = [0.92, 0.90, 0.95]         # +0.02, −0.01, +0.03: interval across 0


def cell(task="classifier", optimizer="adam", lr=0.001, method="none", clip="-", values=BASE, clip_fraction=0.3,
         diverged=False, parameters=None, grew=False):
    """The runs of one method setting in one cell: (summary rows, step rows, epoch rows)."""
    metric = "final_test_accuracy" if task == "classifier" else "final_AP50"
    label = method if clip == "-" else f"{method} ({clip})"
    summaries, steps, epochs = [], [], []
    for seed, value in zip(SEEDS, values):
        run = f"{task}-{optimizer}-{lr}-{label}-{seed}"
        summaries.append({"run_id": run, "task": task, "settings_key": "{}", "optimizer": optimizer,
                          "learning_rate": lr, "seed": seed, "method": method, "label": label, "clip_params": clip,
                          metric: value, "diverged": diverged, "clip_fraction": 0.0 if method == "none" else clip_fraction,
                          "parameters": parameters or (225034 if task == "classifier" else 107326)})
        after = 1.5 if grew and method != "none" else 1.0
        steps.append({"run_id": run, "task": task, "method": method, "norm_before": 1.0, "norm_after": after})
        epochs.append({"run_id": run, "task": task, "step": 10, "test_accuracy": value})
    return summaries, steps, epochs


def verdicts(*cells):
    summaries = pd.DataFrame([r for c in cells for r in c[0]])
    steps = pd.DataFrame([r for c in cells for r in c[1]])
    epochs = pd.DataFrame([r for c in cells for r in c[2]])
    audit = claims.audit(summaries, steps, epochs)
    return dict(zip(audit["claim"], audit["verdict"]))


ARTICLE = dict(method="value", clip="threshold=5")


@pytest.mark.parametrize("claim, clipped, expected", [
    ("1", dict(ARTICLE, values=HIGHER), "supported"),
    ("1", dict(ARTICLE, values=LOWER), "refuted"),
    ("1", dict(ARTICLE, values=BASE, clip_fraction=0.0), "refuted"),     # never engaged: identical runs
    ("1", dict(ARTICLE, values=NOISY), "inconclusive"),
    ("1", dict(ARTICLE, values=HIGHER, optimizer="sgd"), "inconclusive"),  # not at the article's setting
    ("2", dict(ARTICLE, values=HIGHER), "supported"),
    ("2", dict(ARTICLE, values=LOWER), "refuted"),
    ("2", dict(ARTICLE, values=BASE, clip_fraction=0.0), "refuted"),
    ("2", dict(ARTICLE, values=NOISY), "inconclusive"),
])
def test_claims_1_and_2_compare_the_articles_value_clipping_with_the_unclipped_run(claim, clipped, expected):
    base = cell(optimizer=clipped.get("optimizer", "adam"))
    assert verdicts(base, cell(**clipped))[claim] == expected


@pytest.mark.parametrize("exploding", [False, True])
@pytest.mark.parametrize("grew, expected", [(False, "refuted"), (True, "inconclusive")])
def test_claim_3_is_refuted_only_while_no_clipping_raised_a_norm(exploding, grew, expected):
    cells = [cell(), cell(method="global_norm", clip="threshold=1", grew=grew)]
    if exploding:  # a cell where the unclipped run diverged in every seed
        cells += [cell(optimizer="sgd", lr=1.0, diverged=True),
                  cell(optimizer="sgd", lr=1.0, method="global_norm", clip="threshold=1", grew=grew)]
    assert verdicts(*cells)["3"] == expected


def test_claim_4_is_refuted_when_parameters_are_unchanged_and_clipping_adds_work():
    assert verdicts(cell(), cell(method="global_norm", clip="threshold=1"))["4"] == "refuted"


def test_claim_4_is_inconclusive_when_the_parameter_counts_differ():
    assert verdicts(cell(), cell(method="global_norm", clip="threshold=1", parameters=1000))["4"] == "inconclusive"


@pytest.mark.parametrize("values, expected", [(LOWER, "supported"), (NOISY, "inconclusive"), (HIGHER, "inconclusive")])
def test_claim_5_needs_one_setting_where_clipping_is_significantly_worse(values, expected):
    assert verdicts(cell(), cell(method="agc", clip="clip_factor=0.01", values=values))["5"] == expected


@pytest.mark.parametrize("second, expected", [
    (dict(clip="threshold=5", values=HIGHER), "supported"),
    (dict(clip="threshold=5", values=NOISY), "inconclusive"),
    (None, "inconclusive"),                                   # only one threshold compared
])
def test_claim_6_needs_two_thresholds_that_differ_significantly(second, expected):
    cells = [cell(), cell(method="global_norm", clip="threshold=1", values=BASE)]
    if second:
        cells.append(cell(method="global_norm", **second))
    assert verdicts(*cells)["6"] == expected


@pytest.mark.parametrize("optimizers, adam_values, expected", [
    (("sgd", "momentum", "rmsprop", "adam"), NOISY, "supported"),
    (("sgd", "momentum", "rmsprop", "adam"), LOWER, "refuted"),
    (("sgd", "adam"), NOISY, "inconclusive"),
])
def test_claim_7_checks_global_norm_at_each_optimizers_best_rate(optimizers, adam_values, expected):
    cells = []
    for opt in optimizers:
        cells += [cell(optimizer=opt), cell(optimizer=opt, method="global_norm", clip="threshold=1",
                                            values=adam_values if opt == "adam" else NOISY)]
    assert verdicts(*cells)["7"] == expected


@pytest.mark.parametrize("detector, classifier, expected", [
    (HIGHER, HIGHER, "supported"),
    (LOWER, NOISY, "refuted"),
    (HIGHER, NOISY, "inconclusive"),   # helps detection only
    (None, HIGHER, "inconclusive"),    # no detector runs
])
def test_claim_8_needs_gains_in_both_tasks(detector, classifier, expected):
    cells = [cell(), cell(method="zclip", clip="z_thresh=2.5", values=classifier)]
    if detector:
        cells += [cell(task="detector", lr=0.003),
                  cell(task="detector", lr=0.003, method="zclip", clip="z_thresh=2.5", values=detector)]
    assert verdicts(*cells)["8"] == expected
