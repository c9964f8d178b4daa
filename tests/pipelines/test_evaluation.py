import plotly.graph_objects as go
from kedro.runner import SequentialRunner

from steerable_alignment.pipelines.evaluation import create_pipeline
from steerable_alignment.pipelines.evaluation.nodes import METRIC_COLUMNS
from steerable_alignment.pipelines.evaluation.pipeline import report_pipeline
from steerable_alignment.pipelines.reward_modelling import create_pipeline as training
from steerable_alignment.pipelines.variants import REWARD_DATASETS
from tests.pipelines.helpers import memory_catalog, project_parameters


def test_evaluation_end_to_end(tiny_synthetic):
    pairs, features = tiny_synthetic
    params = project_parameters()
    params["evaluation"]["synthetic"]["episodes_per_objective"] = 30
    catalog = memory_catalog(
        params,
        keep=("reward_metrics",),
        **{"synthetic.pairs": pairs, "synthetic.features": features},
    )
    pipeline = (training() + create_pipeline()).only_nodes_with_namespaces(["synthetic"])
    SequentialRunner().run(pipeline + report_pipeline(["synthetic"]), catalog)

    metrics = catalog.load("reward_metrics")
    assert list(metrics.columns) == METRIC_COLUMNS
    models = set(REWARD_DATASETS["synthetic"].variants) | {"bayes_optimal"}
    assert set(metrics["model"]) == models
    assert set(metrics["objective"]) == {"all", "user_0", "user_1"}
    assert sorted(metrics["num_context"].unique()) == [0, 1, 3, 5, 10]
    assert len(metrics) == len(models) * 3 * 5
    assert metrics["accuracy"].between(0, 1).all()
    assert (metrics.loc[metrics["objective"] == "all", "n_episodes"] == 60).all()
    assert (metrics.loc[metrics["objective"] != "all", "n_episodes"] == 30).all()

    oracle = metrics[(metrics["model"] == "bayes_optimal") & (metrics["objective"] == "all")]
    by_context = oracle.set_index("num_context")["accuracy"]
    assert by_context[10] > by_context[0]  # the oracle identifies the user
    # Context-free models give the same predictions at every context size.
    btl = metrics[(metrics["model"] == "btl") & (metrics["objective"] == "all")]
    assert btl["accuracy"].nunique() == 1

    chart = catalog.load("synthetic.accuracy_chart")
    assert isinstance(chart, go.Figure)
    names = {t.name for t in chart.data}
    assert names == models
    dashed = {t.name for t in chart.data if t.line.dash == "dash"}
    assert dashed == {"bayes_optimal"}

    summary = catalog.load("reward_summary")
    assert "| nppl |" in summary and "bayes_optimal" in summary


def test_all_models_and_the_oracle_share_the_episodes():
    pipeline = create_pipeline()
    consumers = {n.name for n in pipeline.nodes if "synthetic.evaluation_episodes" in n.inputs}
    expected = {
        f"synthetic.{v}.evaluate_reward_model" for v in REWARD_DATASETS["synthetic"].variants
    }
    assert consumers == expected | {"synthetic.bayes_optimal.evaluate_bayes_optimal"}
    producers = [n.name for n in pipeline.nodes if "synthetic.evaluation_episodes" in n.outputs]
    assert producers == ["synthetic.make_evaluation_episodes"]
