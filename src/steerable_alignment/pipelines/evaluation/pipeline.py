"""``evaluation``: score every trained model on shared test episodes, then report.

Per data set (namespace ``<dataset>``): draw the evaluation episodes once,
predict with each variant on them (namespace ``<dataset>.<variant>``, the
same base pipeline for all), add the oracle where one exists, then score
every model's predictions together (bootstrap over the test pool shared by
all models, paired comparisons) into the data set's tables and chart. Then
one table, one comparisons table and a summary for all data sets.
"""

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.evaluation.elicitation_nodes import active_elicitation_pipeline
from steerable_alignment.pipelines.evaluation.generation_nodes import (
    generate_answers_for_users,
    make_generation_users,
    plot_continuum,
    plot_steering_gap,
    score_answers,
    summarise_generations,
)
from steerable_alignment.pipelines.evaluation.mixed_user_nodes import mixed_user_pipeline
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
from steerable_alignment.pipelines.namespaces import concat_across, dataset_node, per_variant_node
from steerable_alignment.pipelines.variants import (
    ACTIVE_ELICITATION_MODELS,
    DEFAULT_DPO_DATASETS,
    DPO_DATASETS,
    MIXED_USER_DATASETS,
    REWARD_DATASETS,
)


def dataset_pipeline(dataset: str) -> Pipeline:
    """Everything evaluated on one data set, under the namespace ``<dataset>``."""
    spec = REWARD_DATASETS[dataset]
    data = f"params:reward_modelling.{dataset}.data"
    evaluation = f"params:evaluation.{dataset}"
    episodes = f"{dataset}.evaluation_episodes"
    scored = {  # what every node scoring the shared episodes reads
        "pairs": f"{dataset}.pairs",
        "features": f"{dataset}.features",
        "episodes": episodes,
        "data": data,
        "evaluation": evaluation,
    }
    nodes = [
        dataset_node(
            make_evaluation_episodes,
            dataset,
            inputs={
                "pairs": f"{dataset}.pairs",
                "features": f"{dataset}.features",
                "data": data,
                "evaluation": evaluation,
            },
            outputs=episodes,
            name="make_evaluation_episodes",
        )
    ]
    models = {v: f"{dataset}.{v}.predictions" for v in spec.variants}
    if spec.oracle:
        models[ORACLE_MODEL] = f"{dataset}.{ORACLE_MODEL}.predictions"
        nodes.append(
            node(
                predict_bayes_optimal,
                inputs={**scored, "threshold": "params:synthetic_data.threshold"},
                outputs=models[ORACLE_MODEL],
                name=f"predict_{ORACLE_MODEL}",
                namespace=f"{dataset}.{ORACLE_MODEL}",
            )
        )
    nodes += [
        dataset_node(
            collect_reward_metrics,
            dataset,
            inputs={**scored, **models},
            outputs=[f"{dataset}_reward_metrics", f"{dataset}_reward_comparisons"],
            name="collect_reward_metrics",
        ),
        dataset_node(
            plot_accuracy_by_context,
            dataset,
            inputs={"reward_metrics": f"{dataset}_reward_metrics", "data": data},
            outputs=f"{dataset}.accuracy_chart",
            name="plot_accuracy_by_context",
        ),
    ]
    variants = per_variant_node(
        dataset,
        spec.variants,
        predict_reward_model,
        name="predict_reward_model",
        inputs={"reward_model": "{variant}.reward_model", **scored},
        outputs="predictions",
    )
    return Pipeline(Pipeline(nodes) + variants, tags=[dataset])


def report_pipeline(datasets: list[str]) -> Pipeline:
    """All data sets' metrics and comparisons in one table each, and the markdown summary."""
    return Pipeline(
        [
            *concat_across(
                datasets,
                {
                    "reward_metrics": concat_reward_metrics,
                    "reward_comparisons": concat_reward_comparisons,
                },
            ),
            node(
                summarise_reward_metrics,
                inputs=["reward_metrics", "reward_comparisons"],
                outputs="reward_summary",
                name="summarise_reward_metrics",
            ),
        ]
    )


def generation_objectives(dataset: str) -> list[str]:
    """The objectives with their own BTL-DPO policy (and BTL reward model) on ``dataset``."""
    return [
        v.removeprefix("btl_")
        for v in DPO_DATASETS[dataset]
        if v.startswith("btl_") and v != "btl_mixed"
    ]


def generation_pipeline(dataset: str) -> Pipeline:
    """Steered answers of every DPO policy of ``dataset``, scored by the BTL reward models."""
    data = f"params:dpo.{dataset}.data"
    generation = f"params:generation.{dataset}"
    pairs, features = f"{dataset}.pairs", f"{dataset}.features"
    users = f"{dataset}.generation_users"
    nodes = [
        dataset_node(
            make_generation_users,
            dataset,
            inputs={"pairs": pairs, "features": features, "data": data, "generation": generation},
            outputs=users,
            name="make_generation_users",
        ),
        dataset_node(
            score_answers,
            dataset,
            inputs={
                "pairs": pairs,
                "features": features,
                "users": users,
                "data": data,
                "embedding": f"params:embedding.{dataset}",
                "generation": generation,
                "base_policy": "base_policy",
                **{v: f"{dataset}.{v}.generations" for v in DPO_DATASETS[dataset]},
                **{
                    f"reward_model_{k}": f"{dataset}.btl_{k}.reward_model"
                    for k in generation_objectives(dataset)
                },
            },
            outputs=f"{dataset}_generation_scores",
            name="score_answers",
        ),
    ]
    answers = per_variant_node(
        dataset,
        DPO_DATASETS[dataset],
        generate_answers_for_users,
        name="generate_answers",
        inputs={
            "base_policy": "base_policy",
            "policy": "{variant}.policy",
            "pairs": pairs,
            "features": features,
            "users": users,
            "data": data,
            "generation": generation,
        },
        outputs="generations",
        tags=["gpu"],
    )
    return Pipeline(Pipeline(nodes) + answers, tags=[dataset, "generation"])


def generation_report_pipeline(datasets: tuple[str, ...]) -> Pipeline:
    """Win-rates, steering gaps, mean rewards and samples of every data set, and the chart."""
    return Pipeline(
        [
            node(
                summarise_generations,
                inputs={
                    "generation": "params:generation",
                    **{d: f"{d}_generation_scores" for d in datasets},
                },
                outputs=[
                    "generation_win_rates",
                    "steering_gap",
                    "generation_rewards",
                    "generation_samples",
                    "generation_markers",
                    "steering_continuum",
                ],
                name="summarise_generations",
            ),
            node(
                plot_continuum,
                inputs={
                    "steering_continuum": "steering_continuum",
                    "generation": "params:generation",
                },
                outputs="steering_continuum_chart",
                name="plot_continuum",
            ),
            node(
                plot_steering_gap,
                inputs="steering_gap",
                outputs="steering_gap_chart",
                name="plot_steering_gap",
            ),
        ],
        tags=["generation"],
    )


def create_pipeline(
    generation_datasets: tuple[str, ...] = DEFAULT_DPO_DATASETS,
    mixed_user_datasets: tuple[str, ...] = MIXED_USER_DATASETS,
    **kwargs,
) -> Pipeline:
    """Reward-model evaluation on every data set, and generation on ``generation_datasets``
    (the DPO data sets; their policies come from the ``dpo`` pipeline). The reward
    models of ``mixed_user_datasets`` are also scored on users on a continuum."""
    per_dataset = [dataset_pipeline(d) for d in REWARD_DATASETS]
    pipeline = sum(per_dataset, report_pipeline(list(REWARD_DATASETS)))
    pipeline += sum((mixed_user_pipeline(d) for d in mixed_user_datasets), Pipeline([]))
    pipeline += active_elicitation_pipeline(ACTIVE_ELICITATION_MODELS)
    if generation_datasets:
        pipeline += sum(
            (generation_pipeline(d) for d in generation_datasets),
            generation_report_pipeline(tuple(generation_datasets)),
        )
    return pipeline
