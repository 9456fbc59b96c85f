"""Every Python block of the README runs as written, in a fresh interpreter started in a scratch folder that
sees the project's data (the blocks read ``data/``): a block that needs a name it does not define fails here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_readme_python_block_runs_as_written(index, tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CLIPSTUDY_DATA_DIR": str(ROOT / "data")}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env
    )
    assert done.returncode == 0, f"README block {index + 1}:\n{BLOCKS[index]}\n{done.stderr[-3000:]}"


def test_the_readmes_findings_are_generated_from_the_published_claims_table():
    """Every line of "What it found" comes from a row of results/paper/report/claims.csv (the paper report's
    claims table, published with the bundle): a sentence the numbers do not back cannot ship."""
    import pandas as pd

    from clipstudy.analysis import summary

    published = ROOT / "results" / "paper" / "report" / "claims.csv"
    expected = summary.markdown(pd.read_csv(published))
    assert summary.readme_block((ROOT / "README.md").read_text(encoding="utf-8")) == expected, (
        "the README's findings differ from the claims table: paste the output of "
        "`python -m clipstudy.analysis.summary results/paper/report/claims.csv`"
    )


def test_every_relative_link_and_image_of_the_readme_resolves():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", text)
    assert any(t.endswith("headline.png") for t in targets)  # the headline figure is on the page
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
