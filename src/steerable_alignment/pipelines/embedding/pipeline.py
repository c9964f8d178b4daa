"""``embedding``: one base pipeline, a namespace per UltraFeedback data set."""

import warnings

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.embedding.nodes import embed_pairs

#: Data sets whose pairs are embedded; each has a block in
#: conf/base/parameters_embedding.yml and reads ``<dataset>.pairs``.
EMBEDDING_DATASETS = ("hh", "hht")

#: Data set -> an earlier one whose embeddings it copies for the texts they
#: share (when their embedding settings agree). HHT's texts are nearly all
#: HH's (6,331 of 6,600 on the offline default), so each is embedded once.
EMBEDDING_REUSE = {"hht": "hh"}


def base_pipeline(reuse: bool = False) -> Pipeline:
    """Embed one pairs table: the template every data set instantiates.

    Args:
        reuse: also read another data set's pairs, features and parameters
            (``reuse_pairs``, ``reuse_features``, ``params:reuse_embedding``)
            and copy the embeddings of the texts it holds.
    """
    inputs = {"pairs": "pairs", "params": "params:embedding"}
    if reuse:
        inputs.update(
            reuse_pairs="reuse_pairs",
            reuse_features="reuse_features",
            reuse_params="params:reuse_embedding",
        )
    return Pipeline(
        [node(embed_pairs, inputs=inputs, outputs="features", name="embed_pairs", tags=["gpu"])]
    )


def dataset_pipeline(dataset: str) -> Pipeline:
    """The base pipeline under the namespace ``<dataset>``."""
    source = EMBEDDING_REUSE.get(dataset)
    inputs = {"pairs": f"{dataset}.pairs"}
    parameters = {"params:embedding": f"params:embedding.{dataset}"}
    if source is not None:
        inputs.update(reuse_pairs=f"{source}.pairs", reuse_features=f"{source}.features")
        parameters["params:reuse_embedding"] = f"params:embedding.{source}"
    with warnings.catch_warnings():
        # Reading another namespace's data sets (``hh.features`` from ``hht``)
        # is deliberate here; Kedro's style warning about dotted names is not.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return Pipeline(
            base_pipeline(reuse=source is not None),
            namespace=dataset,
            inputs=inputs,
            outputs={"features": f"{dataset}.features"},
            parameters=parameters,
            tags=[dataset],
        )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((dataset_pipeline(d) for d in EMBEDDING_DATASETS), Pipeline([]))
