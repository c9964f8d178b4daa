"""The report as a reader sees it: opened from disk in headless Chromium, every chart drawn.

Needs Debian's ``chromium`` package (``.ci/run`` installs it when missing);
skipped, with the reason, where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from steerable_alignment.pipelines.report.nodes import build_report
from steerable_alignment.reporting.html import CHART_CLASS
from tests.reporting.artefacts import report_inputs, report_params

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)
#: Virtual milliseconds the page may run before its DOM is dumped (plotly draws well within).
VIRTUAL_TIME_MS = 10_000
CHART_START = re.compile(rf'<div class="{CHART_CLASS}" id="([^"]+)">')


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and its console messages (errors included)."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Chromium logs every console message of the page (uncaught exceptions too) as
    # "...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)".
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def charts_in(dom: str) -> dict[str, str]:
    """Chart id -> the DOM from its opening tag to the next chart (or the end)."""
    starts = list(CHART_START.finditer(dom))
    ends = [m.start() for m in starts[1:]] + [len(dom)]
    return {m.group(1): dom[m.start() : end] for m, end in zip(starts, ends)}


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    page = folder / "report.html"
    page.write_text(build_report(report_params(), **report_inputs()), encoding="utf-8")
    return page


def test_the_report_renders_every_chart_without_script_errors(report_file, tmp_path):
    expected = CHART_START.findall(report_file.read_text(encoding="utf-8"))
    assert len(expected) == 8  # the seven result charts and active elicitation
    dom, console = open_in_chromium(report_file, tmp_path / "profile")
    assert not console, "\n".join(console)
    charts = charts_in(dom)
    assert list(charts) == expected
    for chart_id, chart in charts.items():
        # plotly marks a drawn plot and puts its SVG layers inside the plot div.
        assert re.search(rf'id="{chart_id}-plot" class="[^"]*js-plotly-plot', chart), chart_id
        assert 'class="main-svg"' in chart, chart_id
        assert '<g class="trace scatter' in chart, chart_id
    # The escaped response is text in the page, not a script that ran.
    assert 'alert("x")' in dom and "<script>alert" not in dom


def test_a_script_error_would_be_caught(tmp_path):
    """The console check above is not vacuous: an undefined function is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefinedAnywhere();</script></body></html>")
    dom, console = open_in_chromium(page, tmp_path / "profile")
    assert "<body>" in dom
    assert any("notDefinedAnywhere is not defined" in line for line in console), console
