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


def cuda_parameters(params: Any, prefix: str = "") -> list[str]:
    """The dotted paths of every ``device`` parameter under ``params`` that asks for CUDA."""
    found = []
    if isinstance(params, dict):
        for key, value in params.items():
            if str(key).startswith("_"):  # YAML templates: no node reads them
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "device" and isinstance(value, str) and value.startswith("cuda"):
                found.append(path)
            else:
                found.extend(cuda_parameters(value, path))
    return found


class CudaAvailableHook:
    """Stop before any node runs (and any model loads) when parameters ask for a missing CUDA.

    ``kedro run --env gpu`` on a machine without a GPU would otherwise fail
    deep inside torch, after the data were read and a model was loaded.
    Only the parameters the run's nodes read are checked.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        names = sorted(
            n.removeprefix("params:") for n in pipeline.inputs() if n.startswith("params:")
        )
        asked = []
        for name in names:
            try:
                value = catalog.load(f"params:{name}")
            except DatasetError:
                continue
            if name.endswith(".device") or name == "device":
                asked += [name] if isinstance(value, str) and value.startswith("cuda") else []
            else:
                asked += cuda_parameters(value, name)
        if not asked:
            return
        import torch

        if torch.cuda.is_available():
            return
        env = run_params.get("env") or "local"
        raise RuntimeError(
            f"The parameters of this run (environment '{env}') ask for CUDA but this machine "
            f"has none (torch.cuda.is_available() is False): {', '.join(sorted(set(asked)))}. "
            "Run on a GPU machine, or override them, e.g. `kedro run --env "
            f"{env} --params {sorted(set(asked))[0]}=cpu`; nothing was loaded."
        )


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
        requested = set(run_params.get("pipeline_names") or ["__default__"])
        if "__default__" in requested:
            requested |= set(pipelines)
        namespaces = list(run_params.get("namespaces") or [])
        lines = []
        for name in missing:
            producers = sorted(
                key for key, registered in pipelines.items() if name in registered.all_outputs()
            )
            lines.append(
                f"  - {name} ({_producer_hint(name, producers, requested, namespaces, pipelines)})"
            )
        raise DatasetError(
            "This run needs data sets that do not exist yet:\n"
            + "\n".join(lines)
            + "\nRun the producing pipeline(s) first, or `kedro run` for everything."
        )


def _producer_hint(
    name: str,
    producers: list[str],
    requested: set[str],
    namespaces: list[str],
    pipelines: dict[str, Any],
) -> str:
    """Which command makes ``name``; or that this run's namespace filter left its producer out."""
    if not producers:
        return "not produced"
    inside = [p for p in producers if p in requested]
    if inside and namespaces:
        pipeline = pipelines[inside[0]]
        node = next(n for n in pipeline.nodes if name in n.outputs)
        left_out = (
            f"made by node '{node.name}' of pipeline '{inside[0]}', which this run's namespace "
            f"filter (--namespaces {','.join(namespaces)}) left out"
        )
        if node.namespace:
            wider = ",".join([*namespaces, node.namespace])
            return f"{left_out}: add its namespace, `--namespaces {wider}`"
        return (
            f"{left_out} (it is in no namespace): run `kedro run --pipeline {inside[0]}` once "
            "without --namespaces first"
        )
    return f"made by `kedro run --pipeline {producers[0]}`"
