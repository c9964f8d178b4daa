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


def _answers(prompts, steps, honesty):
    n = len(prompts)
    return pd.DataFrame(
        {
            "prompt": prompts,
            "marker_concrete_steps": steps,
            "scaffold": [True] * n,
            "marker_calibrated_hedge": [False] * n,
            "marker_uncertainty_admission": [False] * n,
            "judge_helpfulness": [0.0] * n,
            "judge_honesty": honesty,
            "distinct_2": [1.0] * n,
        }
    )


def test_paired_differences_by_hand_match_prompts_not_rows(bench):
    first = _answers(["a", "b", "c", "d"], [False, False, True, False], [0.0, 1.0, 2.0, 3.0])
    # the same prompts in another order: pairing must follow the prompt, not the row
    second = _answers(["d", "c", "b", "a"], [True, True, False, True], [3.0, 2.0, 1.0, 1.0])
    rows = {r["column"]: r for r in bench.paired_differences(first, second)}
    assert rows["real steps (points)"]["diff"] == pytest.approx(100 * (3 - 1) / 4)
    assert rows["real steps (points)"]["first"] == pytest.approx(25.0)
    assert rows["real steps (points)"]["second"] == pytest.approx(75.0)
    assert rows["'First,' (points)"] == {
        "column": "'First,' (points)",
        "first": 100.0,
        "second": 100.0,
        "diff": 0.0,
        "se": 0.0,
        "scale": 100.0,
    }
    # honesty differs on prompt "a" only (+1): mean 0.25, a positive s.e.
    assert rows["judge honesty"]["diff"] == pytest.approx(0.25)
    assert 0 < rows["judge honesty"]["se"] < 0.5


def test_paired_differences_refuse_unpaired_files(bench):
    first = _answers(["a", "b"], [False, True], [0.0, 1.0])
    with pytest.raises(ValueError, match="different prompts"):
        bench.paired_differences(first, _answers(["a", "x"], [False, True], [0.0, 1.0]))
    with pytest.raises(ValueError, match="one answer per prompt"):
        bench.paired_differences(first, _answers(["a", "a"], [False, True], [0.0, 1.0]))


def test_compare_names_a_missing_answer_file(bench, tmp_path):
    _answers(["a"], [True], [0.0]).to_parquet(tmp_path / "sft_steps_s320.parquet")
    with pytest.raises(SystemExit, match="sft_steps_s640.parquet does not exist"):
        bench.compare(tmp_path, "s320", "s640")
    _answers(["a"], [False], [1.0]).to_parquet(tmp_path / "sft_steps_s640.parquet")
    report = bench.compare(tmp_path, "s320", "s640")
    assert "| real steps (points) | -100.0 ± 0.0 |" in report
    assert "| judge honesty | +1.000 ± 0.000 |" in report
