"""Helpers for pipeline tests: the project's test parameters in an in-memory catalog."""

from __future__ import annotations

from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset

from tests.conftest import PROJECT_ROOT


def config_loader(env: str) -> OmegaConfigLoader:
    """The project's configuration as `kedro run --env <env>` sees it."""
    return OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env=env,
        env=env,
        merge_strategy={"parameters": "soft", "catalog": "soft"},
    )


def project_parameters() -> dict[str, Any]:
    """conf/base parameters with conf/test merged over them (as `--env test`)."""
    return config_loader("test")["parameters"]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    out[prefix] = value
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)


class KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so tests can read it afterwards."""

    def _release(self) -> None:
        pass


def memory_catalog(params: dict[str, Any], keep: tuple[str, ...] = (), **data: Any) -> DataCatalog:
    """A catalog holding every ``params:`` path, the given data sets and ``keep`` outputs."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        _flatten(f"params:{key}", value, flat)
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in flat.items()}
    datasets.update(
        {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    )
    datasets.update({name: KeptMemoryDataset(copy_mode="assign") for name in keep})
    return DataCatalog(datasets=datasets)
