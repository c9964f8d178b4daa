"""benchmarks/steering_recipe.py without running it: arguments, parameters, the report."""

from __future__ import annotations

import copy
import sys

import pandas as pd
import pytest

from steerable_alignment.models.config import ConfigError
from tests.benchmarks.scripts import load_benchmark
from tests.conftest import PROJECT_ROOT
from tests.pipelines.helpers import config_loader

SCRIPT = PROJECT_ROOT / "benchmarks" / "steering_recipe.py"


@pytest.fixture(scope="module")
def recipe():
    return load_benchmark("steering_recipe")


@pytest.fixture(scope="module")
def params():
    return config_loader("base")["parameters"]


def test_settings_parse_in_order_with_the_defaults(recipe):
    args = recipe.parse_args(
        ["--setting", "dpo={}", "--setting", 'nll1={"nll_weight": 1.0, "max_steps": 30}']
    )
    assert list(args.settings) == ["dpo", "nll1"]
    assert args.settings["nll1"] == {"nll_weight": 1.0, "max_steps": 30}
    assert (args.prompts, args.context, args.show) == (64, 10, 2)
    assert args.project == PROJECT_ROOT.resolve()
    assert args.out == PROJECT_ROOT.resolve() / "data/09_tuning"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give at least one --setting NAME='{json}' (or --compare A B)"),
        (["--compare", "a", "b", "--setting", "a={}"], "give it without --setting"),
        (["--compare", "a"], "expected 2 arguments"),
        (["--setting", "nll1"], "expected NAME=JSON"),
        (["--setting", "a={bad"], "a: not JSON"),
        (["--setting", "a=[1]"], "expected a JSON object"),
        (["--setting", "a b={}"], "setting name 'a b'"),
        (["--setting", 'a={"bogus": 1}'], r"'--setting a' has unknown key(s) ['bogus']"),
        (["--setting", 'a={"checkpoint_dir": "x"}'], "set by the benchmark"),
        (["--setting", 'a={"policy": 3}'], "'policy' must be a JSON object"),
        (["--setting", 'a={"policy": {"bogus": 1}}'], "unknown key(s) ['bogus']"),
        (["--setting", 'a={"policy": {"type": "btl_dpo"}}'], "['type'] cannot be changed"),
        (["--setting", "a={}", "--setting", 'a={"lr": 1}'], "['a'] are given more than once"),
        (["--setting", "a={}", "--prompts", "0"], "positive integer, got 0"),
        (["--setting", "a={}", "--context", "ten"], "positive integer, got 'ten'"),
        (["--setting", "a={}", "--show", "-1"], "integer >= 0, got -1"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(recipe, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        recipe.parse_args(argv)
    assert exit_.value.code == 2
    assert needle in capsys.readouterr().err


def test_a_folder_that_is_no_project_is_refused(recipe, capsys, tmp_path):
    with pytest.raises(SystemExit):
        recipe.parse_args(["--setting", "a={}", "--project", str(tmp_path)])
    assert "not a Kedro project" in capsys.readouterr().err


def test_training_overrides_reach_both_models_and_checkpoint_in_scratch(recipe, params, tmp_path):
    before = copy.deepcopy(params)
    run = recipe.training_params(params, {"nll_weight": 1.0, "max_steps": 30}, "nll1", tmp_path)
    assert params == before  # the project's parameters are left as they were
    for model in ("nppl_mixed", "btl_mixed"):
        training = run["dpo"]["hh"][model]["training"]
        assert (training["nll_weight"], training["max_steps"]) == (1.0, 30)
        assert training["checkpoint_dir"] == str(tmp_path / "nll1" / model)
    assert run["dpo"]["hh"]["nppl_mixed"]["training"]["context_lr"] == 5e-5  # the rest kept


def test_policy_overrides_reach_both_models_and_are_validated(recipe, params, tmp_path):
    modules = ["q_proj", "v_proj", "o_proj"]
    before = copy.deepcopy(params)
    run = recipe.training_params(
        params, {"nll_weight": 1.0, "policy": {"target_modules": modules}}, "all", tmp_path
    )
    assert params == before
    for model in ("nppl_mixed", "btl_mixed"):
        assert run["dpo"]["hh"][model]["policy"]["target_modules"] == modules
        assert "policy" not in run["dpo"]["hh"][model]["training"]
        assert run["dpo"]["hh"][model]["training"]["nll_weight"] == 1.0
    assert run["dpo"]["hh"]["nppl_mixed"]["policy"]["type"] == "np_dpo"  # the rest kept
    with pytest.raises(ConfigError, match="--setting bad"):
        recipe.training_params(params, {"policy": {"lora_r": 0}}, "bad", tmp_path)
    untouched = run["dpo"]["hh"]["btl_honesty"]["training"]
    assert untouched == params["dpo"]["hh"]["btl_honesty"]["training"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"nll_weight": -1.0}, r"--setting bad \(hh\.nppl_mixed\).*'training\.nll_weight'"),
        ({"max_context": 11}, r"'training\.max_context'.*smaller than num_targets"),
        ({"max_steps": "many"}, r"'training\.max_steps'"),
    ],
)
def test_bad_training_values_fail_before_training(recipe, params, tmp_path, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        recipe.training_params(params, overrides, "bad", tmp_path)


def test_generation_reads_the_validation_split_only(recipe, params):
    generation = recipe.generation_params(params, 16, 10)
    assert generation["split"] == "validation"
    assert (generation["num_prompts"], generation["context_sizes"]) == (16, [10])
    assert "continuum" not in generation
    assert params["generation"]["hh"]["split"] == "test"  # the project's own is left alone
    assert generation["sampling"]["max_new_tokens"] == 48
    longer = recipe.generation_params(params, 16, 10, max_new_tokens=96)
    assert longer["sampling"]["max_new_tokens"] == 96
    assert params["generation"]["hh"]["sampling"]["max_new_tokens"] == 48


def _scores(with_judge: bool) -> pd.DataFrame:
    """Two prompts; NP-DPO's honesty user hedges, its helpfulness user gives steps."""
    rows = []
    for prompt_id in (0, 1):
        for model, user, honest in [
            ("nppl_mixed", "helpfulness", False),
            ("nppl_mixed", "honesty", True),
            ("btl_mixed", "helpfulness", False),
            ("btl_mixed", "honesty", False),
        ]:
            row = {
                "model": model,
                "prompt_id": prompt_id,
                "prompt": f"prompt {prompt_id}",
                "user": user,
                "num_context": 10,
                "response": f"{model} {user} {prompt_id}",
                "reward_helpfulness": 2.0 + prompt_id if not honest else 0.0,
                "reward_honesty": 3.0 if honest else 1.0,
            }
            if with_judge:
                row |= {
                    "judge_helpfulness": 1.0 if not honest else 0.5,
                    "judge_honesty": 2.0 if honest else 0.0,
                    "marker_calibrated_hedge": honest,
                    "marker_concrete_steps": not honest,
                }
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_report_prints_gaps_on_rewards_and_judge_and_marker_shares(recipe, capsys):
    scores = _scores(with_judge=True)
    assert recipe.exact_judge(scores) is scores  # the evaluation already judged them
    history = pd.DataFrame(
        {"step": [5, 10], "val_loss": [0.6, 0.5], "val_chosen_nll": [2.0, 1.5], "best": [0, 1]}
    ).astype({"best": bool})
    recipe.report("nll1", scores, {"nppl_mixed": history}, context=10, show=1)
    out = capsys.readouterr().out
    assert "nppl_mixed: kept step 10 of 10: val_loss 0.5000, val_chosen_nll 1.5000" in out
    # honesty: the honesty user 3.0 vs 1.0 on both prompts -> gap +2.00, s.e. 0.00, 2 prompts
    assert "NP-DPO reward_honesty: honesty user - helpfulness user" in out
    line = next(x for x in out.splitlines() if "reward_honesty: honesty user" in x)
    assert line.split()[-3:] == ["2.00", "0.00", "2"]
    line = next(x for x in out.splitlines() if "judge_honesty: honesty user" in x)
    assert line.split()[-3:] == ["2.00", "0.00", "2"]
    assert "calibrated_hedge" in out and "concrete_steps" in out
    assert "nppl_mixed / honesty user / prompt 0" in out


def test_without_the_judge_module_the_judge_is_skipped(recipe, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "steerable_alignment.ultrafeedback.judge", None)
    assert recipe.exact_judge(_scores(with_judge=False)) is None
    assert "exact judge: skipped" in capsys.readouterr().out


def test_sampling_overrides_reach_generation_only_and_share_the_training(recipe, params, tmp_path):
    args = recipe.parse_args(
        [
            "--setting",
            'short={"nll_weight": 1.0}',
            "--setting",
            'long={"nll_weight": 1.0, "sampling": {"max_new_tokens": 80}}',
        ]
    )
    short, long = args.settings["short"], args.settings["long"]
    assert recipe.training_key(short) == recipe.training_key(long)  # one training run
    assert recipe.training_key(short) != recipe.training_key({"nll_weight": 0.5})
    run = recipe.training_params(params, long, "long", tmp_path)
    for model in ("nppl_mixed", "btl_mixed"):
        assert "sampling" not in run["dpo"]["hh"][model]["training"]
    generation = recipe.generation_params(params, 16, 10, None, long["sampling"])
    assert generation["sampling"]["max_new_tokens"] == 80
    assert (
        generation["sampling"]["temperature"]
        == params["generation"]["hh"]["sampling"]["temperature"]
    )
    assert params["generation"]["hh"]["sampling"]["max_new_tokens"] == 48  # left as it was


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--setting", 'a={"sampling": 80}'], "'sampling' must be a JSON object"),
        (["--setting", 'a={"sampling": {"bogus": 1}}'], "unknown key(s) ['bogus']"),
    ],
)
def test_bad_sampling_settings_fail_with_a_clear_message(recipe, capsys, argv, needle):
    with pytest.raises(SystemExit):
        recipe.parse_args(argv)
    assert needle in capsys.readouterr().err


def test_a_bad_sampling_value_names_the_parameter(recipe, params):
    with pytest.raises(ConfigError, match=r"generation\.hh\.sampling\.max_new_tokens"):
        recipe.generation_params(params, 16, 10, None, {"max_new_tokens": 0})


def _compare_files(tmp_path, second_steps: list[bool], shuffle: bool = False) -> None:
    first = _scores(with_judge=True)
    second = _scores(with_judge=True)
    helpful = (second["model"] == "nppl_mixed") & (second["user"] == "helpfulness")
    second.loc[helpful, "marker_concrete_steps"] = second_steps
    second.loc[helpful, "judge_helpfulness"] = [2.0 if s else 1.0 for s in second_steps]
    if shuffle:  # another row order: pairing must follow the prompt
        second = second.iloc[::-1].reset_index(drop=True)
    first.to_parquet(tmp_path / "steering_recipe_a.parquet")
    second.to_parquet(tmp_path / "steering_recipe_b.parquet")


def test_compare_pairs_two_runs_by_prompt_per_model_and_user(recipe, tmp_path):
    # run b: NP-DPO's helpfulness user gives real steps on prompt 1 only (a gives them on both)
    # and its judge helpfulness rises by 1 there
    _compare_files(tmp_path, second_steps=[False, True], shuffle=True)
    args = recipe.parse_args(["--compare", "a", "b", "--out", str(tmp_path)])
    assert args.compare == ["a", "b"] and args.settings == {}
    report = recipe.compare(tmp_path, "a", "b", context=10)
    lines = report.splitlines()
    assert lines[0].startswith("b − a, validation, 10 context pairs, paired by prompt")
    row = next(x for x in lines if x.startswith("| nppl_mixed | helpfulness | real steps"))
    assert row.endswith("| 100.0 | 50.0 | -50.0 ± 36.5 |")  # s.e. over the two prompts
    # the helpfulness judge gap: a is 1.0 - 0.5 on both prompts; b is (1, 2) - 0.5
    gap = next(x for x in lines if "judge gap helpfulness" in x)
    assert gap.endswith("| 0.500 | 1.000 | +0.500 ± 0.365 |")
    unchanged = next(x for x in lines if x.startswith("| btl_mixed | honesty | hedge"))
    assert unchanged.endswith("| 0.0 | 0.0 | +0.0 ± 0.0 |")


def test_compare_refuses_missing_or_unpaired_files(recipe, tmp_path):
    _compare_files(tmp_path, second_steps=[True, True])
    with pytest.raises(SystemExit, match="steering_recipe_c.parquet does not exist"):
        recipe.compare(tmp_path, "a", "c", context=10)
    with pytest.raises(SystemExit, match="no answers at 5 context pairs"):
        recipe.compare(tmp_path, "a", "b", context=5)
    _scores(with_judge=False).to_parquet(tmp_path / "steering_recipe_c.parquet")
    with pytest.raises(SystemExit, match=r"lacks the exact judge's columns \['judge_helpfulness'"):
        recipe.compare(tmp_path, "a", "c", context=10)
    other = _scores(with_judge=True)
    other.loc[other["prompt_id"] == 1, "prompt_id"] = 7  # a prompt the first run never saw
    other.to_parquet(tmp_path / "steering_recipe_c.parquet")
    with pytest.raises(ValueError, match="different prompt_ids .* not a paired comparison"):
        recipe.compare(tmp_path, "a", "c", context=10)
