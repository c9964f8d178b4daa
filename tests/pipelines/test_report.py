import re
from pathlib import PurePosixPath

import pytest
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from plotly.offline import get_plotlyjs

from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.report import create_pipeline
from steerable_alignment.pipelines.report.nodes import GROUP_KEYS, build_report
from steerable_alignment.pipelines.report.pipeline import DEFAULT_GROUPS, INPUT_GROUPS
from steerable_alignment.reporting.html import CHART_CLASS
from tests.pipelines.helpers import config_loader, memory_catalog, project_parameters
from tests.reporting.artefacts import report_inputs, report_params

ALL_GROUPS = tuple(INPUT_GROUPS)


def catalog_inputs(groups):
    """Hand-made artefacts under their catalog names, for ``groups``."""
    made = report_inputs()
    return {INPUT_GROUPS[g][key]: made[key] for g in groups for key in INPUT_GROUPS[g]}


def run_report(groups, params):
    catalog = memory_catalog(params, keep=("evaluation_report",), **catalog_inputs(groups))
    SequentialRunner().run(create_pipeline(groups), catalog)
    return catalog.load("evaluation_report")


@pytest.fixture(scope="module")
def full_report():
    return run_report(ALL_GROUPS, project_parameters())


def test_every_group_becomes_a_section_with_its_charts_and_tables(full_report):
    page = full_report
    sections = re.findall(r'<section id="[^"]+"><h2>([^<]+)</h2>', page)
    assert sections == [
        "Synthetic benchmark",
        "UltraFeedback reward models",
        "DPO policies",
        "Generation and steering",
        "Active elicitation",
    ]
    charts = re.findall(rf'<div class="{CHART_CLASS}" id="([^"]+)">', page)
    assert charts == [
        "chart-accuracy-vs-context-size",
        "chart-hh-accuracy-vs-context-size",
        "chart-hh-users-on-a-continuum",
        "chart-hht-accuracy-vs-context-size",
        "chart-implicit-reward-accuracy-vs-context-size",
        "chart-steering-gap-vs-context-size",
        "chart-users-on-a-continuum",
        "chart-accuracy-after-each-asked-pair",
    ]
    assert page.count(get_plotlyjs()) == 1
    for title in (
        "Test accuracy (%), all users pooled",
        "hht: test accuracy (%) by user type",
        "hh: Paired differences, model − baseline (accuracy points)",
        "Implicit-reward accuracy (%) by user type",
        "Win-rate (%) of the model over the baseline, by context size",
        "Steering gap (reward units), by context size",
        "Steering gap by the exact judge (noise-free rating units), by context size",
        "Win-rate (%) of the model over the baseline by the exact judge",
        "Share of answers (%) showing each style, by context size",
        "Fluency: NLL per answer token (nats) under the frozen base model",
        "hh: test accuracy (%) of users on a continuum",
        "Users on a continuum: score difference of the answers by the user&#x27;s weight w",
        "Held-out accuracy (%) after each asked pair, all users pooled",
        "Paired difference vs random pairs, same model (accuracy points)",
        "Asking well vs asking more: n asked pairs minus m random pairs",
    ):
        assert f"<h3>{title}</h3>" in page, title
    # A pivoted cell (accuracy 0.64 ± 0.01 at 10 pairs) and a signed steering gap.
    assert '<td class="num">64.00 ± 1.00</td>' in page
    assert '<td class="num">+0.080 ± 0.015</td>' in page
    # The judge's gap at 10 pairs, a marker share, the fluency and a continuum cell.
    assert '<td class="num">+1.000 ± 0.050</td>' in page
    assert '<td class="num">20.00 ± 5.00</td>' in page
    assert '<td class="num">1.800 ± 0.050</td>' in page
    assert "+0.750 ± 0.100" in page
    assert "<summary>Synthetic: all metrics (27 rows)</summary>" in page
    # active elicitation: uncertainty after 2 pairs, its paired gain, 2 asked vs 5 random
    elicitation = page.split('<section id="section-active-elicitation">')[1]
    assert '<td class="num">64.00 ± 2.00</td>' in elicitation
    assert '<td class="num">+4.00 ± 1.00</td>' in elicitation
    assert "+1.2 ± 0.4" in elicitation


def test_the_samples_show_both_users_and_the_baseline_escaped(full_report):
    page = full_report
    # conf/base/parameters_report.yml: hh, helpfulness vs honesty, the first 3 prompts.
    assert re.findall(r'<div class="sample"><h3>([^<]+)</h3>', page) == [
        "Prompt 3",
        "Prompt 5",
        "Prompt 7",
    ]
    assert page.count("<h4>nppl_mixed: honesty user, 10 context pairs</h4>") == 3
    assert page.count("<h4>btl_mixed (no context)</h4>") == 3
    assert "&lt;/div&gt;&lt;script&gt;alert(&quot;x&quot;)" in page
    assert '<script>alert("x")' not in page


def test_the_default_pipeline_reads_the_default_groups():
    assert {"reward", "dpo"} <= set(DEFAULT_GROUPS)
    (report,) = create_pipeline().nodes
    expected = {"params:report"} | {
        name for g in DEFAULT_GROUPS for name in INPUT_GROUPS[g].values()
    }
    assert set(report.inputs) == expected
    assert report.outputs == ["evaluation_report"]
    with pytest.raises(ValueError, match=r"Unknown report input group\(s\) \['steering'\]"):
        create_pipeline(["reward", "steering"])


def test_the_pipeline_wires_every_argument_the_node_reads():
    assert {g: set(keys) for g, keys in INPUT_GROUPS.items()} == {
        g: set(keys) for g, keys in GROUP_KEYS.items()
    }


def test_a_group_left_out_says_so_in_its_section():
    page = run_report(("reward",), project_parameters())
    dpo = page.split('<section id="section-dpo-policies">')[1]
    assert "the report pipeline was built without its &#x27;dpo&#x27; inputs" in dpo
    assert "without its &#x27;generation&#x27; inputs" in page
    assert page.count(f'class="{CHART_CLASS}"') == 4  # synthetic, hh, hh continuum, hht


def test_the_node_refuses_unknown_inputs_and_parameters():
    with pytest.raises(ValueError, match=r"does not know the input\(s\) \['dpo_chart'\]"):
        build_report(report_params(), dpo_chart=None)
    params = report_params()
    params["colour"] = "red"
    with pytest.raises(ConfigError, match=r"'report' has unknown key\(s\) \['colour'\]"):
        build_report(params)
    params = report_params()
    params["samples"]["users"] = ["helpfulness", "helpfulness"]
    with pytest.raises(ConfigError, match="report.samples.users"):
        build_report(params)


def test_registered_and_last_in_the_default_run():
    from kedro.framework.project import configure_project

    configure_project("steerable_alignment")
    from steerable_alignment.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert [n.name for n in pipelines["report"].nodes] == ["build_report"]
    default = pipelines["__default__"]
    assert "build_report" in {n.name for n in default.nodes}
    assert default.nodes[-1].name == "build_report"  # it reads what every other node writes


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_the_catalog_has_every_default_input_and_writes_utf8(env, tmp_path):
    from kedro_datasets.text import TextDataset

    config = config_loader(env)
    catalog = DataCatalog.from_config(config["catalog"])
    for name in create_pipeline().inputs() - {"params:report"}:
        assert catalog.get(name) is not None, name
    report = catalog.get("evaluation_report")
    assert type(report) is TextDataset
    assert PurePosixPath(report._filepath).as_posix() == "data/08_reporting/report.html"
    assert config["parameters"]["report"]["samples"]["users"] == ["helpfulness", "honesty"]

    entry = dict(config["catalog"]["evaluation_report"])
    entry["filepath"] = str(tmp_path / "report.html")
    local = DataCatalog.from_config({"evaluation_report": entry})
    local.save("evaluation_report", "— é ✓")
    assert (tmp_path / "report.html").read_bytes().decode("utf-8") == "— é ✓"
    assert local.load("evaluation_report") == "— é ✓"
