import re
from typing import Any

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import DatasetError

from steerable_alignment.hooks import MissingInputsHook
from steerable_alignment.pipelines.reward_modelling import create_pipeline
from steerable_alignment.pipelines.variants import REWARD_DATASETS
from tests.pipelines.helpers import config_loader

# "  - <data set> (made by `kedro run --pipeline <pipeline>`)", one line per missing input.
MISSING_LINE = re.compile(r"^  - (\S+) \(made by `kedro run --pipeline (\w+)`\)$", re.MULTILINE)


def producers_named(message: str) -> dict[str, str]:
    """Missing data set -> the pipeline the hook's message says makes it."""
    return dict(MISSING_LINE.findall(message))


class CheckedMemoryDataset(MemoryDataset):
    """A MemoryDataset that records in ``checked`` that its existence was asked for."""

    def __init__(self, name: str, checked: set[str], *data: Any) -> None:
        super().__init__(*data)  # no data: the data set does not exist
        self.name, self.checked = name, checked

    def _exists(self) -> bool:
        self.checked.add(self.name)
        return super()._exists()


def reward_inputs() -> set[str]:
    inputs = {name for name in create_pipeline().inputs() if not name.startswith("params:")}
    assert {"synthetic.pairs", "hh.features"} <= inputs
    return inputs


def test_missing_inputs_name_the_producing_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing on disk here
    catalog = DataCatalog.from_config(config_loader("base")["catalog"])
    with pytest.raises(DatasetError, match="do not exist yet") as raised:
        MissingInputsHook().before_pipeline_run({}, create_pipeline(), catalog)
    expected = {}
    for dataset in REWARD_DATASETS:
        synthetic = dataset == "synthetic"
        expected[f"{dataset}.pairs"] = "synthetic_data" if synthetic else "ultrafeedback"
        expected[f"{dataset}.features"] = "synthetic_data" if synthetic else "embedding"
    assert producers_named(str(raised.value)) == expected


@pytest.mark.parametrize("absent", ["synthetic.pairs", "hh.features"])
def test_one_absent_input_stops_the_run_and_only_it_is_named(absent):
    checked: set[str] = set()
    catalog = DataCatalog(
        datasets={
            name: CheckedMemoryDataset(name, checked, *([] if name == absent else [1]))
            for name in reward_inputs()
        }
    )
    with pytest.raises(DatasetError) as raised:
        MissingInputsHook().before_pipeline_run({}, create_pipeline(), catalog)
    producer = "synthetic_data" if absent.startswith("synthetic.") else "embedding"
    assert producers_named(str(raised.value)) == {absent: producer}


def test_present_inputs_let_the_run_through():
    inputs = reward_inputs()
    checked: set[str] = set()
    # No `params:` entries: the hook must not ask for parameters either.
    catalog = DataCatalog(
        datasets={name: CheckedMemoryDataset(name, checked, 1) for name in inputs}
    )
    assert MissingInputsHook().before_pipeline_run({}, create_pipeline(), catalog) is None
    assert checked == inputs  # it did look at every input


def test_a_session_run_stops_before_any_node(tmp_path, monkeypatch):
    """Through `kedro run --pipeline reward_modelling` on a fresh clone: the registered hook."""
    import shutil

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tests.conftest import PROJECT_ROOT

    shutil.copytree(
        PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local")
    )
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is installed
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    monkeypatch.chdir(tmp_path)
    bootstrap_project(tmp_path)
    with KedroSession.create(project_path=tmp_path, env="test") as session:
        with pytest.raises(DatasetError) as raised:
            session.run(pipeline_names=["reward_modelling"])
    message = str(raised.value)  # the hook's message, not the runner's own missing-input error
    assert producers_named(message).get("hh.pairs") == "ultrafeedback", message
    assert not (tmp_path / "data").exists()  # no node ran, nothing was written


def test_a_producer_left_out_by_the_namespace_filter_is_named_as_such(tmp_path, monkeypatch):
    # `kedro run --pipeline ultrafeedback --namespaces hh`: the hh nodes read what an
    # un-namespaced node of the same pipeline makes; re-running the same command cannot help.
    from steerable_alignment.pipelines.ultrafeedback import create_pipeline as ultrafeedback

    monkeypatch.chdir(tmp_path)  # nothing on disk here
    catalog = DataCatalog.from_config(config_loader("base")["catalog"])
    pipeline = ultrafeedback().only_nodes_with_namespaces(["hh"])
    run_params = {"pipeline_names": ["ultrafeedback"], "namespaces": ["hh"]}
    with pytest.raises(DatasetError, match="do not exist yet") as raised:
        MissingInputsHook().before_pipeline_run(run_params, pipeline, catalog)
    message = str(raised.value)
    assert "which this run's namespace filter (--namespaces hh) left out" in message
    assert "made by `kedro run --pipeline ultrafeedback`" not in message


def test_cuda_parameters_are_found_in_nested_blocks_but_not_in_templates():
    from steerable_alignment.hooks import cuda_parameters

    params = {
        "_template": {"device": "cuda"},
        "hh": {"reference": {"device": "cuda:1"}, "evaluation": {"device": "auto"}},
        "device": "cpu",
    }
    assert cuda_parameters(params, "dpo") == ["dpo.hh.reference.device"]


def test_the_gpu_environment_without_cuda_stops_before_anything_loads(tmp_path, monkeypatch):
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tests.project_copy import copy_project

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = copy_project(tmp_path)
    monkeypatch.chdir(root)
    bootstrap_project(root)
    with KedroSession.create(project_path=root, env="gpu") as session:
        with pytest.raises(RuntimeError) as raised:
            session.run(pipeline_names=["embedding"])  # its inputs are missing too
    message = str(raised.value)
    assert "ask for CUDA but this machine has none" in message
    assert "embedding.hh.device" in message and "--params embedding.hh.device=cpu" in message
    assert not any((root / "data").rglob("*.safetensors"))  # nothing was made
    from mlflow.tracking import MlflowClient

    # the check runs before kedro-mlflow starts a run: the store has none, none is left open
    client = MlflowClient(tracking_uri=f"sqlite:///{root.as_posix()}/mlflow.db")
    experiment = client.get_experiment_by_name("steerable_alignment")
    assert experiment is not None and client.search_runs([experiment.experiment_id]) == []
    import mlflow

    assert mlflow.active_run() is None


def test_a_relative_sqlite_store_is_anchored_at_the_project(tmp_path):
    from steerable_alignment.hooks import resolve_tracking_uri

    conf = {"server": {"mlflow_tracking_uri": "sqlite:///mlflow.db"}, "tracking": {"x": 1}}
    resolved = resolve_tracking_uri(conf, tmp_path)
    assert resolved["server"]["mlflow_tracking_uri"] == f"sqlite:///{tmp_path.as_posix()}/mlflow.db"
    assert resolved["tracking"] == {"x": 1}
    assert conf["server"]["mlflow_tracking_uri"] == "sqlite:///mlflow.db"  # not changed in place
    for kept in ("sqlite:////srv/mlflow.db", "http://tracking:5000", None):
        conf = {"server": {"mlflow_tracking_uri": kept}}
        assert resolve_tracking_uri(conf, tmp_path)["server"]["mlflow_tracking_uri"] == kept
    conf = {"server": {"mlflow_tracking_uri": "sqlite:///mlflow.db"}}
    user = "http://tracking:5000"  # the MLFLOW_TRACKING_URI the process started with
    assert resolve_tracking_uri(conf, tmp_path, user)["server"]["mlflow_tracking_uri"] is None


def test_saved_location_of_plain_and_versioned_datasets(tmp_path):
    import torch
    from kedro.io import Version
    from kedro_datasets.pandas import ParquetDataset

    from steerable_alignment.datasets import TensorDictDataset
    from steerable_alignment.hooks import saved_location

    plain = ParquetDataset(filepath=str(tmp_path / "t.parquet"))
    assert saved_location(plain) == {"path": str(tmp_path / "t.parquet"), "version": None}
    versioned = TensorDictDataset(
        filepath=str(tmp_path / "w.safetensors"), version=Version(None, "2026-12-02T10.00.00.000Z")
    )
    versioned.save({"a": torch.zeros(2)})
    location = saved_location(versioned)
    assert location["version"] == "2026-12-02T10.00.00.000Z"
    path = tmp_path / "w.safetensors" / location["version"] / "w.safetensors"
    assert location["path"] == str(path) and path.is_file()
    assert saved_location(MemoryDataset()) is None
