"""Aggregation of run folders into tidy tables, and the HTML report build."""

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from clipstudy.analysis import claims, report, stage1, stage2, stats
from clipstudy.orchestration import build_report
from clipstudy.study import profiles
from clipstudy.study import runfiles as runs
from clipstudy.training import RunConfig, RunResult


def fake_run(method, optimizer, lr, seed, accuracy, diverged=False, clip_fraction=0.0):
    steps = pd.DataFrame(
        {
            "step": [1, 2, 3, 4],
            "epoch": [1, 1, 2, 2],
            "loss": [2.3, 1.0, 0.5, 0.4],
            "norm_before": [3.0, 2.0, 1.5, 1.0],
            "norm_after": [1.0, 1.0, 1.0, 1.0],
            "clipped": [1.0, 1.0, 1.0, 0.0],
            "threshold": [1.0] * 4,
            "nonfinite": [False] * 4,
            "step_time_s": [0.01] * 4,
        }
    )
    epochs = pd.DataFrame(
        {
            "epoch": [1, 2],
            "step": [2, 4],
            "train_loss": [1.5, 0.45],
            "train_accuracy": [0.6, accuracy],
            "test_loss": [1.2, 0.5],
            "test_accuracy": [0.7, accuracy],
            "wall_time_s": [1.0, 2.0],
            "eval_time_s": [0.1, 0.1],
        }
    )
    params = RunConfig(
        method=method,
        clip_params={"threshold": 1.0} if method != "none" else {},
        optimizer=optimizer,
        learning_rate=lr,
        seed=seed,
        epochs=2,
    )
    summary = {
        "method": method,
        "optimizer": optimizer,
        "learning_rate": lr,
        "seed": seed,
        "final_test_accuracy": accuracy if not diverged else math.nan,
        "diverged": diverged,
        "clip_fraction": clip_fraction,
        "steps_to_98": math.nan,
        "clip_params": params.clip_params,
        "parameters": 225034,
        "median_step_time_s": 0.010 if method == "none" else 0.0101,
    }
    return RunResult(steps, epochs, summary), params


PROFILE = {
    "experiments": [
        {
            "name": "fake",
            "task": "classifier",
            "settings": {"epochs": 2},
            "methods": ["none", {"method": "global_norm", "threshold": 1.0}],
            "optimizers": {"adam": [0.001], "sgd": [0.1]},
            "seeds": [0, 1],
        }
    ]
}
ACCURACY = {
    ("none", "adam", 0): 0.90,
    ("none", "adam", 1): 0.80,
    ("global_norm", "adam", 0): 0.95,
    ("global_norm", "adam", 1): 0.85,
    ("none", "sgd", 0): 0.5,
    ("none", "sgd", 1): 0.5,
    ("global_norm", "sgd", 0): 0.6,
    ("global_norm", "sgd", 1): 0.7,
}


@pytest.fixture
def profile_path(tmp_path):
    """A profile file whose planned runs all exist as fake run folders, plus a failed and a killed run."""
    import yaml

    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(PROFILE))
    root = tmp_path / "reports" / "fake" / "runs"
    _, specs = profiles.load_profile(path)
    for spec in specs:
        p = spec.config
        result, _ = fake_run(
            p.method,
            p.optimizer,
            p.learning_rate,
            p.seed,
            ACCURACY[(p.method, p.optimizer, p.seed)],
            diverged=(p.method == "none" and p.optimizer == "sgd"),
            clip_fraction=0.75 if p.method != "none" else 0,
        )
        runs.save_run(result, root / spec.run_id, p)
    (root / "broken").mkdir()
    runs.write_json_atomic({"error": "ValueError: boom"}, root / "broken" / runs.ERROR)
    (root / "killed").mkdir()
    stale, _ = fake_run("none", "adam", 0.001, 0, 0.1)
    runs.save_run(stale, root / "left-over-from-an-older-profile", RunConfig())
    return path


@pytest.fixture
def runs_root(profile_path):
    return profile_path.parent / "reports" / "fake" / "runs"


def test_load_runs_reads_every_finished_run_into_tidy_tables(runs_root):
    table = report.load_runs(runs_root)
    assert len(table.summaries) == 9  # the eight planned and the left-over one
    assert len(table.steps) == 9 * 4 and len(table.epochs) == 9 * 2
    assert table.failed.to_dict("records") == [{"run_id": "broken", "error": "ValueError: boom"}]
    assert set(table.steps.columns) >= {"run_id", "method", "optimizer", "learning_rate", "seed", "norm_before"}
    assert table.summaries["final_test_accuracy"].isna().sum() == 2  # the diverged runs: JSON null is NaN again


def test_a_profiles_report_reads_only_its_planned_runs(profile_path):
    name, table, missing = report.load_profile_runs(profile_path, profile_path.parent / "reports")
    assert name == "fake" and len(table.summaries) == 8 and missing == []
    assert "left-over-from-an-older-profile" not in set(table.summaries["run_id"])


def test_method_table_averages_over_seeds(profile_path):
    _, table, _ = report.load_profile_runs(profile_path, profile_path.parent / "reports")
    t = report.method_table(table.summaries)
    row = t[(t.optimizer == "adam") & (t.method == "global_norm")].iloc[0]
    assert row["runs"] == 2
    assert row["test_accuracy median"] == pytest.approx(np.median([0.95, 0.85]))
    assert (row["test_accuracy min"], row["test_accuracy max"]) == (0.85, 0.95)
    assert row["clip_fraction"] == pytest.approx(0.75)
    sgd_none = t[(t.optimizer == "sgd") & (t.method == "none")].iloc[0]
    assert (sgd_none["diverged"], sgd_none["stalled"], sgd_none["learned"]) == (sgd_none["runs"], 0, 0)
    assert np.isnan(sgd_none["test_accuracy median"])  # a diverged run's metric is never averaged
    assert t[t.optimizer == "adam"]["method"].tolist() == ["none", "global_norm"]  # study order


def test_no_runs_says_to_run_the_sweep(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the sweep first"):
        report.load_runs(tmp_path / "reports" / "nothing" / "runs")


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """The smoke profile's report, built from its real runs (``make test`` runs the smoke sweep first) in a
    scratch reports folder beside a `make bench`-shaped measurement with hand-set ratios, so that the cost
    figure is drawn whether or not this machine has run `make bench` (and a user's reports/bench.json is
    never touched)."""
    import json

    from clipstudy import paths

    runs = paths.reports_dir() / "smoke" / "runs"
    if not runs.is_dir():
        pytest.fail("reports/smoke/runs is missing: run `make smoke-runs` (make test does it for you)")
    scratch = tmp_path_factory.mktemp("reports")
    (scratch / "smoke").mkdir()
    (scratch / "smoke" / "runs").symlink_to(runs.resolve())
    overhead = {m: {"ratio": r, "median_step_s": 0.05 * r, "steps": 165} for m, r in BENCH_RATIOS.items()}
    bench = {"overhead": overhead, "platform": {"cpu_model_name": "test CPU"}, "date": "2026-01-01"}
    (scratch / "bench.json").write_text(json.dumps(bench))
    return build_report.build_report("smoke", scratch)


#: The hand-set step-time ratios of the smoke report's bench measurement.
BENCH_RATIOS = {
    "none": 1.0,
    "value": 1.01,
    "norm": 1.02,
    "global_norm": 1.03,
    "agc": 1.04,
    "autoclip": 1.06,
    "zclip": 1.07,
}


def test_the_report_is_exported_to_html_without_code_and_saves_figures(smoke_report):
    text = smoke_report.read_text()
    assert "<title>When does gradient clipping help? A reproducible audit: profile smoke</title>" in text
    assert "report.load_runs" not in text and "NBVAL_CHECK_OUTPUT" not in text  # no code, no nbval-only cells
    claims_csv = pd.read_csv(smoke_report.parent / "claims.csv", dtype={"claim": str})
    assert claims_csv["claim"].tolist() == ["1", "2", "3a", "3b", "4", "5", "6", "7", "8"]
    assert set(claims_csv["verdict"]) <= {"supported", "refuted", "inconclusive"}
    assert set(claims_csv["kind"]) <= {"data", "deterministic", "by construction"}
    assert {"effect", "ci_low", "ci_high", "p_value", "n", "primary", "secondary"} <= set(claims_csv.columns)
    assert "Claim 4:" in text and "Provenance" in text
    assert "zclip 1.070" in claims_csv.set_index("claim").loc["4", "numbers"]  # claim 4 reads the bench file
    assert "make bench, test CPU, 2026-01-01" in text  # and so does the cost figure's caption
    figures = smoke_report.parent / "figures"
    for name in [
        "learning_curves",
        "final_accuracy",
        "clip_fraction",
        "norms_adam",
        "stability_map",
        "detector_ap50",
        "overhead",
    ]:
        assert (figures / f"{name}.png").stat().st_size > 1000
        assert (figures / f"{name}.svg").exists()


def test_the_report_in_a_real_browser(smoke_report):
    """Headless Chromium (Debian's, driven by Playwright): every image loads, one claims row per claim,
    nothing wider than a 1280 px window, a title naming the study; the top of the page is kept as
    reports/smoke/report-top.png."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "no chromium on PATH: `make test` installs Debian's (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            view = browser.new_page(viewport={"width": 1280, "height": 1000})
            requests = []
            view.on("request", lambda r: requests.append(r.url))
            view.goto(smoke_report.resolve().as_uri())
            view.wait_for_load_state("load")
            found = view.evaluate("""() => ({
                images: Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt})),
                claims: document.querySelectorAll('table.cs-claims tbody tr').length,
                width: document.documentElement.scrollWidth,
                links: Array.from(document.querySelectorAll('table.cs-claims a')).map(a => a.getAttribute('href'))
                    .filter(h => !document.querySelector(h)).length})""")
            view.screenshot(path=str(smoke_report.parent / "report-top.png"))
            title = view.title()
        finally:
            browser.close()
    assert len(found["images"]) >= 8 and all(i["ok"] for i in found["images"])
    assert all(len(i["alt"]) > 10 for i in found["images"])
    assert found["claims"] == len(stage1.CLAIMS)
    assert found["width"] <= 1280
    assert "gradient clipping" in title and "smoke" in title
    outside = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert outside == [], f"the page requests {outside}: it must work offline"
    # a claim whose figure the profile cannot draw links nowhere; smoke draws every one but the spike figure
    assert found["links"] <= 1


def test_runs_with_thresholds_from_data_are_grouped_by_their_rule(tmp_path):
    root = tmp_path / "runs"
    for seed, threshold in ((0, 0.4), (1, 0.7)):
        result, params = fake_run("global_norm", "sgd", 0.1, seed, 0.9)
        params = params.replace(
            clip_params={"threshold": threshold},
            threshold_rule="probe_percentile 50 of probe-classifier-none-sgd-lr0.1-s7777-x",
        )
        runs.save_run(result, root / f"run{seed}", params)
    s = report.load_runs(root).summaries
    assert s["label"].unique().tolist() == ["global_norm (threshold=p50 of probe)"]


def test_a_report_of_an_incomplete_plan_is_refused_naming_each_run(profile_path, capsys):
    reports = profile_path.parent / "reports"
    root = reports / "fake" / "runs"
    victim = sorted(p.name for p in root.iterdir() if p.name.startswith("classifier-global_norm"))[0]
    import shutil

    shutil.rmtree(root / victim)
    assert build_report.main(["--profile", str(profile_path), "--reports", str(reports)]) == 1
    err = capsys.readouterr().err
    assert f"{victim}: not run yet" in err and "--allow-incomplete" in err
    assert not (reports / "fake" / "claims.csv").exists()


def test_an_allowed_incomplete_report_says_so_in_every_claim_row(profile_path):
    reports = profile_path.parent / "reports"
    root = reports / "fake" / "runs"
    victim = sorted(p.name for p in root.iterdir() if p.name.startswith("classifier-global_norm"))[0]
    import shutil

    shutil.rmtree(root / victim)
    html = build_report.build_report(profile_path, reports, allow_incomplete=True)
    table = pd.read_csv(reports / "fake" / "claims.csv", dtype={"claim": str})
    assert table["plan"].str.startswith("INCOMPLETE: 1 of 8").all() and table["plan"].str.contains(victim).all()
    assert "INCOMPLETE" in html.read_text()


def test_a_failed_build_leaves_the_previous_report_whole(smoke_report, monkeypatch):
    out = smoke_report.parent
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and "runs" not in p.parts}
    monkeypatch.setattr(report.claims, "audit", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_report.build_report("smoke", out.parent)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert after == before and not list(out.glob(".report-build-*"))


def test_an_unreadable_run_file_is_named(runs_root):
    victim = sorted(p for p in runs_root.iterdir() if p.name.startswith("classifier-none"))[0]
    (victim / runs.STEPS).write_bytes(b"PAR1 truncated")
    runs.write_manifest(victim)  # a file that matches its manifest and still cannot be read
    with pytest.raises(report.DamagedRun, match=f"run {victim.name}: .*steps.parquet cannot be read"):
        report.load_runs(runs_root)


def test_a_damaged_run_is_named_with_the_file_that_no_longer_matches(runs_root):
    victim = sorted(p for p in runs_root.iterdir() if p.name.startswith("classifier-none"))[0]
    (victim / runs.EPOCHS).write_bytes((victim / runs.EPOCHS).read_bytes()[:-10])
    with pytest.raises(report.DamagedRun, match=f"run {victim.name} is damaged: epochs.parquet has"):
        report.load_runs(runs_root)


def test_point_plots_draw_a_single_method_setting(runs_root):
    """A profile part-way through may have one method setting only (seaborn's dodge divides by levels − 1)."""
    from clipstudy.analysis import classifier_figures, plots

    s = report.load_runs(runs_root).summaries
    one = s[s["method"] == "none"].assign(steps_to_98=100.0)
    assert plots.final_metric_points(one, "final_test_accuracy") is not None
    assert classifier_figures.steps_to_target_points(one, "steps_to_98") is not None


def test_stability_map_keeps_one_training_length_and_labels_every_panel():
    """A 10-epoch cell beside a 3-epoch rate grid (the paper profile's Adam 1e-3) is not averaged into
    the grid's cell, and a panel whose optimizer has other method settings than its neighbour's
    labels its own rows."""
    import matplotlib.pyplot as plt

    from clipstudy.analysis import classifier_figures

    rows = []
    for lr, acc in [(0.001, 0.50), (0.01, 0.40)]:
        rows += [
            {
                "optimizer": "adam",
                "method": m,
                "clip_params": {},
                "learning_rate": lr,
                "seed": s,
                "epochs": 3,
                "final_test_accuracy": acc,
                "diverged": False,
            }
            for m in ("none", "agc")
            for s in (0, 1)
        ]
    rows += [
        {
            "optimizer": "adam",
            "method": "none",
            "clip_params": {},
            "learning_rate": 0.001,
            "seed": s,
            "epochs": 10,
            "final_test_accuracy": 0.90,
            "diverged": False,
        }
        for s in (0, 1)
    ]
    rows += [
        {
            "optimizer": "sgd",
            "method": "none",
            "clip_params": {},
            "learning_rate": lr,
            "seed": 0,
            "epochs": 3,
            "final_test_accuracy": 0.30,
            "diverged": False,
        }
        for lr in (0.1, 1.0)
    ]
    rows = [{**r, "settings_key": f'{{"epochs": {r["epochs"]}}}'} for r in rows]  # the condition, as load_runs keys it
    fig = classifier_figures.stability_map(pd.DataFrame(rows))
    adam, sgd = fig.axes[0], next(ax for ax in fig.axes if ax.get_title().startswith("sgd"))
    assert adam.get_title() == "adam (3 epochs)"  # the grid's length, not the lone 10-epoch cell
    assert sorted(t.get_text() for t in adam.texts) == ["0.400", "0.400", "0.500", "0.500"]  # 0.9 never mixed in
    assert [t.get_text() for t in sgd.get_yticklabels()] == ["none"]  # its own row, labelled
    assert len(adam.get_yticklabels()) == 2
    plt.close(fig)


def test_the_headline_figure_shares_one_scale_per_metric_marks_the_favoured_side_and_needs_five_seeds():
    """One panel per metric scale (0 at one place for every row in it), the side favouring clipping marked (right
    for accuracy, left for failure rates), an interval and p only from 5 seeds, the verdict in force written."""
    import matplotlib

    matplotlib.use("Agg")
    from clipstudy.analysis import study_figures

    def row(name, metric, effect, low, high, n, verdict, p=0.5):
        return {"row": name, "stage": "stage 1 (exploratory)", "metric": metric, "effect": effect, "low": low,
                "high": high, "margin": 0.002, "p": p, "n": n, "verdict": verdict, "answer": ""}  # fmt: skip

    nan = float("nan")
    rows = pd.DataFrame(
        [
            row("a", "Δ final test accuracy", 0.001, -0.002, 0.004, 5, "refuted"),
            row("b", "Δ area under test accuracy", 0.003, -5.0, 5.0, 4, "inconclusive"),  # 4 seeds: no interval
            row("c", "Δ final test accuracy", nan, nan, nan, 0, "inconclusive"),
            row("d", "Δ failure rate", -0.6, nan, nan, 20, "supported", p=0.001),
        ]
    )
    fig = study_figures.forest(rows)
    acc, fail = fig.axes[:2]
    assert [t.get_text() for t in acc.get_yticklabels()] == ["a", "b", "c"]  # one shared x axis for the three
    assert [ln.get_gid() for ln in acc.lines if ln.get_gid()] == ["interval", "effect", "effect"]  # b: no interval
    assert acc.get_xlim()[1] < 0.01  # and the axis is not stretched by b's ±5
    assert any("no paired runs yet" in t.get_text() for t in acc.texts)
    favours = {ax: next(t for t in ax.texts if t.get_gid() == "favours").get_text() for ax in (acc, fail)}
    assert favours[acc] == "favours clipping →" and favours[fail] == "← favours clipping"
    notes = [t.get_text() for t in fig.texts if t.get_gid() == "verdict"]
    assert notes[0] == "refuted  (n=5, p=0.5)" and notes[1].startswith("inconclusive  (n=4, no p or interval")
    plt.close(fig)


def test_the_headline_labels_are_the_claims_tables_verdicts():
    """Each row of the headline carries the verdict the claims table holds for its claim (the one in force,
    stage 2's where it decided), never stage 1's superseded word."""
    nan = float("nan")
    audit = pd.DataFrame(
        [
            {"claim": "7", "kind": "data", "verdict": "inconclusive", "stage1_verdict": "supported",
             "decided_by": "stage 2 (Q1)", "effect": 0.001, "ci_low": -0.001, "ci_high": 0.003, "p_value": 0.2,
             "n": 20},
            {"claim": "4", "kind": "by construction", "verdict": "refuted", "stage1_verdict": "refuted",
             "decided_by": "stage 1", "effect": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n": 0},
        ]
    )  # fmt: skip
    answers = [stage2.Answer("Q1 sgd", "clipping better", "", stats.Effect(0.005, 0.001, 0.009, 5, 0.01, ""), "")]
    head = claims.headline(audit, answers)
    table = audit.set_index("claim")["verdict"]
    assert list(head["row"]) == ["claim 7", "claim 7 · Q1 sgd"]  # by construction: no row
    assert all(head["verdict"] == [table[c] for c in head["claim"]])
    assert list(head["answer"]) == ["stage 1's effect (superseded)", "Q1: clipping better"]


def test_method_table_never_averages_runs_of_different_lengths():
    rows = pd.DataFrame(
        [
            {"run_id": f"r{i}", "optimizer": "adam", "learning_rate": 1e-3, "epochs": e, "method": "none",
             "clip_params": "", "diverged": False, "failure": None, "final_test_accuracy": acc, "clip_fraction": 0.0}
            for i, (e, acc) in enumerate([(3, 0.98), (3, 0.982), (10, 0.991), (10, 0.990)])
        ]
    )  # fmt: skip
    t = report.method_table(rows)
    assert t["epochs"].tolist() == [3, 10]
    assert t["test_accuracy median"].tolist() == [pytest.approx(0.981), pytest.approx(0.9905)]


def test_runs_with_a_learning_rate_warm_up_are_never_put_with_runs_without_one():
    """Q8's warm-up arms share method, rate and length with the unclipped detector: the method table counts them
    apart (its warmup_steps column), and their label, which the figures group by, names the warm-up."""
    from clipstudy.analysis import contrasts

    def run(i, warmup, ap):
        key = {"epochs": 3} | ({"warmup_steps": warmup} if warmup else {})
        return {"run_id": f"r{i}", "optimizer": "adam", "learning_rate": 0.01, "epochs": 3, "method": "none",
                "clip_params": "", "settings_key": json.dumps(key), "diverged": False, "failure": None,
                "final_AP50": ap, "clip_fraction": 0.0}  # fmt: skip

    rows = pd.DataFrame([run(0, 0, 0.2), run(1, 0, 0.4), run(2, 300, 0.9), run(3, 300, 0.95)])
    t = report.method_table(rows, "final_AP50")
    assert t["warmup_steps"].tolist() == [0, 300] and t["runs"].tolist() == [2, 2]
    assert t["AP50 median"].tolist() == [pytest.approx(0.3), pytest.approx(0.925)]
    assert "warmup_steps" in report.design_view(t)
    assert "warmup_steps" not in report.method_table(rows.iloc[:2], "final_AP50")  # no column where none has one
    assert contrasts.run_label("none", "-", 300) == "none + warm-up 300"
    assert contrasts.run_label("none", "-", 0) == "none"
    assert contrasts.run_label("global_norm", "threshold=10", 300) == "global_norm (threshold=10) + warm-up 300"


def test_outcomes_are_counted_as_three_kinds_and_a_diverged_metric_is_never_summarised():
    """docs/protocol.md's kinds, from each run's fields: the loop's divergence, an explosion it did not stop
    (final loss above 100 times the loss at step 0, as the adding runs that ended at 1e15), the task's floor."""
    from clipstudy.analysis import outcomes

    def run(i, diverged, failure, loss, acc):
        return {"run_id": f"r{i}", "optimizer": "sgd", "learning_rate": 0.1, "epochs": 3, "method": "none",
                "clip_params": "", "diverged": diverged, "failure": failure, "final_train_loss": loss,
                "loss_start": 2.3, "final_test_accuracy": acc, "clip_fraction": 0.0}  # fmt: skip

    rows = pd.DataFrame(
        [
            run(0, True, "diverged: non-finite loss or gradient", float("nan"), 0.098),
            run(1, False, "collapsed: test accuracy 0.1135 < 0.2", 6.0e8, 0.1135),  # exploded: 2.6e8 x its start
            run(2, False, "collapsed: test accuracy 0.1135 < 0.2", 2.30, 0.1135),  # stalled at chance
            run(3, False, None, 0.05, 0.97),
            run(4, False, None, 0.04, 0.98),
        ]
    )
    assert outcomes.add_outcomes(rows)["outcome"].tolist() == ["diverged", "diverged", "stalled", "learned", "learned"]
    (row,) = report.method_table(rows).to_dict("records")
    assert (row["diverged"], row["stalled"], row["learned"]) == (2, 1, 2)
    kept = [0.1135, 0.97, 0.98]  # the stalled run stays; the two diverged runs do not enter the median
    assert row["test_accuracy median"] == pytest.approx(np.median(kept))
    assert (row["test_accuracy min"], row["test_accuracy max"]) == (min(kept), max(kept))
    assert outcomes.counts_text(["stalled", "learned", "stalled"]) == "2 stalled, 1 learned"
    assert "normalisation" in outcomes.clipping_words(0.994) and "normalisation" not in outcomes.clipping_words(0.3)


def test_stability_map_marks_collapsed_runs_and_tells_092_from_099():
    """Failed runs that collapsed (no divergence, a ``failure``) are marked; the colour is the error on a log
    scale, so 0.92 and 0.99 get clearly different colours (on a 0-1 accuracy scale both were the same yellow)."""
    import matplotlib.pyplot as plt

    from clipstudy.analysis import classifier_figures

    def run(lr, seed, acc, failure=None):
        return {"optimizer": "sgd", "method": "none", "clip_params": {}, "learning_rate": lr, "seed": seed,
                "epochs": 3, "settings_key": '{"epochs": 3}', "final_test_accuracy": acc, "diverged": False,
                "failure": failure}  # fmt: skip

    rows = [run(0.01, 0, 0.92), run(0.01, 1, 0.92), run(0.1, 0, 0.99), run(0.1, 1, 0.99)]
    rows += [
        run(1.0, 0, 0.11, "collapsed"),
        run(1.0, 1, 0.11, "collapsed"),
        run(0.3, 0, 0.5, "collapsed"),
        run(0.3, 1, 0.97),
    ]
    fig = classifier_figures.stability_map(pd.DataFrame(rows))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("×") == 1 and "0.735\n÷0.50" in texts
    colours = ax.collections[0].get_facecolors()
    assert np.abs(colours[0] - colours[1]).max() > 0.2  # lr 0.01 (0.92) against lr 0.1 (0.99)
    plt.close(fig)


def test_the_clip_fraction_caption_is_computed_from_the_frame_the_figure_draws():
    frame = pd.DataFrame(
        {"label": ["none", "none", "autoclip (percentile=10)", "autoclip (percentile=10)"],
         "method": ["none", "none", "autoclip", "autoclip"], "clip_fraction": [0.0, 0.0, 0.80, 0.774]}
    )  # fmt: skip
    caption = report.clip_fraction_caption(frame)
    assert "none 0; autoclip (percentile=10) 0.79." in caption  # (0.80 + 0.774) / 2 = 0.787


def test_norm_figures_draw_only_thresholds_that_are_global_norms():
    """value's ±5 is per element and AGC's 0.01 a ratio: neither belongs on a global-norm axis."""
    import matplotlib.pyplot as plt

    from clipstudy.analysis import plots

    steps = pd.DataFrame(
        [{"method": m, "label": m, "step": t, "seed": 0, "norm_before": 2.0, "norm_after": 1.0, "threshold": th}
         for m, th in (("value", 5.0), ("agc", 0.01), ("global_norm", 1.0)) for t in range(3)]
    )  # fmt: skip
    fig = plots.norms_by_method(steps, "norms")
    levels = {
        ax.get_title().split(" = ")[-1]: {float(y) for line in ax.lines for y in line.get_ydata()}
        for ax in fig.axes
        if ax.get_title()
    }
    assert 1.0 in levels["global_norm"]  # its threshold, a global norm, is drawn
    assert 5.0 not in levels["value"] and 0.01 not in levels["agc"]
    assert {2.0, 1.0} <= levels["value"]  # the norms before and after still are
    plt.close(fig)


def test_the_training_loss_figure_starts_at_the_first_step_one_panel_per_condition():
    """Runs of 3 and 10 epochs get their own panels; each line starts at step 1 (before any evaluation) and is
    the median over seeds there; past step 50 it is smoothed; a diverged run's non-finite steps are left out."""
    import matplotlib.pyplot as plt

    from clipstudy.analysis import plots

    rows = []
    for epochs, run_len in ((3, 120), (10, 200)):
        for seed, offset in ((0, 0.0), (1, 1.0), (2, 2.0)):
            for step in range(1, run_len + 1):
                loss = 2.0 + offset if step <= 50 else 1.0
                if epochs == 3 and seed == 2 and step > 100:
                    loss = float("inf")  # diverged late
                rows.append(
                    {
                        "run_id": f"r{epochs}-{seed}",
                        "step": step,
                        "loss": loss,
                        "method": "none",
                        "label": "none",
                        "optimizer": "sgd",
                        "learning_rate": 0.1,
                        "seed": seed,
                        "settings_key": f'{{"epochs": {epochs}}}',
                    }
                )
    fig = plots.training_loss_from_the_first_step(pd.DataFrame(rows))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert sorted(ax.get_title() for ax in panels) == ["sgd, lr=0.1, 10 epochs", "sgd, lr=0.1, 3 epochs"]
    for ax in panels:
        (line,) = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]  # legend handles aside
        x, y = line.get_xdata(), line.get_ydata()
        assert x[0] == 1 and y[0] == 3.0  # the median of 2, 3 and 4 at step 1
        assert np.all(np.isfinite(y)) and ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert y[-1] == pytest.approx(1.0)  # past step 50, the smoothed plateau
    plt.close(fig)


def test_final_points_draw_every_run_mark_failures_and_keep_intervals_in_bounds():
    """Seeds that both collapse (AP50 0) and train (0.9) give a t interval wider than [0, 1]: drawn cut at the
    bounds; every run is a point, each failed one a red ×, and n = 2 gets no interval."""
    from clipstudy.analysis import plots

    rows = [("none", 0.01, s, v, "collapsed" if v < 0.01 else None) for s, v in enumerate([0.0, 0.0, 0.9, 0.92, 0.95])]
    rows += [("none", 0.003, s, v, None) for s, v in enumerate([0.97, 0.96])]
    frame = pd.DataFrame(rows, columns=["label", "learning_rate", "seed", "final_AP50", "failure"])
    frame = frame.assign(method="none", optimizer="adam")
    fig = plots.final_metric_points(frame, "final_AP50", (0.0, 1.0))
    ax = fig.axes[0]
    intervals = [line for line in ax.lines if line.get_gid() == "interval"]
    assert len(intervals) == 1  # the five-seed cell only
    low, high = intervals[0].get_ydata()
    expected = plots.t_interval([0.0, 0.0, 0.9, 0.92, 0.95])
    assert expected[0] < 0 < 1 < expected[1] and (low, high) == (0.0, 1.0)
    assert sum(c.get_offsets().shape[0] for c in ax.collections) == len(frame)  # every run a point
    failed = [c for c in ax.collections if tuple(np.round(c.get_edgecolor()[0][:3], 3)) == (0.839, 0.153, 0.157)]
    assert sum(c.get_offsets().shape[0] for c in failed) == 2
    (means,) = [line for line in ax.lines if line.get_gid() == "mean"]
    np.testing.assert_allclose(sorted(means.get_ydata()), [0.554, 0.965])
    plt.close(fig)


def test_curve_bands_stay_within_the_metrics_bounds():
    """Five seeds at each evaluation, three near 0 and two near 0.9: the t band runs below 0 (checked), and is
    drawn cut at the bounds."""
    from clipstudy.analysis import plots

    values = [0.0, 0.01, 0.0, 0.9, 0.92]
    assert plots.t_interval(values)[0] < -0.2
    rows = [(step, seed, v) for step in (100, 200, 300) for seed, v in enumerate(values)]
    epochs = pd.DataFrame(rows, columns=["step", "seed", "AP50"]).assign(
        label="none", method="none", optimizer="adam", learning_rate=0.01
    )
    fig = plots.curves_with_ci(epochs, "AP50", bounds=(0.0, 1.0))
    bands = [c for ax in fig.axes for c in ax.collections if len(c.get_paths())]
    ys = np.concatenate([p.vertices[:, 1] for c in bands for p in c.get_paths()])
    assert len(ys) and ys.min() >= 0.0 and ys.max() <= 1.0 and ys.min() == 0.0
    plt.close(fig)


def _adding_runs():
    rows = []
    for lr in (0.01, 0.1):
        for seed in range(5):
            for method, label, mse, diverged in (
                ("none", "none", 0.16 if lr == 0.01 else 1e37, lr == 0.1),
                ("global_norm", "global_norm (threshold=1)", 0.02 + 0.001 * seed, False),
            ):
                rows.append({"run_id": f"{label}-{lr}-{seed}", "method": method, "label": label, "seed": seed,
                             "learning_rate": lr, "optimizer": "sgd", "final_test_mse": mse, "diverged": diverged,
                             "failure": "diverged: x" if diverged else None, "final_train_loss": 0.1,
                             "loss_start": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_recurrent_figure_draws_runs_at_their_own_rate_inside_its_range_with_the_reference_lines():
    import matplotlib

    matplotlib.use("Agg")
    from clipstudy.analysis import plots

    fig = plots.recurrent_outcomes(_adding_runs())
    none, clipped = fig.axes[:2]
    for ax in (none, clipped):
        low, high = ax.get_ylim()
        for points in ax.collections:
            xy = points.get_offsets()
            assert set(np.round(xy[:, 0], 12)) <= {0.01, 0.1}  # at the rates run, never spread sideways
            inside = [y for (x, y), c in zip(xy, [points.get_facecolor()] * len(xy)) if y <= high]
            assert all(low <= y for y in inside)
        assert sorted(round(ln.get_ydata()[0], 4) for ln in ax.lines if ln.get_linestyle() in ("--", ":")) == [
            0.01, 0.0833, 0.1667]  # fmt: skip
    # the diverged runs at 0.1: red crosses above the axis, counted; their MSE of 1e37 is not drawn
    crosses = [c for c in none.collections if c.get_offsets()[:, 1].max() > none.get_ylim()[1]]
    assert len(crosses) == 1 and crosses[0].get_offsets()[0][0] == 0.1
    assert tuple(crosses[0].get_facecolor()[0][:3]) == pytest.approx(matplotlib.colors.to_rgb(plots.FAILED_COLOR))
    assert any(t.get_text() == "5" for t in none.texts)
    plt.close(fig)
    # a run that did not diverge but ended above MSE 1 is a triangle at the top edge, not a dot among the others
    runs = _adding_runs()
    runs.loc[runs["run_id"] == "global_norm (threshold=1)-0.1-0", "final_test_mse"] = 3.0
    fig = plots.recurrent_outcomes(runs)
    triangles = [c for c in fig.axes[1].collections if len(c.get_offsets()) and c.get_offsets()[:, 1].min() == 1.0]
    assert len(triangles) == 1 and [tuple(p) for p in triangles[0].get_offsets()] == [(0.1, 1.0)]
    plt.close(fig)


def test_one_colour_per_method_and_the_failure_marker_in_no_methods_colour():
    from matplotlib.colors import to_hex

    from clipstudy.analysis import plots
    from clipstudy.clipping import METHODS

    assert set(METHODS) <= set(plots.METHOD_COLORS)
    assert plots.FAILED_COLOR not in plots.METHOD_COLORS.values()
    assert len(set(plots.METHOD_COLORS.values())) == len(plots.METHOD_COLORS)
    runs = _adding_runs()
    two = pd.concat([runs, runs.assign(label="global_norm (threshold=5)", run_id=runs["run_id"] + "-5")])
    one, both = plots.label_colors(runs), plots.label_colors(two)
    assert to_hex(one["global_norm (threshold=1)"]) == plots.METHOD_COLORS["global_norm"]  # the same in any figure
    assert to_hex(one["none"]) == to_hex(both["none"]) == plots.METHOD_COLORS["none"]
    assert both["global_norm (threshold=1)"] != both["global_norm (threshold=5)"]  # two settings: two shades


def test_the_norm_histogram_weights_each_kept_step_by_the_steps_it_stands_for():
    """A bundle keeps steps 1-50 and then every 10th: weighted, the kept rows count every step of the run once."""
    from clipstudy.tasks.detection import figures as detection_figures

    kept = [*range(1, 51), *range(60, 201, 10)]
    steps = pd.DataFrame({"run_id": "r", "step": kept, "norm_before": 1.0, "learning_rate": 0.01})
    weights = detection_figures.step_weights(steps)
    assert weights.sum() == 200 and weights.iloc[:50].tolist() == [1.0] * 50 and set(weights.iloc[50:]) == {10.0}


def test_the_warm_up_figure_draws_every_q8_run_and_marks_each_collapse():
    """Q8's figure: one loss trace per run, cut at the first steps asked for, red where the run collapsed; the
    warm-up shaded in the warm-up arms only; every run's final AP a point, a collapsed one a red ×, and each panel's
    title counts its collapses."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_hex

    from clipstudy.palette import FAILED_COLOR
    from clipstudy.tasks.detection import figures as detection_figures

    arms = {"no clipping": 0, "global norm 10": 0, "warm-up": 300, "warm-up + global norm 10": 300}
    collapsed = {"no clipping": {0, 1, 2}, "global norm 10": {0, 1}, "warm-up": {2}, "warm-up + global norm 10": set()}
    runs = pd.DataFrame([{"run_id": f"{arm}-{seed}", "arm": arm, "warmup_steps": w, "seed": seed,
                          "outcome": "stalled" if seed in collapsed[arm] else "learned",
                          "final_AP": 0.0 if seed in collapsed[arm] else 0.6 + 0.01 * seed}
                         for arm, w in arms.items() for seed in range(4)])  # fmt: skip
    steps = pd.DataFrame([{"run_id": r, "step": k, "loss": 3.0 - k / 1000} for r in runs["run_id"]
                          for k in (*range(1, 51), *range(55, 1501, 5))])  # fmt: skip
    fig = detection_figures.warmup_arms(runs, steps, first_steps=600)
    *top, bottom = fig.axes
    assert [ax.get_title() for ax in top] == [f"{a}\n{len(collapsed[a])} of 4 collapsed" for a in arms]
    for ax, arm in zip(top, arms, strict=True):
        traces = ax.lines
        assert len(traces) == 4 and all(line.get_xdata().max() <= 600 for line in traces)
        red = [line for line in traces if to_hex(line.get_color()) == FAILED_COLOR]
        assert len(red) == len(collapsed[arm])
        assert len(ax.patches) == (1 if arms[arm] else 0)  # the warm-up's shaded steps
    points = [c for c in bottom.collections if c.get_offsets().shape[0]]
    crosses = [c for c in points if to_hex(c.get_facecolor()[0]) == FAILED_COLOR]
    assert sum(c.get_offsets().shape[0] for c in points) == len(runs)
    assert sum(c.get_offsets().shape[0] for c in crosses) == sum(len(v) for v in collapsed.values())
    assert len(bottom.lines) == 4  # one grey line per seed, joining its four runs
    plt.close(fig)


def test_the_cost_figure_reads_the_benchs_spread_and_draws_it(tmp_path):
    """make bench records each interleaved round's ratio; the figure draws the median ratio with the lowest and
    highest round's as whiskers (a bench file without rounds still draws, without them)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    from clipstudy.analysis import study_figures

    bench = {"date": "2026-12-04", "platform": {"cpu_model_name": "AMD EPYC"}, "overhead": {
        "none": {"ratio": 1.0, "round_ratios": [1.0, 1.0, 1.0]},
        "zclip": {"ratio": 1.07, "round_ratios": [1.05, 1.07, 1.12]},
    }}  # fmt: skip
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    ratios = report.overhead_ratios([tmp_path / "bench.json"])
    z = ratios.set_index("method").loc["zclip"]
    assert (z["ratio"], z["low"], z["high"], z["rounds"]) == (1.07, 1.05, 1.12, 3)
    assert z["source"] == "make bench, AMD EPYC, 2026-12-04"
    fig = study_figures.overhead_bars(ratios)
    (ax,) = fig.axes
    spread = [c for c in ax.containers if getattr(c, "get_gid", lambda: None)() == "spread"] or [
        c for c in ax.collections if c.get_gid() == "spread"
    ]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "zclip"]
    assert ax.get_ylim()[1] >= 1.12 and spread
    plt.close(fig)


def test_an_edited_published_file_is_named_first_on_the_page(tmp_path):
    """A summary, its manifest and index.json edited together pass every digest check; git's copy does not lie:
    the edited files are listed, and the page's first line says the numbers are not the published ones."""
    import subprocess

    from clipstudy.analysis import page

    repo = tmp_path / "repo"
    run = repo / "results" / "paper" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"final_test_accuracy": 0.664}')
    (repo / "results" / "paper" / "report").mkdir()
    (repo / "results" / "paper" / "report" / "claims.csv").write_text("claim\n1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "publish"], check=True)
    original = report.paths.REPO
    try:
        report.paths.REPO = repo
        assert report.bundle_edits(repo / "results" / "paper") == []
        (run / "summary.json").write_text('{"final_test_accuracy": 0.999}')
        (repo / "results" / "paper" / "runs" / "r2").mkdir()  # a new run is not an edit
        (repo / "results" / "paper" / "report" / "claims.csv").write_text("claim\n2\n")  # every build rewrites it
        edits = report.bundle_edits(repo / "results" / "paper")
    finally:
        report.paths.REPO = original
    assert edits == ["results/paper/runs/r1/summary.json"]
    audit = pd.DataFrame(columns=["claim", "verdict", "kind", "text", "words"])
    top = page.header(audit, "paper", "complete", edited=edits)
    assert top.index("THE BUNDLE DIFFERS FROM THE COMMITTED TREE") < top.index('<p class="cs-lead">')
    assert "results/paper/runs/r1/summary.json" in top


def test_make_reproduce_refuses_to_check_a_drawn_run_against_an_edited_published_copy(monkeypatch, capsys):
    """verify compares a retrained run with its published copy: an edited copy would make it check the edit, so
    a drawn run whose files differ from git's is refused by name; edits to other runs are only noted."""
    from types import SimpleNamespace

    from clipstudy.orchestration import verify

    edits = ["results/paper/runs/r1/summary.json", "results/paper/runs/r9/steps.parquet"]
    monkeypatch.setattr(verify.report, "bundle_edits", lambda root: edits)
    assert verify._edited_copies("paper", [SimpleNamespace(run_id="r1")]) == [edits[0]]
    assert "1 other file(s) of results/paper/ differ from git's copy" in capsys.readouterr().err
    assert verify._edited_copies("paper", [SimpleNamespace(run_id="r2")]) == []
    monkeypatch.setattr(verify, "_draw", lambda args: ([SimpleNamespace(run_id="r1")], set()))
    assert verify.main(["--profile", "paper"]) == 2
    err = capsys.readouterr().err
    assert "the published copies of 1 drawn run(s) differ from the committed ones" in err and "r1/summary.json" in err


def test_a_saved_figure_is_a_smaller_png_that_looks_the_same(tmp_path):
    """save_figure's PNG (a 256-colour palette where that is smaller) against matplotlib's own PNG of the same
    figure: same size in pixels, every pixel within a few levels of the original, and a smaller file."""
    from PIL import Image

    from clipstudy.analysis import plots

    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in range(12):
        ax.plot(np.cumsum(rng.normal(size=400)), lw=1, label=f"run {k}")
        ax.fill_between(range(400), -5 + k, 5 + k, alpha=0.1)
    ax.legend(ncol=3, fontsize=6)
    fig.savefig(tmp_path / "plain.png", format="png", dpi=120, bbox_inches="tight")
    (png,) = (p for p in plots.save_figure(fig, tmp_path, "saved") if p.suffix == ".png")
    plt.close(fig)
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("RGB"), dtype=int)
    saved = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    assert saved.shape == plain.shape
    assert np.abs(saved - plain).mean() < 1.0 and np.percentile(np.abs(saved - plain), 99.9) <= 32
    assert png.stat().st_size < (tmp_path / "plain.png").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.png", "saved.png", "saved.svg"]


def test_the_q3_robustness_check_is_worded_from_its_table():
    """Counted by hand: the unclipped arm collapsed 3 of 3 as published and 2 of 3 retrained; the clipped arm 1 of 3
    both ways; a run not retrained yet is left out of the counts and named in the total."""
    rows = [
        ("none", 5, True, True), ("none", 6, True, False), ("none", 7, True, True),
        ("global_norm (threshold=10)", 5, False, False), ("global_norm (threshold=10)", 6, False, False),
        ("global_norm (threshold=10)", 7, True, True), ("global_norm (threshold=p50 of probe)", 5, False, None),
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=["arm", "seed", "published_collapsed", "retrained_collapsed"])
    table["retrained_platform"] = [None if r[3] is None else "cpu_family=25" for r in rows]
    words = stage2.q3_one_cpu_words(table)
    assert "none: 2 of 3 collapsed retrained, 3 of 3 as published" in words
    assert "global_norm (threshold=10): 1 of 3 collapsed retrained, 1 of 3 as published" in words
    assert "p50" not in words and "(6 of 7 runs retrained)" in words and "(cpu_family=25)" in words
    assert stage2.q3_one_cpu_words(table.assign(retrained_collapsed=None)).endswith(
        "not been retrained on one CPU yet."
    )


def test_the_q3_robustness_check_counts_rescues_only_within_one_cpu():
    """Counted by hand: seeds 5-7 unclipped retrained on CPU A (collapsed, collapsed, learned); the clipped arm's seed 5
    retrained on A (learned: rescued), seed 6 published from A and not retrained (learned: rescued), seed 7 published
    from B (not a pair): 2 rescued of 2 pairs."""
    rows = [
        ("none", 5, True, "B", True, "A"), ("none", 6, True, "B", True, "A"), ("none", 7, True, "B", False, "A"),
        ("gn", 5, False, "A", False, "A"), ("gn", 6, False, "A", None, None), ("gn", 7, False, "B", None, None),
    ]  # fmt: skip
    columns = ["arm", "seed", "published_collapsed", "published_platform", "retrained_collapsed", "retrained_platform"]
    words = stage2.q3_one_cpu_words(pd.DataFrame(rows, columns=columns))
    assert "Pairs within one CPU" in words and "gn rescued 2 of 2." in words
    moved = [(*r[:3], "B" if r[0] == "gn" else r[3], *r[4:]) for r in rows]  # every clipped run published from B
    moved[3] = (*moved[3][:4], None, None)  # and none retrained: no pair on one CPU
    assert "Pairs within one CPU" not in stage2.q3_one_cpu_words(pd.DataFrame(moved, columns=columns))
