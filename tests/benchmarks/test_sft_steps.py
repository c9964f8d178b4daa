"""benchmarks/sft_steps.py without running it: settings, the merge, the shares it reports."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.benchmarks.scripts import load_benchmark
from tests.conftest import PROJECT_ROOT
from tests.pipelines.helpers import config_loader

SCRIPT = PROJECT_ROOT / "benchmarks" / "sft_steps.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("sft_steps")


def test_a_setting_is_a_name_and_training_or_policy_overrides(bench):
    assert bench._setting('s640={"training": {"max_steps": 640}}') == (
        "s640",
        {"training": {"max_steps": 640}},
    )
    assert bench._setting("base") == ("base", {})


@pytest.mark.parametrize("text", ['x={"sampling": {}}', '={"training": {}}', "x=[1]"])
def test_a_bad_setting_is_refused_naming_it(bench, text):
    with pytest.raises(SystemExit, match="--setting"):
        bench._setting(text)


def test_overrides_merge_over_the_project_sft_and_leave_it_unchanged(bench):
    sft = config_loader("base")["parameters"]["dpo"]["sft"]
    before = repr(sft)
    merged = bench.merged_sft(sft, {"training": {"max_steps": 640}})
    assert merged["training"]["max_steps"] == 640
    assert merged["training"]["lr"] == sft["training"]["lr"]
    assert merged["policy"] == sft["policy"]
    assert repr(sft) == before


def test_shares_by_hand(bench):
    table = pd.DataFrame(
        {
            "marker_concrete_steps": [False, True, False, True],
            "scaffold": [False, True, True, False],  # a subset with a gap in its index
            "marker_calibrated_hedge": [False, False, False, True],
            "marker_uncertainty_admission": [False, False, False, False],
            "distinct_2": [1.0, 1.0, 0.5, 1.0],
            "tokens": [10, 20, 30, 40],
        }
    )
    out = bench.summarise(table)
    assert out["steps"][0] == 0.5
    assert out["scaffold"][0] == 0.5
    assert out["steps_given_scaffold"][0] == 0.5  # 1 of the 2 scaffolded answers
    assert out["hedge"][0] == 0.25 and out["admission"] == (0.0, 0.0)
    assert out["distinct_2"] == 0.875 and out["tokens"] == 25.0
    assert 0 < out["steps"][1] < 0.5  # a bootstrap s.e. over the four prompts
