"""Every Python block of the README and of docs/ runs as written, twice in a row in one scratch folder that sees the
project's data (the blocks read ``data/``), each time in a fresh interpreter: a block that needs a name it does not
define, or that fails on what its first run left behind, fails here. Every relative link resolves."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (page.relative_to(ROOT).as_posix(), number, code)
    for page in PAGES
    for number, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S), 1)
]


def test_the_readme_and_the_docs_have_python_blocks():
    assert sum(page == "README.md" for page, _, _ in BLOCKS) == 1  # the README's one block: clip your own model
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("page, number, code", BLOCKS, ids=[f"{p}-{n}" for p, n, _ in BLOCKS])
def test_each_python_block_runs_as_written_twice_in_one_folder(page, number, code, tmp_path):
    """The README's block runs twice in a row (what a user does); a docs block runs a second time where its first
    run left files in the folder (what it left must not break it)."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CLIPSTUDY_DATA_DIR": str(ROOT / "data")}
    for attempt in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env
        )
        assert done.returncode == 0, f"{page} block {number}, {attempt} run:\n{code}\n{done.stderr[-3000:]}"
        if page != "README.md" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]:
            break  # it wrote nothing here: a second run would be the first again


def test_the_readmes_findings_are_generated_from_the_published_claims_table():
    """Every line of "What it found" comes from a row of results/paper/report/claims.csv (the paper report's
    claims table, published with the bundle): a sentence the numbers do not back cannot ship."""
    import pandas as pd

    from clipstudy.analysis import summary

    published = pd.read_csv(ROOT / "results" / "paper" / "report" / "claims.csv")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    hint = "paste the output of `python -m clipstudy.analysis.summary results/paper/report/claims.csv`"
    assert summary.readme_block(readme) == summary.glance(published), f"the verdicts differ: {hint}"
    details = summary.readme_block(readme, summary.DETAILS_BEGIN, summary.DETAILS_END)
    assert details == summary.details(published), f"what decided each claim differs: {hint}"
    # the first screen: the verdicts, then the two commands, before the figure and the details
    assert readme.index(summary.END) < readme.index("make reproduce") < readme.index("headline.png")
    assert readme.index("headline.png") < readme.index(summary.DETAILS_BEGIN)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_image_and_anchor_resolves(page):
    text = page.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?://)[^)\s]+)\)", text)
    if page.name == "README.md":
        assert any(t.endswith("headline.png") for t in targets)  # the headline figure is on the page
    missing = []
    for target in targets:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to what does not exist: {missing}"
