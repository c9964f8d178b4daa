"""``embedding``: one base pipeline, a namespace per UltraFeedback data set."""

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.embedding.nodes import embed_pairs

#: Data sets whose pairs are embedded; each has a block in
#: conf/base/parameters_embedding.yml and reads ``<dataset>.pairs``.
EMBEDDING_DATASETS = ("hh", "hht")


def base_pipeline() -> Pipeline:
    """Embed one pairs table: the template every data set instantiates."""
    return Pipeline(
        [
            node(
                embed_pairs,
                inputs={"pairs": "pairs", "params": "params:embedding"},
                outputs="features",
                name="embed_pairs",
                tags=["gpu"],
            )
        ]
    )


def dataset_pipeline(dataset: str) -> Pipeline:
    """The base pipeline under the namespace ``<dataset>``."""
    return Pipeline(
        base_pipeline(),
        namespace=dataset,
        inputs={"pairs": f"{dataset}.pairs"},
        outputs={"features": f"{dataset}.features"},
        parameters={"params:embedding": f"params:embedding.{dataset}"},
        tags=[dataset],
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((dataset_pipeline(d) for d in EMBEDDING_DATASETS), Pipeline([]))
