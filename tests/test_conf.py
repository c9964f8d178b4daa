"""Every configuration environment loads and validates (base, test, gpu)."""

from pathlib import PurePosixPath

import pytest

from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.pipelines.variants import REWARD_DATASETS
from steerable_alignment.recipes.reward_models import TrainingConfig
from tests.pipelines.helpers import config_loader


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_every_variant_has_valid_parameters(env):
    params = config_loader(env)["parameters"]
    for dataset, spec in REWARD_DATASETS.items():
        block = params["reward_modelling"][dataset]
        assert block["data"]["name"] == dataset
        for variant in spec.variants:
            RewardModelConfig.from_params(block[variant]["model"])
            training = TrainingConfig.from_params(block[variant]["training"])
            if env == "gpu":
                assert training.device == "cuda" and training.dtype == "bfloat16"
        assert dataset in params["evaluation"]


def test_base_defaults_follow_the_reference():
    block = config_loader("base")["parameters"]["reward_modelling"]["synthetic"]
    for variant in REWARD_DATASETS["synthetic"].variants:
        model, training = block[variant]["model"], block[variant]["training"]
        assert model["hidden_dim"] == 256
        assert (training["batch_episodes"], training["num_targets"]) == (64, 20)
        assert (training["min_context"], training["max_context"]) == (0, 10)


def expected_entries() -> dict[str, tuple[type, str, bool]]:
    """Concrete data set names -> (class, file path, versioned), as conf/base/catalog.yml says."""
    from kedro_datasets.pandas import ParquetDataset
    from kedro_datasets.plotly import JSONDataset
    from kedro_datasets.text import TextDataset

    from steerable_alignment.datasets import RewardModelDataset, TensorDictDataset

    expected = {
        "reward_metrics": (ParquetDataset, "data/08_reporting/reward_metrics.parquet", False),
        "reward_summary": (TextDataset, "data/08_reporting/reward_summary.md", False),
    }
    for d, spec in REWARD_DATASETS.items():
        expected[f"{d}.pairs"] = (ParquetDataset, f"data/03_primary/{d}/pairs.parquet", False)
        expected[f"{d}.features"] = (
            TensorDictDataset,
            f"data/04_feature/{d}/features.safetensors",
            False,
        )
        expected[f"{d}.accuracy_chart"] = (
            JSONDataset,
            f"data/08_reporting/{d}_accuracy_by_context.json",
            False,
        )
        for v in spec.variants:
            expected[f"{d}.{v}.reward_model"] = (
                RewardModelDataset,
                f"data/06_models/{d}/{v}/reward_model.safetensors",
                True,
            )
            expected[f"{d}.{v}.training_history"] = (
                ParquetDataset,
                f"data/07_model_output/{d}/{v}/training_history.parquet",
                False,
            )
    return expected


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_pipeline_datasets_resolve_to_their_own_files(env):
    from kedro.framework.project import configure_project
    from kedro.io import AbstractVersionedDataset, DataCatalog

    configure_project("steerable_alignment")
    from steerable_alignment.pipeline_registry import register_pipelines

    catalog = DataCatalog.from_config(config_loader(env)["catalog"])
    used = register_pipelines()["__default__"].datasets()
    for name, (kind, filepath, versioned) in expected_entries().items():
        assert name in used, f"{name} is not a data set of the default pipeline"
        dataset = catalog.get(name)
        assert type(dataset) is kind, (name, type(dataset))
        assert PurePosixPath(dataset._filepath).as_posix() == filepath, name
        is_versioned = (
            isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None
        )
        assert is_versioned == versioned, name


@pytest.mark.parametrize(
    "name",
    [
        "hh.nppl_mixed.reward_modle",  # a typo of a factory's suffix
        "hh.nppl_mixed",
        "reward_metric",
        "hh_accuracy_chart",
        "features",
    ],
)
def test_unknown_names_match_no_catalog_entry(name):
    from kedro.io import DataCatalog

    catalog = DataCatalog.from_config(config_loader("base")["catalog"])
    assert name not in catalog
    assert catalog.get(name) is None
