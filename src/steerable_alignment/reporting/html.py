"""A self-contained HTML report: titled sections of tables, plotly charts, text and samples.

The page opens from disk with no server and no network: plotly.js is inlined
once in ``<head>``, every chart is a ``<div>`` drawn by it, tables are plain
HTML and the CSS is a short inline ``<style>``. Every piece of text (titles,
table cells, generated responses) is HTML-escaped.

Build a list of :class:`Section` and call :func:`render_report`::

    html = render_report("Evaluation", [Section("Rewards", (Chart("Accuracy", fig),))])
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

#: Class of the element around every chart; its id is ``chart-<slug>``.
CHART_CLASS = "report-chart"
#: Plotly options of every chart: resizes with the page, no plotly logo link.
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1rem 2rem 4rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { margin-top: 1.6rem; }
nav ol { columns: 2; }
p.note { color: #555; font-style: italic; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
details { margin: .5rem 0 1rem; }
summary { cursor: pointer; font-weight: 600; }
.sample { border: 1px solid #ccc; border-radius: 6px; padding: .5rem 1rem; margin: 1rem 0; }
.sample .prompt { white-space: pre-wrap; background: #f6f6f6; padding: .4rem .6rem; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr));
          gap: .8rem; margin-top: .6rem; }
.panel { border-left: 4px solid #1f77b4; padding: 0 .6rem; }
.panel h4 { margin: .2rem 0 .4rem; }
.panel .response { white-space: pre-wrap; font-size: .9rem; }
.panel dl { display: grid; grid-template-columns: max-content auto; gap: 0 .8rem;
            font-size: .8rem; margin: .4rem 0; }
.panel dd { margin: 0; font-variant-numeric: tabular-nums; }
.panel .own { font-weight: 700; }
"""


@dataclass(frozen=True)
class Table:
    """A titled table; numeric cells are formatted by :func:`format_number`.

    Attributes:
        title: shown above the table.
        frame: the rows (the index is dropped; keep labels in columns).
        note: a sentence under the title (what the numbers are).
        collapsed: inside a closed ``<details>`` (long, raw tables).
    """

    title: str
    frame: pd.DataFrame
    note: str = ""
    collapsed: bool = False


@dataclass(frozen=True)
class Chart:
    """A titled plotly figure (a ``plotly.graph_objects.Figure`` or its dict form)."""

    title: str
    figure: Any
    note: str = ""


@dataclass(frozen=True)
class Text:
    """Plain text; blank lines separate paragraphs."""

    body: str
    title: str = ""


@dataclass(frozen=True)
class Panel:
    """One column of a side-by-side block: a heading, a long text and a few labelled values.

    Attributes:
        facts: ``(label, value)`` pairs shown under the text.
        emphasised: labels of ``facts`` shown in bold.
    """

    heading: str
    body: str
    facts: tuple[tuple[str, str], ...] = ()
    emphasised: tuple[str, ...] = ()


@dataclass(frozen=True)
class SideBySide:
    """Panels in one row under a shared lead text (e.g. answers to one prompt)."""

    title: str
    lead: str
    panels: tuple[Panel, ...]


Block = Table | Chart | Text | SideBySide


@dataclass(frozen=True)
class Section:
    """A top-level section (``<h2>``, listed in the contents)."""

    title: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)


def format_number(value: Any) -> str:
    """A table cell: integers as they are, floats to 4 decimals below 10, fewer above.

    NaN and None become an em dash; strings pass through (escaped later).
    """
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return f"{int(value):,}"
    if isinstance(value, float) or (hasattr(value, "dtype") and value.dtype.kind == "f"):
        number = float(value)
        magnitude = abs(number)
        if magnitude >= 1000:
            return f"{number:,.0f}"
        if magnitude >= 10:
            return f"{number:.2f}"
        return f"{number:.4f}"
    return str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


class _Ids:
    """Unique, readable element ids from titles."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def make(self, prefix: str, title: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "item"
        candidate, i = f"{prefix}-{slug}", 2
        while candidate in self._used:
            candidate, i = f"{prefix}-{slug}-{i}", i + 1
        self._used.add(candidate)
        return candidate


#: Text cells aligned like numbers: "74.90", "+0.012 ± 0.001", or the missing-value dash.
_NUMBER_TEXT = re.compile(r"^(?:[+\-−]?[\d,]+(?:\.\d+)?(?: ± [\d,]+(?:\.\d+)?)?|—)$")


def _aligned_right(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return True
    return len(column) > 0 and all(isinstance(v, str) and _NUMBER_TEXT.match(v) for v in column)


def _table_html(table: Table) -> str:
    frame = table.frame.reset_index(drop=True)
    opening = ['<td class="num">' if _aligned_right(frame[c]) else "<td>" for c in frame.columns]
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = "".join(f"{td}{_e(format_number(v))}</td>" for v, td in zip(values, opening))
        rows.append(f"<tr>{cells}</tr>")
    body = (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    note = f'<p class="note">{_e(table.note)}</p>' if table.note else ""
    if table.collapsed:
        return (
            f"<details><summary>{_e(table.title)} ({len(frame)} rows)</summary>{note}{body}"
            "</details>"
        )
    return f"<h3>{_e(table.title)}</h3>{note}{body}"


def _chart_html(chart: Chart, chart_id: str) -> str:
    import plotly.graph_objects as go

    figure = chart.figure if isinstance(chart.figure, go.Figure) else go.Figure(chart.figure)
    # plotly escapes "</" in the figure's JSON, so text in a figure cannot close the <script>.
    div = figure.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"{chart_id}-plot", config=PLOTLY_CONFIG
    )
    note = f'<p class="note">{_e(chart.note)}</p>' if chart.note else ""
    return f'<h3>{_e(chart.title)}</h3>{note}<div class="{CHART_CLASS}" id="{chart_id}">{div}</div>'


def _text_html(text: Text) -> str:
    title = f"<h3>{_e(text.title)}</h3>" if text.title else ""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.body) if p.strip()]
    return title + "".join(f"<p>{_e(p)}</p>" for p in paragraphs)


def _panel_html(panel: Panel) -> str:
    facts = "".join(
        f'<dt class="{"own" if label in panel.emphasised else ""}">{_e(label)}</dt>'
        f'<dd class="{"own" if label in panel.emphasised else ""}">{_e(value)}</dd>'
        for label, value in panel.facts
    )
    return (
        f'<div class="panel"><h4>{_e(panel.heading)}</h4>'
        f'<div class="response">{_e(panel.body)}</div>'
        f"{f'<dl>{facts}</dl>' if facts else ''}</div>"
    )


def _side_by_side_html(block: SideBySide) -> str:
    panels = "".join(_panel_html(p) for p in block.panels)
    return (
        f'<div class="sample"><h3>{_e(block.title)}</h3>'
        f'<div class="prompt">{_e(block.lead)}</div><div class="panels">{panels}</div></div>'
    )


def _block_html(block: Block, ids: _Ids) -> str:
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Chart):
        return _chart_html(block, ids.make("chart", block.title))
    if isinstance(block, Text):
        return _text_html(block)
    if isinstance(block, SideBySide):
        return _side_by_side_html(block)
    raise TypeError(f"Not a report block: {type(block).__name__}")


def plotly_script() -> str:
    """plotly.js (the installed plotly's bundle) in one inline ``<script>``."""
    from plotly.offline import get_plotlyjs

    source = get_plotlyjs()
    if "</script" in source.lower():
        raise ValueError("The plotly.js bundle contains '</script' and cannot be inlined")
    # MathJax would be fetched from a CDN; 'local' keeps plotly from trying.
    return (
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>'
        f'<script type="text/javascript">{source}</script>'
    )


def render_report(title: str, sections: Sequence[Section], intro: str = "") -> str:
    """The whole page: contents, then each section's blocks in order.

    Args:
        title: the page's ``<title>`` and ``<h1>``.
        sections: rendered in order; a section without blocks is listed but empty.
        intro: plain text under the title.

    Returns:
        A complete UTF-8 HTML document that needs nothing but a browser.
    """
    ids = _Ids()
    contents, bodies = [], []
    for section in sections:
        anchor = ids.make("section", section.title)
        contents.append(f'<li><a href="#{anchor}">{_e(section.title)}</a></li>')
        blocks = "".join(_block_html(b, ids) for b in section.blocks)
        bodies.append(f'<section id="{anchor}"><h2>{_e(section.title)}</h2>{blocks}</section>')
    charts = sum(isinstance(b, Chart) for s in sections for b in s.blocks)
    logger.info("Report '%s': %d sections, %d charts", title, len(sections), charts)
    intro_html = _text_html(Text(intro)) if intro else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style>{plotly_script()}</head>"
        f"<body><h1>{_e(title)}</h1>{intro_html}"
        f"<nav><h2>Contents</h2><ol>{''.join(contents)}</ol></nav>"
        f"{''.join(bodies)}</body></html>\n"
    )
