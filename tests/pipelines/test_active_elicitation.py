"""The active-elicitation nodes on tiny synthetic data: the exact oracle's ceiling, the
table's bookkeeping, pairing against ``random``, the chart, and bad parameters."""

from __future__ import annotations

import copy

import pytest
import torch

from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.pipelines.evaluation.elicitation_nodes import (
    ACTIVE_COLUMNS,
    VERSUS_COLUMNS,
    concat_active_elicitation,
    evaluate_active_elicitation,
    plot_active_elicitation,
)
from tests.pipelines.helpers import project_parameters

DATA = {"name": "synthetic", "objectives": ["user_0", "user_1"]}


def _params(**changes):
    params = copy.deepcopy(project_parameters()["active_elicitation"]["synthetic"])
    params.update(pool_size=40, users_per_objective=10, num_targets=10, samples=4)
    params["population"] = {"size": 16, "seed": 0}
    params["bootstrap"] = {"replicates": 20, "cluster_by": "pair", "seed": 7}
    params.update(changes)
    return params


def _model(kind):
    config = RewardModelConfig.from_params(
        {"type": kind, "input_dim": 1, "hidden_dim": 8, "latent_dim": 4, "num_heads": 2}
    )
    torch.manual_seed(0)
    return build_model(config)


@pytest.fixture(scope="module")
def tables(tiny_synthetic):
    pairs, features = tiny_synthetic
    return evaluate_active_elicitation(
        pairs, features, DATA, _params(), nppl=_model("nppl"), nppl_latent=_model("nppl_latent")
    )


@pytest.fixture(scope="module")
def table(tables):
    return tables[0]


def test_asking_well_is_compared_with_asking_more_at_random(tables):
    table, versus = tables
    assert list(versus.columns) == VERSUS_COLUMNS
    budgets = [tuple(b) for b in _params()["versus_random"]]
    assert budgets and sorted(set(zip(versus["num_asked"], versus["num_random"]))) == sorted(
        budgets
    )
    assert "random" not in set(versus["strategy"])
    accuracy = table.set_index(["model", "strategy", "objective", "num_asked"])["accuracy"]
    for row in versus.itertuples():
        asked = accuracy[(row.model, row.strategy, row.objective, row.num_asked)]
        randomly = accuracy[(row.model, "random", row.objective, row.num_random)]
        assert row.accuracy == pytest.approx(asked)
        assert row.accuracy_random == pytest.approx(randomly)
        assert row.accuracy_diff == pytest.approx(asked - randomly)
        assert row.accuracy_diff_se > 0 or row.accuracy_diff == 0
    # the Bayes-optimal active policy after one pair beats five random pairs or ties them
    oracle = versus[(versus["model"] == "bayes_optimal") & (versus["objective"] == "all")]
    assert (oracle["accuracy_diff"] >= 0).all() and (oracle["accuracy"] == 1.0).all()


def test_the_bayes_optimal_active_policy_identifies_a_user_with_one_pair(table):
    oracle = table[(table["model"] == "bayes_optimal") & (table["objective"] == "all")]
    info = oracle[oracle["strategy"] == "information"].set_index("num_asked")["accuracy"]
    rand = oracle[oracle["strategy"] == "random"].set_index("num_asked")["accuracy"]
    assert info[0] == pytest.approx(rand[0])  # nothing asked yet: the same predictions
    assert info[1] == 1.0 and info[5] == 1.0  # one disagreeing pair reveals the user
    assert rand[1] < 0.97  # a random pair often does not
    diff = oracle[(oracle["strategy"] == "information")].set_index("num_asked")
    assert diff.loc[1, "accuracy_diff_vs_random"] == pytest.approx(info[1] - rand[1])
    assert diff.loc[1, "accuracy_diff_vs_random_se"] > 0


def test_every_model_strategy_and_size_has_a_row(table):
    assert list(table.columns) == ACTIVE_COLUMNS
    sizes = sorted(_params()["asked"])
    for (model, strategy), rows in table.groupby(["model", "strategy"]):
        assert sorted(rows["num_asked"].unique()) == sizes, (model, strategy)
        assert set(rows["objective"]) == {"all", "user_0", "user_1"}
    strategies = table.groupby("model")["strategy"].unique().map(sorted).to_dict()
    # one z: no information gain about z, but about the population's users
    assert strategies["nppl"] == ["population", "random", "uncertainty"]
    assert strategies["nppl_latent"] == ["information", "population", "random", "uncertainty"]
    assert "population" not in strategies["bayes_optimal"]  # its information is exact
    assert (table[table["objective"] == "all"]["n_users"] == 20).all()
    random_rows = table[table["strategy"] == "random"]
    assert random_rows["accuracy_diff_vs_random"].isna().all()


def test_the_chart_and_the_concatenation(table):
    both = concat_active_elicitation(table, table.assign(dataset="other"))
    assert len(both) == 2 * len(table)
    figure = plot_active_elicitation(both)
    assert len(figure.data) == 2 * table.groupby(["model", "strategy"]).ngroups


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"strategies": ["random", "greedy"]}, r"strategies': unknown strategy \['greedy'\]"),
        ({"asked": [0, 50]}, r"cannot ask 50 distinct pairs from a pool of 40"),
        ({"pool_size": 0}, r"pool_size': must be a positive integer"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
        ({"versus_random": [[2, 4]]}, r"versus_random': pairs \[pairs asked, random pairs\]"),
        ({"versus_random": [2, 5]}, r"versus_random'.*got 2"),
        ({"population": {"size": 1}}, r"population': \{size: an integer >= 2, seed\}"),
        ({"shortlist": 0}, r"shortlist': a positive integer .* or null"),
    ],
)
def test_bad_parameters_fail_before_any_work(tiny_synthetic, changes, needle):
    pairs, features = tiny_synthetic
    with pytest.raises(ConfigError, match=needle):
        evaluate_active_elicitation(pairs, features, DATA, _params(**changes), nppl=_model("nppl"))


def test_a_pool_too_large_for_the_split_is_refused(tiny_synthetic):
    pairs, features = tiny_synthetic
    with pytest.raises(ConfigError, match="cannot hold a pool of 115"):
        evaluate_active_elicitation(
            pairs,
            features,
            DATA,
            _params(pool_size=115, asked=[0, 1], versus_random=[]),
            nppl=_model("nppl"),
        )
