import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import DatasetError

from steerable_alignment.hooks import MissingInputsHook
from steerable_alignment.pipelines.reward_modelling import create_pipeline
from tests.pipelines.helpers import config_loader


def test_missing_inputs_name_the_producing_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing on disk here
    catalog = DataCatalog.from_config(config_loader("base")["catalog"])
    with pytest.raises(DatasetError, match=r"synthetic\.pairs.*--pipeline synthetic_data"):
        MissingInputsHook().before_pipeline_run({}, create_pipeline(), catalog)


def test_present_inputs_pass():
    pipeline = create_pipeline()
    inputs = {name for name in pipeline.inputs() if not name.startswith("params:")}
    assert {"synthetic.pairs", "hh.features"} <= inputs
    catalog = DataCatalog(datasets={name: MemoryDataset(1) for name in inputs})
    MissingInputsHook().before_pipeline_run({}, pipeline, catalog)
