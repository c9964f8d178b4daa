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
