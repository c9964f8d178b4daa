import math

import pandas as pd
import pytest

from steerable_alignment.models.config import ConfigError
from steerable_alignment.reporting.headline import HeadlineSpec, headline_metrics, headline_specs


def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["nppl_mixed", "nppl_mixed", "btl_mixed"],
            "score": ["judge_honesty - judge_helpfulness", "w=0.5", "x"],
            "num_context": [0, 10, 10],
            "accuracy": [0.5, 0.875, math.nan],
            "nll": [0.69, 0.3, 0.7],
        }
    )


def test_one_metric_per_row_and_value_column_named_by_the_keys():
    spec = HeadlineSpec(keys=("model", "num_context"), values=("accuracy", "nll"))
    metrics = headline_metrics(table(), "hh_reward_metrics", spec)
    assert metrics == {
        "hh_reward_metrics/model:nppl_mixed/num_context:0/accuracy": 0.5,
        "hh_reward_metrics/model:nppl_mixed/num_context:0/nll": 0.69,
        "hh_reward_metrics/model:nppl_mixed/num_context:10/accuracy": 0.875,
        "hh_reward_metrics/model:nppl_mixed/num_context:10/nll": 0.3,
        # the NaN accuracy of btl_mixed is left out, its nll kept
        "hh_reward_metrics/model:btl_mixed/num_context:10/nll": 0.7,
    }


def test_cells_with_characters_mlflow_refuses_are_replaced():
    spec = HeadlineSpec(keys=("score",), values=("nll",))
    names = set(headline_metrics(table(), "steering_continuum", spec))
    assert "steering_continuum/score:judge_honesty - judge_helpfulness/nll" in names
    assert "steering_continuum/score:w_0.5/nll" in names  # '=' is not allowed in a name


def test_a_missing_column_or_keys_that_repeat_are_refused():
    missing = r"tracking.headline.t: table 't' has no column\(s\) \['ece'\]"
    with pytest.raises(ValueError, match=missing):
        headline_metrics(table(), "t", HeadlineSpec(keys=("model",), values=("ece",)))
    with pytest.raises(ValueError, match=r"the keys \['model'\] do not name one row each"):
        headline_metrics(table(), "t", HeadlineSpec(keys=("model",), values=("nll",)))


def test_specs_from_parameters_and_bad_ones_name_the_parameter():
    specs = headline_specs({"*_dpo_metrics": {"keys": ["model"], "values": ["accuracy"]}})
    assert specs == {"*_dpo_metrics": HeadlineSpec(keys=("model",), values=("accuracy",))}
    assert headline_specs(None) == {}
    bad = [
        ({"t": {"keys": ["a"], "value": ["b"]}}, r"headline.t: unknown key\(s\) \['value'\]"),
        ({"t": {"keys": "a", "values": ["b"]}}, r"tracking.headline.t.keys: expected a list"),
        ({"t": {"keys": ["a"], "values": []}}, r"tracking.headline.t.values: name at least one"),
        ({"t": ["a"]}, r"tracking.headline.t: expected a mapping"),
        (["t"], r"tracking.headline: expected a mapping of table name"),
    ]
    for block, message in bad:
        with pytest.raises(ConfigError, match=message):
            headline_specs(block)


def test_the_configured_specs_parse():
    from tests.pipelines.helpers import project_parameters

    specs = headline_specs(project_parameters()["tracking"]["headline"])
    assert {"*_reward_metrics", "*_dpo_metrics", "steering_gap"} <= set(specs)
