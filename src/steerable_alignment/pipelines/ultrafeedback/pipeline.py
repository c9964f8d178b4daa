"""``ultrafeedback``: raw UltraFeedback-shaped data -> one pairs table per data set.

One node reads the configured source into ``ultrafeedback_raw``; one base
node (``build_preference_pairs``) is instantiated per data set under its
namespace (``hh``, ``hht``), reading ``params:ultrafeedback.<dataset>`` and
writing ``<dataset>.pairs`` (catalog factory ``"{dataset}.pairs"``).
"""

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.ultrafeedback.nodes import (
    build_preference_pairs,
    load_ultrafeedback_raw,
)

# Data sets built from UltraFeedback; each needs a block ultrafeedback.<name>.
ULTRAFEEDBACK_DATASETS = ("hh", "hht")


def base_pipeline() -> Pipeline:
    """Build one data set's pairs: the template every data set instantiates."""
    return Pipeline(
        [
            node(
                build_preference_pairs,
                inputs={"raw": "raw", "params": "params:pairs"},
                outputs="pairs",
                name="build_preference_pairs",
            )
        ]
    )


def dataset_pipeline(dataset: str) -> Pipeline:
    """The base pipeline under the namespace ``<dataset>``."""
    return Pipeline(
        base_pipeline(),
        namespace=dataset,
        inputs={"raw": "ultrafeedback_raw"},
        parameters={"params:pairs": f"params:ultrafeedback.{dataset}"},
        tags=["ultrafeedback", dataset],
    )


def create_pipeline(**kwargs) -> Pipeline:
    load = Pipeline(
        [
            node(
                load_ultrafeedback_raw,
                inputs="params:ultrafeedback.source",
                outputs="ultrafeedback_raw",
                name="load_ultrafeedback_raw",
            )
        ],
        tags=["ultrafeedback"],
    )
    return sum((dataset_pipeline(d) for d in ULTRAFEEDBACK_DATASETS), load)
