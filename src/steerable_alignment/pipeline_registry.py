"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Registered but left out of ``__default__``: the DPO pipeline's CPU
#: configuration is not measured yet, and the default ``kedro run`` must stay
#: within its time budget. Run it with ``kedro run --pipeline dpo`` (docs/dpo.md).
NOT_IN_DEFAULT = ("dpo",)


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/``; ``__default__`` runs them all but ``dpo``.

    ``dpo`` covers the CPU-sized data set (``hh``); ``dpo_all`` every data set
    with DPO variants (``hh`` and ``hht``, for the ``gpu`` environment).

    Returns:
        Pipeline name -> ``Pipeline``.
    """
    from steerable_alignment.pipelines.dpo.pipeline import DPO_DATASETS
    from steerable_alignment.pipelines.dpo.pipeline import create_pipeline as create_dpo

    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    pipelines["dpo_all"] = create_dpo(tuple(DPO_DATASETS))
    return pipelines
