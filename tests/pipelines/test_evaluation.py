import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from kedro.runner import SequentialRunner

from steerable_alignment.pipelines.evaluation import create_pipeline
from steerable_alignment.pipelines.evaluation.nodes import (
    COMPARISON_COLUMNS,
    METRIC_COLUMNS,
    collect_reward_metrics,
)
from steerable_alignment.pipelines.evaluation.pipeline import report_pipeline
from steerable_alignment.pipelines.reward_modelling import create_pipeline as training
from steerable_alignment.pipelines.variants import REWARD_DATASETS
from steerable_alignment.synthetic.task import bayes_optimal_accuracy
from tests.pipelines.helpers import memory_catalog, project_parameters

SIZES = [0, 1, 3, 5, 10]


@pytest.fixture(scope="module")
def evaluated(tiny_synthetic):
    pairs, features = tiny_synthetic
    params = project_parameters()
    params["evaluation"]["synthetic"]["episodes_per_objective"] = 200
    params["evaluation"]["synthetic"]["bootstrap"]["replicates"] = 300
    keep = (
        "reward_metrics",
        "reward_comparisons",
        "synthetic.evaluation_episodes",
        "synthetic.bayes_optimal.predictions",
        "synthetic.btl.predictions",
    )
    catalog = memory_catalog(
        params, keep=keep, **{"synthetic.pairs": pairs, "synthetic.features": features}
    )
    pipeline = (training() + create_pipeline()).only_nodes_with_namespaces(["synthetic"])
    SequentialRunner().run(pipeline + report_pipeline(["synthetic"]), catalog)
    return catalog, params


def test_metrics_table(evaluated):
    catalog, _ = evaluated
    metrics = catalog.load("reward_metrics")
    assert list(metrics.columns) == METRIC_COLUMNS
    models = set(REWARD_DATASETS["synthetic"].variants) | {"bayes_optimal"}
    assert set(metrics["model"]) == models
    assert set(metrics["objective"]) == {"all", "user_0", "user_1"}
    assert sorted(metrics["num_context"].unique()) == SIZES
    assert len(metrics) == len(models) * 3 * 5
    assert (metrics.loc[metrics["objective"] == "all", "n_episodes"] == 400).all()
    assert (metrics.loc[metrics["objective"] != "all", "n_episodes"] == 200).all()
    # 120 test pairs (600 x 0.2) re-used by 400 episodes x 20 targets: the
    # pool bootstrap must see those 120 clusters and be well above the naive s.e.
    pooled = metrics[metrics["objective"] == "all"]
    assert (pooled["n_clusters"] == 120).all()
    btl = pooled[pooled["model"] == "btl"]
    assert (btl["accuracy_se_bootstrap"] > 1.5 * btl["accuracy_se_episodes"]).all()

    # The oracle matches the closed-form Bayes accuracy (the task's two users
    # disagree on half of the pairs) within 3 bootstrap s.e.
    oracle = pooled[pooled["model"] == "bayes_optimal"].set_index("num_context")
    for n in SIZES:
        gap = abs(oracle.loc[n, "accuracy"] - bayes_optimal_accuracy(n))
        assert gap < 3 * oracle.loc[n, "accuracy_se_bootstrap"] + 0.01, n
    # Context-free models give the same predictions at every context size.
    btl_acc = metrics[(metrics["model"] == "btl") & (metrics["objective"] == "all")]
    assert btl_acc["accuracy"].nunique() == 1


def test_metrics_recomputed_from_the_saved_predictions(evaluated):
    catalog, _ = evaluated
    metrics = catalog.load("reward_metrics")
    episodes = catalog.load("synthetic.evaluation_episodes")
    pairs, features = catalog.load("synthetic.pairs"), catalog.load("synthetic.features")
    oracle = catalog.load("synthetic.bayes_optimal.predictions")
    assert oracle["prob_b"].shape == (5, 400, 20)
    rows = episodes["rows"][:, int(episodes["max_context"]) :]
    choice_cols = pairs[["choice_user_0", "choice_user_1"]].to_numpy()
    choices = torch.from_numpy(choice_cols[rows.numpy(), episodes["objective"].numpy()[:, None]])
    assert np.array_equal(features["pair_id"].numpy(), pairs["pair_id"].to_numpy())
    for i, n in enumerate(SIZES):
        prob = oracle["prob_b"][i]
        correct = torch.where(
            (prob - 0.5).abs() < 1e-9, 0.5, ((prob > 0.5) == choices.bool()).double()
        )
        row = metrics[
            (metrics["model"] == "bayes_optimal")
            & (metrics["objective"] == "all")
            & (metrics["num_context"] == n)
        ]
        assert float(row["accuracy"].iloc[0]) == pytest.approx(float(correct.mean()), abs=1e-12)


def test_comparisons_are_paired_differences(evaluated):
    catalog, params = evaluated
    metrics = catalog.load("reward_metrics").set_index(["model", "objective", "num_context"])
    comparisons = catalog.load("reward_comparisons")
    assert list(comparisons.columns) == COMPARISON_COLUMNS
    expected = {
        (c["model"], c["baseline"]) for c in params["evaluation"]["synthetic"]["comparisons"]
    }
    assert set(zip(comparisons["model"], comparisons["baseline"], strict=True)) == expected
    assert len(comparisons) == len(expected) * 3 * 5
    for row in comparisons.itertuples():
        model = metrics.loc[(row.model, row.objective, row.num_context)]
        base = metrics.loc[(row.baseline, row.objective, row.num_context)]
        assert row.accuracy_diff == pytest.approx(model["accuracy"] - base["accuracy"], abs=1e-12)
        assert row.nll_diff == pytest.approx(model["nll"] - base["nll"], abs=1e-9)
        assert row.accuracy_diff_se >= 0
    # BTL vs the oracle: the oracle improves with context, BTL cannot.
    btl = comparisons[
        (comparisons["model"] == "btl")
        & (comparisons["baseline"] == "bayes_optimal")
        & (comparisons["objective"] == "all")
    ].set_index("num_context")
    assert btl.loc[10, "accuracy_diff"] < btl.loc[0, "accuracy_diff"] - 0.15


def test_chart_and_summary(evaluated):
    catalog, _ = evaluated
    chart = catalog.load("synthetic.accuracy_chart")
    assert isinstance(chart, go.Figure)
    models = set(REWARD_DATASETS["synthetic"].variants) | {"bayes_optimal"}
    assert {t.name for t in chart.data} == models
    assert {t.name for t in chart.data if t.line.dash == "dash"} == {"bayes_optimal"}
    metrics = catalog.load("reward_metrics")
    pooled_nppl = metrics[(metrics["model"] == "nppl") & (metrics["objective"] == "all")]
    trace = next(t for t in chart.data if t.name == "nppl" and t.showlegend)
    se = 100 * pooled_nppl.sort_values("num_context")["accuracy_se_bootstrap"].to_numpy()
    assert np.allclose(np.asarray(trace.error_y.array), se)

    summary = catalog.load("reward_summary")
    assert "| nppl |" in summary and "bayes_optimal" in summary
    assert "| nppl | bayes_optimal | all |" in summary  # the paired comparisons table
    assert "Mean NLL" in summary


def test_all_models_and_the_oracle_share_the_episodes():
    pipeline = create_pipeline()
    consumers = {n.name for n in pipeline.nodes if "synthetic.evaluation_episodes" in n.inputs}
    expected = {
        f"synthetic.{v}.predict_reward_model" for v in REWARD_DATASETS["synthetic"].variants
    }
    expected |= {
        "synthetic.bayes_optimal.predict_bayes_optimal",
        "synthetic.collect_reward_metrics",
    }
    assert consumers == expected
    producers = [n.name for n in pipeline.nodes if "synthetic.evaluation_episodes" in n.outputs]
    assert producers == ["synthetic.make_evaluation_episodes"]


def test_comparison_naming_an_unknown_model_fails_before_scoring(tiny_synthetic):
    from steerable_alignment.models.config import ConfigError

    pairs, features = tiny_synthetic
    params = project_parameters()["evaluation"]["synthetic"]
    params = {**params, "comparisons": [{"model": "nppl", "baseline": "btl_typo"}]}
    episodes = {
        "rows": torch.zeros(2, 30, dtype=torch.long),
        "objective": torch.zeros(2, dtype=torch.long),
        "max_context": torch.tensor(10),
    }
    empty = {"num_context": torch.tensor(SIZES), "prob_b": torch.full((5, 2, 20), 0.5)}
    data = {"name": "synthetic", "objectives": ["user_0", "user_1"]}
    with pytest.raises(ConfigError, match="btl_typo"):
        collect_reward_metrics(pairs, features, episodes, data, params, nppl=empty)
