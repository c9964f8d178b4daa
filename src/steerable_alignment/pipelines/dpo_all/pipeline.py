"""``dpo_all``: the ``dpo`` pipeline over every data set of ``DPO_DATASETS``.

A package of its own because Kedro loads a requested pipeline
(``kedro run --pipeline dpo_all``) by importing ``pipelines/<name>/``. Left
out of ``__default__`` (``pipeline_registry.NOT_IN_DEFAULT``): the default
run trains the CPU-sized ``hh`` policies only.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from steerable_alignment.pipelines.dpo.pipeline import create_pipeline as create_dpo
from steerable_alignment.pipelines.variants import DPO_DATASETS


def create_pipeline(**kwargs) -> Pipeline:
    """Every DPO data set's policies, scored together."""
    return create_dpo(tuple(DPO_DATASETS))
