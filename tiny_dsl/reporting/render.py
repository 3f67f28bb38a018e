"""Lay a `ReportView` out as HTML (Jinja template) or Markdown (for pull requests)."""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tiny_dsl.reporting.view import Block, Cell, ReportView, Table

TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_html(view: ReportView) -> str:
    return _environment().get_template("report.html.j2").render(view=view)


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if cell.tone in ("pass", "fail") else text


def md_table(table: Table) -> str:
    lines = [f"*{table.caption}*", ""] if table.caption else []
    if not any(table.headers):  # a key/value table: no header row to show
        table = Table(["", ""], table.rows, table.caption, table.numeric)
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append(
        "|"
        + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.headers)))
        + "|"
    )
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_block(block: Block) -> list[str]:
    lines = [f"### `{block.title}`", ""]
    if block.conclusion:
        lines += [block.conclusion, ""]
    lines += [f"> Caution: {caution}." for caution in block.cautions]
    if block.cautions:
        lines.append("")
    for table in block.tables:
        lines += [md_table(table), ""]
    return lines


def render_markdown(view: ReportView) -> str:
    """Summary, expectations and statistics tables; no charts or transcripts."""
    lines = [f"# {view.title}", ""]
    if view.banner:
        lines += [f"> **{view.banner.title.upper()}**: {view.banner.text}", ""]
    lines += [f"- {problem}" for problem in view.problems]
    if view.problems:
        lines.append("")
    if view.verdicts:
        lines += ["> **Verdict**", ">"]
        lines += [
            f"> - {'**' + v.text + '**' if v.tone == 'good' else v.text}" for v in view.verdicts
        ]
        lines.append("")
    if view.expectations:
        verdict = "all passed" if not view.failed else f"**{view.failed} failed**"
        lines += [f"**Expectations:** {view.passed} passed, {view.failed} failed ({verdict}).", ""]
    lines += ["## Summary", "", md_table(view.overview), ""]
    for summary in view.world_summaries:
        lines += [md_table(summary), ""]
    if view.notes:
        lines += ["Notes from the run:", "", *(f"- {note}" for note in view.notes), ""]
    if view.expectations:
        lines += ["## Expectations", "", md_table(view.expectations), ""]
    sections = (
        ("Comparisons", view.compares),
        ("Summaries", view.summaries),
        ("Funnels", view.funnels),
        ("Validation against real data", view.validations),
        ("Distributions", view.distributions),
    )
    for title, blocks in sections:
        if not blocks:
            continue
        lines += [f"## {title}", ""]
        if title == "Comparisons" and view.adjustment:
            lines += [f"_{view.adjustment}_", ""]
        for block in blocks:
            lines += _md_block(block)
    if view.coverage:
        lines += ["## Extracted fields", "", md_table(view.coverage), ""]
        for ranking in view.rankings:
            lines += [md_table(ranking), ""]
    if view.quality:
        lines += ["## Quality of answers", "", view.quality.caption, "", md_table(view.quality), ""]
    if view.balance:
        lines += ["## Assignment", ""]
        for table in view.balance:
            lines += [md_table(table), ""]
    return "\n".join(lines).rstrip() + "\n"
