"""Project hooks."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io.core import DatasetError

logger = logging.getLogger(__name__)


def _all_pipelines() -> dict[str, Any]:
    """Every pipeline package's ``create_pipeline()`` (a `--pipeline` run loads only its own)."""
    import steerable_alignment.pipelines as package

    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found[info.name] = module.create_pipeline()
    return found


def missing_datasets(catalog: Any, names: Any) -> list[str]:
    """The catalog entries among ``names`` that have no data yet (in the given order)."""
    missing = []
    for name in names:
        try:
            exists = catalog.exists(name)
        except DatasetError:
            exists = False
        if not exists:
            missing.append(name)
    return missing


class MissingInputsHook:
    """Fail before any node runs when a pipeline's inputs are not on disk.

    ``kedro run --pipeline reward_modelling`` on a fresh clone would otherwise
    fail inside the first node; this names each missing data set and the
    registered pipeline that produces it.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        names = sorted(pipeline.inputs())
        missing = missing_datasets(
            catalog, [n for n in names if not n.startswith("params:") and n != "parameters"]
        )
        if not missing:
            return
        pipelines = _all_pipelines()
        lines = []
        for name in missing:
            producers = sorted(
                key for key, registered in pipelines.items() if name in registered.all_outputs()
            )
            hint = f"made by `kedro run --pipeline {producers[0]}`" if producers else "not produced"
            lines.append(f"  - {name} ({hint})")
        raise DatasetError(
            "This run needs data sets that do not exist yet:\n"
            + "\n".join(lines)
            + "\nRun the producing pipeline(s) first, or `kedro run` for everything."
        )
