"""Building a profile's report: ``claims.csv`` written, the report notebook executed and exported to HTML without
code, all in a staging folder swapped in at the end (a failed or killed build leaves the previous report whole),
and, for a published profile, the report copied into its bundle.

    python -m clipstudy.orchestration.build_report --profile quick [--allow-incomplete]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat

from clipstudy import paths
from clipstudy.analysis import claims, page
from clipstudy.analysis.report import DamagedRun, ProfileReport
from clipstudy.fileio import DISK_FULL, naming_full_disk
from clipstudy.study import notebooks, probes
from clipstudy.study.lock import FolderBusy, SweepLock
from clipstudy.study.plan import Plan, load_plan
from clipstudy.study.profiles import ProfileError


class IncompletePlan(RuntimeError):
    """Some planned runs are missing or failed: no verdicts from part of a plan unless asked."""


#: What a report build writes; they are built together in a staging folder and swapped in together.
REPORT_OUTPUTS = ("claims.csv", "report.ipynb", "report.html", "figures")


def build_report(profile: str | Path | Plan, reports: str | Path | None = None, allow_incomplete: bool = False) -> Path:
    """Write ``claims.csv``, execute the report notebook for ``profile`` and export it to HTML without
    code, all in a staging folder swapped in at the end (a failed build leaves the previous report
    whole); return the HTML path.

    Raises:
      IncompletePlan: planned runs are missing or failed (named with why), unless ``allow_incomplete``,
        in which case the report and every row of ``claims.csv`` say so.
    """
    reports = Path(reports or paths.reports_dir()).resolve()  # the notebook runs in notebooks/
    plan = load_plan(profile)
    rep = ProfileReport.load(plan, reports)
    if rep.problems() and not allow_incomplete:
        raise IncompletePlan(
            f"profile {rep.name}: {len(rep.problems())} planned run(s) did not finish, so no "
            "verdicts are computed:\n  "
            + "\n  ".join(rep.problems())
            + "\nRun the sweep again, or pass --allow-incomplete for a report marked incomplete."
        )
    rep.out.mkdir(parents=True, exist_ok=True)
    with SweepLock(rep.out, name=BUILD_LOCK, holder="report build"):
        recover_interrupted_builds(rep.out)
        with naming_full_disk("building the report (the previous one is kept)", rep.out):
            return _build_locked(plan, reports, rep)


def _build_locked(plan: Plan, reports: Path, rep: ProfileReport) -> Path:
    staging = rep.out / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        claims.write_csv(rep.audit().assign(plan=rep.completeness()), staging / "claims.csv")
        executed = notebooks.execute(
            paths.notebook("90_report.ipynb"),
            staging / "report.ipynb",
            {"profile": plan.argument, "reports_dir": str(reports), "figures_dir": str(staging / "figures")},
        )
        _export_html(executed, staging, f"{page.STUDY}: profile {rep.name}")
        _swap_in(staging, rep.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if plan.publishes:
        publish_report(rep.out, plan.bundle / PUBLISHED_REPORT)
    return rep.out / "report.html"


#: A published profile's report, claims table and figures (PNG) are copied into its bundle, under this folder,
#: so that its results can be read on a clone without building anything.
PUBLISHED_REPORT = "report"
#: The figures published as files beside the page (which embeds all of them): those the README shows.
PUBLISHED_FIGURES = ("headline",)


def publish_report(out: Path, target: Path) -> Path:
    """Copy ``claims.csv``, ``report.html`` and the PNGs of ``PUBLISHED_FIGURES`` from the report in ``out`` to
    ``target`` (a fresh folder renamed over the old one: a reader never sees half of each)."""
    staging = target.with_name(f".{target.name}-{uuid.uuid4().hex[:8]}")
    (staging / "figures").mkdir(parents=True)
    try:
        for name in ("claims.csv", "report.html"):
            shutil.copy2(out / name, staging / name)
        for name in PUBLISHED_FIGURES:  # the page embeds every figure; the README shows these
            shutil.copy2(out / "figures" / f"{name}.png", staging / "figures" / f"{name}.png")
        old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


#: Cells that print the rounded numbers nbval compares; the reader sees the same numbers as HTML.
HIDDEN_TAG = "report-hidden"


def _export_html(executed: Path, out_dir: Path, title: str) -> Path:
    """``report.html`` from the executed notebook: no code, no ``report-hidden`` cells, a real title."""
    nb = nbformat.read(executed, as_version=4)
    nb.metadata["title"] = title
    nbformat.write(nb, executed)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "html",
            "--no-input",
            "--log-level",
            "WARN",
            "--TagRemovePreprocessor.enabled=True",
            f"--TagRemovePreprocessor.remove_cell_tags={{'{HIDDEN_TAG}'}}",
            str(executed),
            "--output",
            "report.html",
            "--output-dir",
            str(out_dir),
        ],
        check=True,
    )
    page = out_dir / "report.html"
    page.write_text(self_contained(page.read_text(encoding="utf-8")), encoding="utf-8")
    return page


_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.I)
_MODULE_SCRIPT = re.compile(r"<script\b[^>]*type=[\"']module[\"'][^>]*>.*?</script>", re.I | re.S)


def self_contained(markup: str) -> str:
    """The page without the scripts nbconvert's template fetches from a CDN (require.js, MathJax, Mermaid):
    the report uses none of them, and offline they only fail. Nothing else on the page leaves it."""
    markup = _REMOTE_SCRIPT.sub("", markup)
    return _MODULE_SCRIPT.sub(lambda m: "" if re.search(r"https?://", m.group(0)) else m.group(0), markup)


BUILD_LOCK = ".report.lock"
STAGING_PREFIX = ".report-build-"
BACKUP_PREFIX = ".report-old-"


def _swap_in(staging: Path, out: Path) -> None:
    """Put the freshly built outputs in place of the old ones, all or none: the old ones are moved to a
    backup folder first; if any move fails (or the build is interrupted) they are moved back, and only
    once every new output is in place is the backup dropped. A build killed mid-swap leaves the backup,
    which the next build restores (``recover_interrupted_builds``)."""
    backup = out / f"{BACKUP_PREFIX}{uuid.uuid4().hex[:8]}"
    backup.mkdir()
    moved, placed = [], []
    try:
        for name in REPORT_OUTPUTS:
            if (out / name).exists():
                (out / name).rename(backup / name)
                moved.append(name)
        for name in REPORT_OUTPUTS:
            (staging / name).rename(out / name)
            placed.append(name)
    except BaseException:
        for name in placed:
            (out / name).rename(staging / name)
        for name in moved:
            (backup / name).rename(out / name)
        backup.rmdir()
        raise
    shutil.rmtree(backup)


def recover_interrupted_builds(out: Path) -> list[str]:
    """Clean up after builds that were killed (call it holding the build lock): staging folders are
    removed; a backup left by a swap cut short is restored where its outputs are missing, then removed."""
    done = []
    for staging in sorted(out.glob(f"{STAGING_PREFIX}*")):
        shutil.rmtree(staging, ignore_errors=True)
        done.append(f"removed {staging.name}")
    for backup in sorted(out.glob(f"{BACKUP_PREFIX}*")):
        for item in backup.iterdir():
            if not (out / item.name).exists():
                item.rename(out / item.name)
                done.append(f"restored {item.name} from {backup.name}")
        shutil.rmtree(backup, ignore_errors=True)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.orchestration.build_report",
        description="Build reports/<profile>/report.html from the profile's runs.",
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--reports", default=str(paths.reports_dir()))
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="build the report even if planned runs are missing or failed (it says which)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="let the kernel's warnings through")
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ["CLIPSTUDY_VERBOSE"] = "1"
    try:
        html = build_report(load_plan(args.profile), args.reports, allow_incomplete=args.allow_incomplete)
    except (IncompletePlan, DamagedRun, ProfileError, FileNotFoundError, probes.ProbeError, FolderBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk: one line naming the folder, not the chain of every failed write
        if exc.errno not in DISK_FULL:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
