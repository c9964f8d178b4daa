"""Project hooks."""

from __future__ import annotations

import importlib
import logging
import os
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

    # tryfirst: before kedro-mlflow starts a run, so a run stopped here records none.
    @hook_impl(tryfirst=True)
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

    # tryfirst: before kedro-mlflow starts a run, so a run stopped here records none.
    @hook_impl(tryfirst=True)
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


# The user's MLFLOW_TRACKING_URI, read before MLflow runs: mlflow.set_tracking_uri()
# writes the variable itself, which a later session in the process must not take
# for the user's choice.
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def resolve_tracking_uri(
    conf: dict[str, Any], project_path: Any, user_uri: str | None = None
) -> dict[str, Any]:
    """``mlflow.yml`` with a relative ``sqlite:///`` store made absolute against the project.

    kedro-mlflow anchors relative *paths* at the project root but passes URIs
    through, so ``sqlite:///mlflow.db`` would land in whichever folder kedro
    was started from (``notebooks/`` for a notebook). ``user_uri`` (the
    ``MLFLOW_TRACKING_URI`` the process started with) wins over the file, as
    MLflow users expect.
    """
    from pathlib import Path

    server = dict(conf.get("server") or {})
    uri = server.get("mlflow_tracking_uri")
    if user_uri:
        server["mlflow_tracking_uri"] = None  # kedro-mlflow then reads the variable
    elif (
        isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////")
    ):
        path = Path(project_path) / uri.removeprefix("sqlite:///")
        server["mlflow_tracking_uri"] = f"sqlite:///{path.as_posix()}"
    return {**conf, "server": server}


def saved_location(dataset: Any) -> dict[str, Any] | None:
    """Where a catalog data set wrote its data: ``{"path", "version"}``; ``None`` if not a file."""
    from kedro.io.core import AbstractVersionedDataset

    filepath = getattr(dataset, "_filepath", None)
    if filepath is None:
        return None
    if isinstance(dataset, AbstractVersionedDataset) and getattr(dataset, "_version", None):
        version = dataset.resolve_save_version()
        return {"path": str(dataset._get_versioned_path(version)), "version": version}
    return {"path": str(filepath), "version": None}


class TrackingHook:
    """What a kedro-mlflow run records beside the parameters (conf/base/parameters_tracking.yml).

    - the headline numbers of each metrics table named in ``tracking.headline``,
      as MLflow metrics, when the table is saved;
    - ``artefacts.json``: every data set the run saved, with its path and version.

    It does nothing when no MLflow run is active (kedro-mlflow disabled for the
    pipeline, or not installed), and never imports MLflow itself.
    """

    def __init__(self) -> None:
        self._catalog: Any = None
        self._specs: dict[str, Any] = {}
        self._saved: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _mlflow() -> Any:
        import sys

        mlflow = sys.modules.get("mlflow")  # loaded by kedro-mlflow, if it runs
        return mlflow if mlflow is not None and mlflow.active_run() is not None else None

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        from kedro.config import MissingConfigException

        loader = context.config_loader
        if "mlflow" not in loader.config_patterns:
            return
        try:
            conf = loader["mlflow"]
        except MissingConfigException:
            return
        project = context.project_path
        loader["mlflow"] = resolve_tracking_uri(dict(conf), project, _USER_TRACKING_URI)

    # tryfirst: before kedro-mlflow starts a run, so a run stopped here records none.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from steerable_alignment.reporting.headline import headline_specs

        self._catalog, self._saved = catalog, {}
        try:
            block = catalog.load("params:tracking")
        except DatasetError:
            block = {}
        self._specs = headline_specs((block or {}).get("headline"))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        mlflow = self._mlflow()
        if mlflow is None or self._catalog is None:
            return
        import fnmatch

        import pandas as pd

        from steerable_alignment.reporting.headline import headline_metrics

        location = saved_location(self._catalog.get(dataset_name))
        if location is not None:
            self._saved[dataset_name] = {**location, "node": node.name}
        specs = [s for p, s in self._specs.items() if fnmatch.fnmatchcase(dataset_name, p)]
        if specs and isinstance(data, pd.DataFrame):
            try:
                metrics = headline_metrics(data, dataset_name, specs[0])
            except ValueError as error:  # the table is saved; tracking never fails a run
                logger.warning("No headline metrics for %s: %s", dataset_name, error)
                return
            mlflow.log_metrics(metrics)
            logger.info("Logged %d headline metrics of %s to MLflow", len(metrics), dataset_name)

    def _log_artefacts(self) -> None:
        mlflow = self._mlflow()
        if mlflow is not None and self._saved:
            mlflow.log_dict(dict(sorted(self._saved.items())), "artefacts.json")

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._log_artefacts()  # before kedro-mlflow ends the run

    @hook_impl(tryfirst=True)
    def on_pipeline_error(
        self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any
    ) -> None:
        self._log_artefacts()  # what was saved before the failure
