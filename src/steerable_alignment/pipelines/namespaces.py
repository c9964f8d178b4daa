"""Building a data set's pipeline: nodes in its namespace, and one template per variant.

Every multi-variant pipeline (``reward_modelling``, ``dpo``, ``evaluation``)
is built the same way: a few nodes shared by the data set, in the namespace
``<dataset>``, and one template instantiated per variant in the namespace
``<dataset>.<variant>`` (tagged with the variant), whose free inputs and
parameters are mapped to the data set's. These helpers are that pattern,
written once (:func:`per_variant_node` when the template is one node).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kedro.pipeline import Node, Pipeline, node

Mapping_ = Mapping[str, str] | Callable[[str], Mapping[str, str]]


def dataset_node(
    func: Callable[..., Any],
    dataset: str,
    *,
    name: str,
    inputs: Any,
    outputs: Any,
    tags: Iterable[str] | None = None,
) -> Node:
    """A node shared by every variant of ``dataset``: named ``<dataset>.<name>``."""
    return node(func, inputs=inputs, outputs=outputs, name=name, namespace=dataset, tags=tags)


def per_variant(
    dataset: str,
    variants: Iterable[str],
    template: Callable[[str], Pipeline],
    *,
    inputs: Mapping_,
    parameters: Mapping_,
    tags: Iterable[str] = (),
) -> Pipeline:
    """``template(variant)`` for each variant, in the namespace ``<dataset>.<variant>``.

    Args:
        dataset: the data set (first part of every namespace).
        variants: the variants to instantiate.
        template: variant -> the pipeline to instantiate (usually the same for all).
        inputs: the template's free inputs -> catalog entries shared by the
            variants; or variant -> that mapping, for inputs only some have.
        parameters: the template's ``params:`` names -> the data set's; a
            ``{variant}`` in a value becomes the variant (or variant -> mapping).
        tags: added to every node, beside the variant's name.
    """

    def resolve(mapping: Mapping_, variant: str) -> dict[str, str]:
        values = mapping(variant) if callable(mapping) else mapping
        return {k: v.replace("{variant}", variant) for k, v in values.items()}

    return sum(
        (
            Pipeline(
                template(variant),
                namespace=f"{dataset}.{variant}",
                inputs=resolve(inputs, variant),
                parameters=resolve(parameters, variant),
                tags=[*tags, variant],
            )
            for variant in variants
        ),
        Pipeline([]),
    )


def per_variant_node(
    dataset: str,
    variants: Iterable[str],
    func: Callable[..., Any],
    *,
    name: str,
    inputs: Mapping[str, str],
    outputs: str,
    tags: Iterable[str] = (),
) -> Pipeline:
    """``func`` once per variant, as :func:`per_variant` would build a one-node template.

    Each node is ``<dataset>.<variant>.<name>`` in the namespace
    ``<dataset>.<variant>``, tagged with the variant, writing
    ``<dataset>.<variant>.<outputs>``.

    Args:
        inputs: ``func``'s arguments -> catalog entries; ``{variant}`` in an
            entry becomes ``<dataset>.<variant>`` (the variant's own entry).
        tags: added to every node, beside the variant's name.
    """
    return Pipeline(
        [
            node(
                func,
                inputs={
                    k: v.replace("{variant}", f"{dataset}.{variant}") for k, v in inputs.items()
                },
                outputs=f"{dataset}.{variant}.{outputs}",
                name=name,
                namespace=f"{dataset}.{variant}",
                tags=[*tags, variant],
            )
            for variant in variants
        ]
    )


def concat_across(datasets: Iterable[str], tables: Mapping[str, Callable[..., Any]]) -> list[Node]:
    """For each ``table -> func``: ``func(<dataset>_<table> for every data set)`` as ``<table>``.

    The node is named ``concat_<table>`` (e.g. ``concat_reward_metrics``).
    """
    datasets = list(datasets)
    return [
        node(func, inputs=[f"{d}_{table}" for d in datasets], outputs=table, name=f"concat_{table}")
        for table, func in tables.items()
    ]
