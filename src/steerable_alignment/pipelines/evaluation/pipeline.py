"""``evaluation``: score every trained model on shared test episodes, then report.

Per data set (namespace ``<dataset>``): draw the evaluation episodes once,
predict with each variant on them (namespace ``<dataset>.<variant>``, the
same base pipeline for all), add the oracle where one exists, then score
every model's predictions together (bootstrap over the test pool shared by
all models, paired comparisons) into the data set's tables and chart. Then
one table, one comparisons table and a summary for all data sets.
"""

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.evaluation.nodes import (
    ORACLE_MODEL,
    collect_reward_metrics,
    concat_reward_comparisons,
    concat_reward_metrics,
    make_evaluation_episodes,
    plot_accuracy_by_context,
    predict_bayes_optimal,
    predict_reward_model,
    summarise_reward_metrics,
)
from steerable_alignment.pipelines.variants import REWARD_DATASETS


def base_pipeline() -> Pipeline:
    """Predict with one model: the template every variant instantiates."""
    return Pipeline(
        [
            node(
                predict_reward_model,
                inputs={
                    "reward_model": "reward_model",
                    "pairs": "pairs",
                    "features": "features",
                    "episodes": "evaluation_episodes",
                    "data": "params:data",
                    "evaluation": "params:evaluation",
                },
                outputs="predictions",
                name="predict_reward_model",
            )
        ]
    )


def dataset_pipeline(dataset: str) -> Pipeline:
    """Everything evaluated on one data set, under the namespace ``<dataset>``."""
    spec = REWARD_DATASETS[dataset]
    data = f"params:reward_modelling.{dataset}.data"
    evaluation = f"params:evaluation.{dataset}"
    episodes = f"{dataset}.evaluation_episodes"
    nodes = [
        node(
            make_evaluation_episodes,
            inputs={
                "pairs": f"{dataset}.pairs",
                "features": f"{dataset}.features",
                "data": data,
                "evaluation": evaluation,
            },
            outputs=episodes,
            name="make_evaluation_episodes",
            namespace=dataset,
        )
    ]
    models = {v: f"{dataset}.{v}.predictions" for v in spec.variants}
    if spec.oracle:
        models[ORACLE_MODEL] = f"{dataset}.{ORACLE_MODEL}.predictions"
        nodes.append(
            node(
                predict_bayes_optimal,
                inputs={
                    "pairs": f"{dataset}.pairs",
                    "features": f"{dataset}.features",
                    "episodes": episodes,
                    "data": data,
                    "evaluation": evaluation,
                    "threshold": "params:synthetic_data.threshold",
                },
                outputs=models[ORACLE_MODEL],
                name=f"predict_{ORACLE_MODEL}",
                namespace=f"{dataset}.{ORACLE_MODEL}",
            )
        )
    nodes += [
        node(
            collect_reward_metrics,
            inputs={
                "pairs": f"{dataset}.pairs",
                "features": f"{dataset}.features",
                "episodes": episodes,
                "data": data,
                "evaluation": evaluation,
                **models,
            },
            outputs=[f"{dataset}_reward_metrics", f"{dataset}_reward_comparisons"],
            name="collect_reward_metrics",
            namespace=dataset,
        ),
        node(
            plot_accuracy_by_context,
            inputs={"reward_metrics": f"{dataset}_reward_metrics", "data": data},
            outputs=f"{dataset}.accuracy_chart",
            name="plot_accuracy_by_context",
            namespace=dataset,
        ),
    ]
    variants = [
        Pipeline(
            base_pipeline(),
            namespace=f"{dataset}.{variant}",
            inputs={
                "pairs": f"{dataset}.pairs",
                "features": f"{dataset}.features",
                "evaluation_episodes": episodes,
            },
            parameters={"params:data": data, "params:evaluation": evaluation},
            tags=[variant],
        )
        for variant in spec.variants
    ]
    return Pipeline(sum(variants, Pipeline(nodes)), tags=[dataset])


def report_pipeline(datasets: list[str]) -> Pipeline:
    """All data sets' metrics and comparisons in one table each, and the markdown summary."""
    return Pipeline(
        [
            node(
                concat_reward_metrics,
                inputs=[f"{d}_reward_metrics" for d in datasets],
                outputs="reward_metrics",
                name="concat_reward_metrics",
            ),
            node(
                concat_reward_comparisons,
                inputs=[f"{d}_reward_comparisons" for d in datasets],
                outputs="reward_comparisons",
                name="concat_reward_comparisons",
            ),
            node(
                summarise_reward_metrics,
                inputs=["reward_metrics", "reward_comparisons"],
                outputs="reward_summary",
                name="summarise_reward_metrics",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    per_dataset = [dataset_pipeline(d) for d in REWARD_DATASETS]
    return sum(per_dataset, report_pipeline(list(REWARD_DATASETS)))
