"""Every configuration environment loads and validates (base, test, gpu)."""

import pytest

from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.pipelines.variants import REWARD_DATASETS
from steerable_alignment.training.loop import TrainingConfig
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


def test_every_pipeline_dataset_resolves_in_the_catalog():
    from kedro.framework.project import configure_project
    from kedro.io import DataCatalog

    configure_project("steerable_alignment")
    from steerable_alignment.pipeline_registry import register_pipelines

    catalog = DataCatalog.from_config(config_loader("base")["catalog"])
    pipeline = register_pipelines()["__default__"]
    persisted = {"reward_metrics", "reward_summary", "synthetic.accuracy_chart"}
    for name in pipeline.datasets():
        if name.startswith("params:"):
            continue
        if name in persisted or name.endswith((".pairs", ".features", ".reward_model")):
            assert name in catalog, name
