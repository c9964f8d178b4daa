"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Registered but left out of ``__default__``: ``dpo_all`` repeats ``dpo`` on
#: every data set (HHT too), sized for the ``gpu`` environment.
NOT_IN_DEFAULT: tuple[str, ...] = ("dpo_all",)


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/``; ``__default__`` runs them all.

    ``dpo`` covers the CPU-sized data set (``hh``); ``dpo_all`` every data set
    with DPO variants (``hh`` and ``hht``, for the ``gpu`` environment).

    Returns:
        Pipeline name -> ``Pipeline``.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines
