"""Every claim rule reaches each of its verdicts on small synthetic run tables.

Each case builds the runs a profile could have produced (five seeds per cell unless said). The
expected verdict follows by hand from the rule text in ``stage1.CLAIMS``: a paired 95% t-interval
of (clipped − unclipped) over seeds wholly above 0 is "better", wholly below 0 "worse".
"""

import pandas as pd
import pytest

from clipstudy.analysis import stage1

SEEDS = 5
BASE = [0.90, 0.91, 0.92, 0.93, 0.94]
HIGHER = [0.95, 0.96, 0.975, 0.98, 0.995]  # +0.05 … +0.055: interval above 0
LOWER = [0.85, 0.86, 0.865, 0.88, 0.885]  # −0.05 … −0.055: interval below 0
NOISY = [0.92, 0.90, 0.95, 0.92, 0.93]  # +0.02, −0.01, +0.03, −0.01, −0.01: interval across 0
WILD = [0.95, 0.86, 0.97, 0.88, 0.93]  # ±0.05: even pooled over four optimizers, the interval is wide
TIED = [0.9001, 0.9099, 0.9201, 0.9299, 0.9401]  # ±0.0001: interval inside every margin


def cell(
    task="classifier",
    optimizer="adam",
    lr=0.001,
    method="none",
    clip="-",
    values=BASE,
    val=None,
    clip_fraction=0.3,
    failed=None,
    spiked=False,
    digest=None,
    seeds=SEEDS,
    steps_planned=100,
):
    """The summary rows of one method setting in one cell, one per seed."""
    metric = "final_test_accuracy" if task == "classifier" else "final_AP50"
    label = method if clip == "-" else f"{method} ({clip})"
    rows = []
    for seed, value in list(enumerate(values))[:seeds]:
        rows.append(
            {
                "run_id": f"{task}-{optimizer}-{lr}-{label}-{spiked}-{seed}",
                "task": task,
                "settings_key": '{"spikes": 1}' if spiked else "{}",
                "optimizer": optimizer,
                "learning_rate": lr,
                "seed": seed,
                "method": method,
                "label": label,
                "clip_params": clip,
                metric: value,
                "spiked": spiked,
                "diverged": False,
                "failure": (failed[seed] if failed else None),
                "clip_fraction": 0.0 if method == "none" else clip_fraction,
                "steps_planned": steps_planned,
                "parameters": 225034 if task == "classifier" else 107326,
                "outcome_sha256": digest(seed) if digest else f"{label}-{seed}",
                **({f"final_val_{'accuracy' if task == 'classifier' else 'AP50'}": val[seed]} if val else {}),
            }
        )
    return rows


def epochs_of(rows):
    """One evaluation per run at the final value: its learning-curve area is that value."""
    return pd.DataFrame(
        [
            {"run_id": r["run_id"], "task": r["task"], "step": 10, "test_accuracy": r.get("final_test_accuracy", 0.0)}
            for r in rows
        ]
    )


def verdict(claim, *cells):
    rows = [r for c in cells for r in c]
    audit = stage1.audit(pd.DataFrame(rows), epochs_of(rows)).set_index("claim")
    return audit.loc[claim, "verdict"], audit.loc[claim, "kind"]


ARTICLE = dict(method="value", clip="threshold=5")
SAME = lambda seed: f"same-{seed}"  # noqa: E731  (a digest both runs of a pair share)


@pytest.mark.parametrize("claim", ["1", "2"])
@pytest.mark.parametrize(
    "clipped, expected",
    [
        (dict(ARTICLE, values=HIGHER), ("supported", "data")),
        (dict(ARTICLE, values=LOWER), ("refuted", "data")),
        (dict(ARTICLE, values=TIED), ("refuted", "data")),  # no effect beyond the margin
        (dict(ARTICLE, values=NOISY), ("inconclusive", "data")),
        (dict(ARTICLE, values=HIGHER, seeds=3), ("inconclusive", "data")),  # three seeds cannot decide
        (dict(ARTICLE, values=BASE, clip_fraction=0.0, digest=SAME, seeds=2), ("refuted", "deterministic")),
    ],
)
def test_claims_1_and_2_compare_the_articles_value_clipping_with_the_unclipped_run(claim, clipped, expected):
    base = cell(digest=clipped.get("digest"), seeds=clipped.get("seeds", SEEDS))
    assert verdict(claim, base, cell(**clipped)) == expected


def test_claims_1_and_2_read_the_longest_trained_condition_at_the_articles_setting():
    short = [dict(r, settings_key="short", steps_planned=10) for r in cell(**ARTICLE, values=LOWER)]
    short_base = [dict(r, settings_key="short", steps_planned=10) for r in cell()]
    assert verdict("2", short_base, short, cell(), cell(**ARTICLE, values=HIGHER))[0] == "supported"


SPIKED = dict(spiked=True, optimizer="sgd", lr=0.1)
ALL_FAIL = ["diverged"] * SEEDS


@pytest.mark.parametrize(
    "base_failed, clipped_failed, seeds, expected",
    [
        (ALL_FAIL, None, SEEDS, "supported"),  # ten rescues over two cells, none broken: McNemar p = 0.002
        (None, ALL_FAIL, SEEDS, "refuted"),  # clipping broke ten runs
        (ALL_FAIL, ALL_FAIL, SEEDS, "refuted"),  # it failed as often where the unclipped run failed
        (None, None, SEEDS, "inconclusive"),  # nothing to prevent
        (ALL_FAIL, None, 3, "inconclusive"),  # three seeds
    ],
)
def test_claim_3a_compares_failure_rates_under_injected_spikes(base_failed, clipped_failed, seeds, expected):
    cells = []
    for opt in ("sgd", "momentum"):
        spec = dict(SPIKED, optimizer=opt, seeds=seeds)
        cells += [
            cell(**spec, failed=base_failed),
            cell(**spec, method="global_norm", clip="threshold=1", failed=clipped_failed),
        ]
    assert verdict("3a", *cells) == (expected, "data")


def test_a_rescued_run_counts_as_a_benefit_of_clipping():
    rows = []
    for opt in ("sgd", "momentum"):  # stage 1's five seeds in two cells: ten pairs
        spec = dict(SPIKED, optimizer=opt)
        rows += [
            cell(**spec, failed=ALL_FAIL, values=[0.11] * 5),
            cell(**spec, method="global_norm", clip="threshold=1", values=BASE),
        ]
    extra = [{**r, "seed": 10, "run_id": f"{r['run_id']}-stage3"} for r in rows[0]]  # stage 3's seed: left out
    audit = stage1.audit(pd.DataFrame([r for c in [*rows, extra] for r in c]), epochs_of([r for c in rows for r in c]))
    row = audit.set_index("claim").loc["3a"]
    assert row["verdict"] == "supported" and "rescued by clipping 10" in row["numbers"]


@pytest.mark.parametrize("claim", ["3b", "4"])
def test_claims_3b_and_4_are_refuted_by_construction_whatever_the_data(claim):
    assert verdict(claim, cell(), cell(method="global_norm", clip="threshold=1", values=HIGHER)) == (
        "refuted",
        "by construction",
    )


HARM = dict(optimizer="sgd", lr=0.1)


@pytest.mark.parametrize(
    "values, expected",
    [
        (LOWER, "supported"),
        (HIGHER, "refuted"),
        (NOISY, "inconclusive"),
        (TIED, "inconclusive"),  # one null cell does not refute "in some settings"
    ],
)
def test_claim_5_reads_the_preregistered_harm_cell(values, expected):
    assert (
        verdict("5", cell(**HARM), cell(**HARM, method="autoclip", clip="percentile=10", values=values))[0] == expected
    )


@pytest.mark.parametrize(
    "high, expected", [(HIGHER, "supported"), (LOWER, "supported"), (TIED, "refuted"), (NOISY, "inconclusive")]
)
def test_claim_6_compares_two_thresholds_in_either_direction(high, expected):
    low = cell(**HARM, method="global_norm", clip="threshold=1")
    assert (
        verdict("6", cell(**HARM), low, cell(**HARM, method="global_norm", clip="threshold=5", values=high))[0]
        == expected
    )


def optimizer_grid(optimizers=("sgd", "momentum", "rmsprop", "adam"), clipped=TIED, val=True):
    cells = []
    for opt in optimizers:
        v = BASE if val else None
        cells += [
            cell(optimizer=opt, lr=0.01, val=v),
            cell(optimizer=opt, lr=0.01, method="global_norm", clip="threshold=1", values=clipped, val=v),
        ]
    return cells


@pytest.mark.parametrize(
    "grid, expected",
    [
        (optimizer_grid(), "supported"),
        (optimizer_grid(clipped=LOWER), "refuted"),
        (optimizer_grid(clipped=WILD), "inconclusive"),
        (optimizer_grid(optimizers=("sgd", "adam")), "inconclusive"),
        (optimizer_grid(val=False), "inconclusive"),  # no validation split: rates cannot be chosen
    ],
)
def test_claim_7_is_non_inferiority_at_each_optimizers_best_rate(grid, expected):
    assert verdict("7", *grid)[0] == expected


def test_claim_7_chooses_the_rate_on_validation_not_on_test():
    grid = optimizer_grid()
    for opt in ("sgd", "momentum", "rmsprop", "adam"):
        # At lr 0.1 the unclipped run is better on test but worse on validation, and clipping hurts there.
        grid += [
            cell(optimizer=opt, lr=0.1, values=HIGHER, val=LOWER),
            cell(optimizer=opt, lr=0.1, method="global_norm", clip="threshold=1", values=LOWER, val=LOWER),
        ]
    assert verdict("7", *grid)[0] == "supported"


@pytest.mark.parametrize(
    "values, expected", [(HIGHER, "supported"), (LOWER, "refuted"), (TIED, "refuted"), (NOISY, "inconclusive")]
)
def test_claim_8_reads_the_detector_at_its_best_rate_on_validation(values, expected):
    det = dict(task="detector", lr=0.003, val=BASE)
    assert (
        verdict("8", cell(**det), cell(**det, method="global_norm", clip="threshold=10", values=values))[0] == expected
    )


def test_claim_8_without_validation_canvases_is_inconclusive():
    det = dict(task="detector", lr=0.003)
    assert (
        verdict("8", cell(**det), cell(**det, method="global_norm", clip="threshold=10", values=HIGHER))[0]
        == "inconclusive"
    )


def test_the_stage_1_audit_leaves_the_confirmatory_seeds_out():
    """Runs of seeds 5-9 (stage 2) arriving in a profile do not move stage 1's verdicts."""
    first = cell(method="value", clip="threshold=5", values=HIGHER) + cell(values=BASE)
    second = [{**r, "seed": r["seed"] + 5, "run_id": r["run_id"] + "-c"} for r in cell(values=HIGHER)]
    alone = stage1.audit(pd.DataFrame(first), epochs_of(first))
    both = stage1.audit(pd.DataFrame(first + second), epochs_of(first + second))
    pd.testing.assert_frame_equal(alone[["claim", "verdict", "effect", "n"]], both[["claim", "verdict", "effect", "n"]])
