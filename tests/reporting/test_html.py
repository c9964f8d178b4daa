import re

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from steerable_alignment.reporting.html import (
    CHART_CLASS,
    Chart,
    Panel,
    Section,
    SideBySide,
    Table,
    Text,
    format_number,
    render_report,
)
from tests.reporting.artefacts import HOSTILE, line_chart


@pytest.fixture(scope="module")
def plotlyjs():
    return get_plotlyjs()


def test_every_piece_of_text_is_escaped():
    table = pd.DataFrame({"<col>": ["<b>cell</b> & more"], "n": [3]})
    sections = [
        Section(
            "S <1>",
            (
                Text("para <i>one</i>\n\npara & two", title="T <t>"),
                Table("Tab <x>", table, note="note <n>"),
                SideBySide(
                    "Prompt <7>",
                    "lead <q>",
                    (Panel("head <h>", HOSTILE, (("reward: <k>", "0.5"),), ("reward: <k>",)),),
                ),
            ),
        )
    ]
    page = render_report("Title <script>", sections, intro="intro <em>")
    for raw in ("<script>alert", "<b>cell", "<i>one", "<col>", "<x>", "<n>", "<h>", "<q>", "<em>"):
        assert raw not in page, raw
    for escaped in (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;",
        "&lt;b&gt;cell&lt;/b&gt; &amp; more",
        "<title>Title &lt;script&gt;</title>",
        "S &lt;1&gt;",
        "&lt;col&gt;",
        "— é",
    ):
        assert escaped in page, escaped
    assert page.count("<p>") == 3  # intro and the two paragraphs


def test_plotlyjs_is_inlined_once_and_nothing_is_fetched(plotlyjs):
    charts = tuple(Chart(f"chart {i}", line_chart(f"c{i}")) for i in range(3))
    page = render_report("R", [Section("A", charts[:2]), Section("B", charts[2:])])
    assert page.count(plotlyjs) == 1
    assert page.index(plotlyjs) < page.index("</head>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", page, re.IGNORECASE)
    assert "cdn.plot.ly" not in page.replace(plotlyjs, "")


def test_every_chart_has_its_own_div():
    charts = (
        Chart("Same title", line_chart("a", panels=2)),
        Chart("Same title", line_chart("b")),
        Chart("From a dict", line_chart("c").to_dict(), note="a note"),
    )
    page = render_report("R", [Section("Charts", charts)])
    ids = re.findall(rf'<div class="{CHART_CLASS}" id="([^"]+)">', page)
    assert ids == ["chart-same-title", "chart-same-title-2", "chart-from-a-dict"]
    compact = re.sub(r"\s+", " ", page)
    for chart_id in ids:
        assert f'<div id="{chart_id}-plot" class="plotly-graph-div"' in compact
        assert f'Plotly.newPlot( "{chart_id}-plot",' in compact


def test_figure_text_cannot_close_the_script():
    fig = line_chart("</script><script>alert(1)</script>")
    page = render_report("R", [Section("S", (Chart("c", fig),))])
    assert "</script><script>alert(1)" not in page


def test_tables_format_numbers_and_collapse():
    frame = pd.DataFrame(
        {
            "model": ["btl", "nppl"],
            "accuracy": [0.74941, np.nan],
            "n_episodes": np.array([4000, 20], dtype="int64"),
        }
    )
    page = render_report(
        "R", [Section("S", (Table("Open", frame), Table("Raw", frame, collapsed=True)))]
    )
    assert '<td class="num">0.7494</td>' in page
    assert '<td class="num">—</td>' in page
    assert '<td class="num">4,000</td>' in page
    assert "<td>btl</td>" in page
    assert "<details><summary>Raw (2 rows)</summary>" in page
    assert "<h3>Open</h3>" in page


def test_mean_and_se_text_is_aligned_like_numbers():
    frame = pd.DataFrame(
        {"model": ["btl", "nppl"], "0": ["74.90 ± 0.57", "—"], "3": ["+0.012 ± 0.001", "-1.5"]}
    )
    page = render_report("R", [Section("S", (Table("T", frame),))])
    assert "<td>btl</td>" in page
    for cell in ("74.90 ± 0.57", "—", "+0.012 ± 0.001", "-1.5"):
        assert f'<td class="num">{cell}</td>' in page, cell


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.123456, "0.1235"),
        (-0.5, "-0.5000"),
        (12.3456, "12.35"),
        (12345.6, "12,346"),
        (np.float32(0.25), "0.2500"),
        (np.int64(1234), "1,234"),
        (7, "7"),
        (None, "—"),
        (float("nan"), "—"),
        (pd.NA, "—"),
        (True, "True"),
        ("text", "text"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_contents_link_every_section_and_empty_sections_render():
    page = render_report("R", [Section("First"), Section("First"), Section("Last one")])
    for anchor in ("section-first", "section-first-2", "section-last-one"):
        assert f'<a href="#{anchor}">' in page and f'<section id="{anchor}">' in page


def test_an_unknown_block_is_refused():
    with pytest.raises(TypeError, match="Not a report block: str"):
        render_report("R", [Section("S", ("just a string",))])
