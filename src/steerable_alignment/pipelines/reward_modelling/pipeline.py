"""``reward_modelling``: one base pipeline, a namespace per (dataset, variant)."""

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.namespaces import per_variant
from steerable_alignment.pipelines.reward_modelling.nodes import train_reward_model
from steerable_alignment.pipelines.variants import REWARD_DATASETS


def base_pipeline() -> Pipeline:
    """Train one reward model: the template every variant instantiates."""
    return Pipeline(
        [
            node(
                train_reward_model,
                inputs={
                    "pairs": "pairs",
                    "features": "features",
                    "data": "params:data",
                    "variant": "params:variant",
                },
                outputs=["reward_model", "training_history"],
                name="train_reward_model",
                tags=["gpu"],
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum(
        (
            per_variant(
                dataset,
                spec.variants,
                lambda _: base_pipeline(),
                inputs={"pairs": f"{dataset}.pairs", "features": f"{dataset}.features"},
                parameters={
                    "params:data": f"params:reward_modelling.{dataset}.data",
                    "params:variant": f"params:reward_modelling.{dataset}.{{variant}}",
                },
                tags=[dataset],
            )
            for dataset, spec in REWARD_DATASETS.items()
        ),
        Pipeline([]),
    )
