"""``synthetic_data``: the two-user synthetic benchmark (DESIGN.md §4)."""

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.synthetic_data.nodes import generate_synthetic_pairs


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generate_synthetic_pairs,
                inputs="params:synthetic_data",
                outputs=["pairs", "features"],
                name="generate_synthetic_pairs",
            )
        ],
        namespace="synthetic",
        parameters={"params:synthetic_data": "params:synthetic_data"},
        tags=["synthetic"],
    )
