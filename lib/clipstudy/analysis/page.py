"""The report page: the answer first (title, findings, the claims table, provenance), then figures
with captions and alt text, and tables as HTML tables of readable width.

The report notebook displays these pieces; ``orchestration.build_report`` exports it without code (and
without the cells that only print text for nbval) to ``report.html``.
"""

from __future__ import annotations

import base64
import html
import math

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display

from clipstudy.analysis.plots import save_figure

STUDY = "When does gradient clipping help? A reproducible audit"

CSS = """
<style>
.cs-page { max-width: 1100px; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b; }
.cs-page h1 { font-size: 1.9em; margin: 0.2em 0; }
.cs-page p.cs-lead { font-size: 1.08em; }
table.cs-table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; max-width: 100%; }
table.cs-table th, table.cs-table td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left !important;
  vertical-align: top; overflow-wrap: normal; }
table.cs-table th { background: #f3f3f3; }
table.cs-table td.num { text-align: right !important; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.cs-table td.nowrap, .cs-verdict { white-space: nowrap; }
table.cs-table caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
.cs-verdict { font-weight: 700; text-transform: uppercase; font-size: 0.85em; }
.cs-supported { color: #1a7f37; } .cs-refuted { color: #b42318; } .cs-inconclusive { color: #8a6d00; }
.cs-box { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; background: #fafafa; margin: 1em 0; }
.cs-box dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
.cs-box dt { font-weight: 600; } .cs-box dd { margin: 0; overflow-wrap: anywhere; }
figure.cs-figure { margin: 1em 0 1.6em; } figure.cs-figure img { max-width: 100%; height: auto; }
figure.cs-figure figcaption { font-size: 0.92em; color: #333; max-width: 900px; }
.cs-warning { border-left: 4px solid #b42318; padding: 0.3em 0.8em; background: #fff4f2; }
details.cs-details summary { cursor: pointer; font-weight: 600; }
</style>
"""


def _esc(value) -> str:
    return html.escape(str(value))


SIGNIFICANT = 3  # every number on the page: three significant digits (whole numbers from 1,000 up)


def _number(value, digits: int = SIGNIFICANT) -> str:
    """A number as the page prints it: ``digits`` significant digits, whole numbers from 1,000 up with a
    thousands separator; NaN and None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if abs(value) >= 1000 and abs(value) < 1e15:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}".replace("-", "−")
    return _esc(value)


def verdict_badge(verdict: str, kind: str, words: str = "") -> str:
    """The verdict's badge and kind, and its wording where the rule says more than the badge."""
    extra = f"<br><small>{_esc(words)}</small>" if words and words != verdict else ""
    return f'<span class="cs-verdict cs-{_esc(verdict)}">{_esc(verdict)}</span> <small>({_esc(kind)})</small>{extra}'


def _row_badge(r) -> str:
    words = getattr(r, "words", "") or ""
    by = getattr(r, "decided_by", "") or ""
    decided = f"<br><small>decided by {_esc(by)}</small>" if by else ""
    return verdict_badge(r.verdict, r.kind, words) + decided


def effect_text(row) -> str:
    """The primary effect with its interval, or what stands in for it."""
    if row.n == 0 or math.isnan(row.effect):
        return "—"
    interval = "" if math.isnan(row.ci_low) else f" [{_number(row.ci_low)}, {_number(row.ci_high)}]"
    return f"{_number(row.effect)}{interval}"


def findings(audit: pd.DataFrame, profile: str, completeness: str) -> str:
    """One paragraph: how many claims each verdict got, which, and whether the plan is complete."""
    parts = []
    for verdict in ("supported", "refuted", "inconclusive"):
        rows = audit[audit["verdict"] == verdict]
        if len(rows):
            parts.append(
                f"{len(rows)} {verdict} (claim{'s' if len(rows) > 1 else ''} "
                f"{', '.join(_esc(c) for c in rows['claim'])})"
            )
    kinds = audit["kind"].value_counts()
    text = (
        f"Of the article's {len(audit)} claims, the <b>{_esc(profile)}</b> profile finds "
        f"{'; '.join(parts)}. Verdicts by kind: " + ", ".join(f"{n} {_esc(k)}" for k, n in kinds.items()) + ". "
    )
    if completeness.startswith("INCOMPLETE"):
        head, _, runs = completeness.partition(": ")[2].partition(", verdicts rest on the rest: ")
        items = "".join(f"<li>{_esc(r)}</li>" for r in runs.split("; ") if r)
        text += (
            f'</p><div class="cs-warning"><b>INCOMPLETE</b>: {_esc(head)}; the verdicts rest on the rest.'
            f'<details class="cs-details"><summary>which runs, and why</summary><ul>{items}</ul></details></div><p>'
        )
    else:
        text += _esc(completeness.capitalize()) + "."
    return f'<p class="cs-lead">{text}</p>'


def plain_words(audit: pd.DataFrame) -> str:
    """The findings in plain words, one line per claim: what the article says, and what the runs say about it,
    in the words of the rule that decided it (and which stage decided it)."""
    items = []
    for r in audit.itertuples():
        words = getattr(r, "words", "") or r.verdict
        by = getattr(r, "decided_by", "")
        where = getattr(r, "tested_where", "")
        items.append(
            f"<li><b>{_esc(r.text)}</b> {_esc(words[0].upper() + words[1:])}"
            + (f" <small>(tested: {_esc(where)}; decided by {_esc(by)})</small>" if where else "")
            + "</li>"
        )
    return '<div class="cs-findings"><b>In plain words</b><ul>' + "".join(items) + "</ul></div>"


def claims_table(audit: pd.DataFrame) -> str:
    """The claims as an HTML table: text, verdict and kind, primary effect with interval, p, n, figure."""
    rows = []
    for r in audit.itertuples():
        figure = r.figure.rsplit("/", 1)[-1].removesuffix(".png")
        tested = getattr(r, "tested_where", "")
        where = f"<br><small>tested where: {_esc(tested)}</small>" if tested else ""
        by = getattr(r, "decided_by", "stage 1")
        if by != "stage 1":  # the effect columns are stage 1's; the deciding numbers are written out beside them
            where += f"<br><small>decided by {_esc(by)}: {_esc(r.confirmatory_numbers)}</small>"
        stage1 = "stage 1: " if by != "stage 1" and effect_text(r) != "—" else ""
        rows.append(
            f'<tr id="claim-{_esc(r.claim)}"><td class="num">{_esc(r.claim)}</td><td>{_esc(r.text)}<br>'
            f"<small>primary: {_esc(r.primary)}</small>{where}</td><td>{_row_badge(r)}</td>"
            f'<td class="num">{stage1}{effect_text(r)}</td><td class="num">{_number(r.p_value, 2)}</td>'
            f'<td class="num">{_esc(r.n)}</td>'
            f'<td class="nowrap"><a href="#fig-{_esc(figure)}">{_esc(figure)}</a></td></tr>'
        )
    return (
        '<table class="cs-table cs-claims"><caption>The claims, each decided by one pre-registered primary '
        "contrast (effect: mean paired difference, clipped − reference, with its 95% interval)</caption>"
        "<thead><tr><th>#</th><th>claim</th><th>verdict (kind)</th><th>primary effect [95% CI]</th>"
        "<th>p</th><th>n</th><th>figure</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def provenance_box(items: dict[str, str]) -> str:
    """A box of ``label: value`` lines (profile, runs, dates, commit, versions, machine, compute)."""
    lines = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items.items())
    return f'<div class="cs-box cs-provenance"><b>Provenance</b><dl>{lines}</dl></div>'


def header(
    audit: pd.DataFrame,
    profile: str,
    completeness: str,
    provenance: dict[str, str] | None = None,
    edited: list[str] | None = None,
) -> str:
    """The top of the page: title, a warning first when the published bundle differs from the committed tree
    (``edited``), findings and the plain words (the headline figure follows them, then ``claims_section``); with
    ``provenance``, the claims table and provenance box too (all in one)."""
    warning = (
        f'<div class="cs-warning"><b>THE BUNDLE DIFFERS FROM THE COMMITTED TREE</b>: {len(edited)} published '
        f"file(s) edited since their commit ({_esc(', '.join(edited[:4]))}{' …' if len(edited) > 4 else ''}); "
        "these numbers are not the published ones (git checkout -- results/ restores them).</div>"
        if edited
        else ""
    )
    top = (
        f'{CSS}<div class="cs-page"><h1>{_esc(STUDY)}: profile <code>{_esc(profile)}</code></h1>'
        + warning
        + findings(audit, profile, completeness)
        + plain_words(audit)
    )
    return top + (claims_table(audit) + provenance_box(provenance) if provenance is not None else "") + "</div>"


def claims_section(audit: pd.DataFrame, provenance: dict[str, str]) -> str:
    """The claims table and the provenance box, shown after the headline figure."""
    return f'{CSS}<div class="cs-page">' + claims_table(audit) + provenance_box(provenance) + "</div>"


def figure(png: bytes, name: str, caption: str, alt: str) -> str:
    """A PNG embedded with ``alt`` text and a caption, anchored ``fig-<name>``."""
    data = base64.b64encode(png).decode()
    return (
        f'<figure class="cs-figure" id="fig-{_esc(name)}"><img src="data:image/png;base64,{data}" '
        f'alt="{_esc(alt)}"><figcaption>{_esc(caption)}</figcaption></figure>'
    )


def note(text: str) -> str:
    """A sentence in place of a figure or table that has nothing to show."""
    return f'<p class="cs-page"><i>{_esc(text)}</i></p>'


def table(frame: pd.DataFrame, caption: str, digits: int = SIGNIFICANT, collapsed: bool = False) -> str:
    """``frame`` as an HTML table (numbers right-aligned and rounded); ``collapsed`` folds it away."""
    head = "".join(f"<th>{_esc(c).replace('_', ' ')}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = _number(float(value), digits) if numeric and isinstance(value, float) else _esc(value)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    markup = (
        f'<table class="cs-table"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    if collapsed:
        return f'<details class="cs-details"><summary>{_esc(caption)} ({len(frame)} rows)</summary>{markup}</details>'
    return markup


def show(fig, directory, name: str, caption: str, alt: str) -> None:
    """Save ``fig`` under ``directory`` (PNG and SVG), close it, and display it with its caption and alt text."""
    png = next(p for p in save_figure(fig, directory, name) if p.suffix == ".png")
    markup = figure(png.read_bytes(), name, caption, alt)  # the saved file, not a third rendering
    plt.close(fig)
    display(HTML(markup))


def show_html(markup: str) -> None:
    """Display a piece of the page (the report notebook's reader-facing output)."""
    display(HTML(markup))


def claim_details(audit: pd.DataFrame) -> str:
    """Each claim in full: primary contrast, rule, numbers and secondary analyses, as readable blocks."""
    blocks = []
    for r in audit.itertuples():
        name = r.figure.rsplit("/", 1)[-1].removesuffix(".png")
        secondary = f"<dt>secondary</dt><dd>{_esc(r.secondary)}</dd>" if r.secondary else ""
        if getattr(r, "confirmatory_numbers", ""):
            secondary += (
                f"<dt>stage 1 (exploratory)</dt><dd>{_esc(r.stage1_words)}</dd>"
                f"<dt>{_esc(getattr(r, 'decided_by', 'stage 2'))}, confirmatory</dt>"
                f"<dd>{_esc(r.confirmatory_numbers)}</dd>"
            )
        if getattr(r, "tested_where", ""):
            secondary += f"<dt>tested where</dt><dd>{_esc(r.tested_where)}</dd>"
        blocks.append(
            f'<div class="cs-box"><b>Claim {_esc(r.claim)}: {_esc(r.text)}</b> — '
            f"{_row_badge(r)}<dl><dt>primary</dt><dd>{_esc(r.primary)}</dd>"
            f"<dt>rule</dt><dd>{_esc(r.rule)}</dd><dt>numbers</dt><dd>{_esc(r.numbers)}</dd>{secondary}"
            f'<dt>figure</dt><dd><a href="#fig-{_esc(name)}">'
            f"{_esc(r.figure)}</a></dd></dl></div>"
        )
    return '<div class="cs-page">' + "".join(blocks) + "</div>"


def answers_table(answers: list, caption: str) -> str:
    """The confirmatory answers of one stage as a table: question, verdict, numbers (with p and n)."""
    frame = pd.DataFrame(
        [{"question": a.question, "verdict": a.verdict, "numbers": a.numbers} for a in answers],
        columns=["question", "verdict", "numbers"],
    )
    return table(frame, caption)
