import copy

import pytest
from kedro.runner import SequentialRunner

from steerable_alignment.contracts import DataContractError
from steerable_alignment.models.config import ConfigError
from steerable_alignment.models.reward_models import PreferenceModel
from steerable_alignment.pipelines.reward_modelling import create_pipeline
from steerable_alignment.pipelines.reward_modelling.nodes import train_reward_model
from steerable_alignment.pipelines.variants import REWARD_DATASETS
from tests.pipelines.helpers import memory_catalog, project_parameters


def test_every_variant_trains_end_to_end(tiny_synthetic):
    pairs, features = tiny_synthetic
    variants = REWARD_DATASETS["synthetic"].variants
    catalog = memory_catalog(
        project_parameters(),
        keep=tuple(
            f"synthetic.{v}.{o}" for v in variants for o in ("reward_model", "training_history")
        ),
        **{"synthetic.pairs": pairs, "synthetic.features": features},
    )
    pipeline = create_pipeline().only_nodes_with_namespaces(["synthetic"])
    SequentialRunner().run(pipeline, catalog)
    for variant in REWARD_DATASETS["synthetic"].variants:
        model = catalog.load(f"synthetic.{variant}.reward_model")
        history = catalog.load(f"synthetic.{variant}.training_history")
        assert isinstance(model, PreferenceModel)
        assert model.config.type == variant
        assert history["best"].sum() == 1 and history["step"].iloc[-1] == 20


def test_namespaces_share_one_definition():
    pipeline = create_pipeline()
    names = sorted(n.name for n in pipeline.nodes)
    assert names == sorted(
        f"{dataset}.{v}.train_reward_model"
        for dataset, spec in REWARD_DATASETS.items()
        for v in spec.variants
    )
    assert {"synthetic.nppl", "hh.nppl_mixed", "hht.btl_truthfulness"} <= {
        n.namespace for n in pipeline.nodes
    }
    assert all("gpu" in n.tags for n in pipeline.nodes)


def _variant(**changes):
    variant = copy.deepcopy(project_parameters()["reward_modelling"]["synthetic"]["nppl"])
    for path, value in changes.items():
        section, key = path.split("__")
        variant[section][key] = value
    return variant


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"training__max_context": 20}, r"training\.max_context"),
        ({"model__type": "gpt"}, r"model\.type"),
        ({"model__hidden_dim": 0}, r"model\.hidden_dim"),
        ({"training__objectives": ["user_2"]}, r"training\.objectives.*user_0"),
    ],
)
def test_bad_parameters_fail_before_training(tiny_synthetic, changes, needle, monkeypatch):
    import steerable_alignment.recipes.reward_models as loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("training started"))
    pairs, features = tiny_synthetic
    data = project_parameters()["reward_modelling"]["synthetic"]["data"]
    with pytest.raises(ConfigError, match=needle):
        train_reward_model(pairs, features, data, _variant(**changes))


def test_bad_data_fails_before_training(tiny_synthetic):
    pairs, features = tiny_synthetic
    data = project_parameters()["reward_modelling"]["synthetic"]["data"]
    with pytest.raises(DataContractError, match=r"synthetic\.pairs.*choice_user_0"):
        train_reward_model(pairs.drop(columns="choice_user_0"), features, data, _variant())
    with pytest.raises(DataContractError, match=r"synthetic\.features"):
        train_reward_model(pairs.iloc[:-3], features, data, _variant())


def test_a_trained_model_records_its_context_sizes_and_the_features_embedding(tiny_synthetic):
    import json

    import torch

    from steerable_alignment.pipelines.evaluation.nodes import predict_reward_model

    pairs, features = tiny_synthetic
    settings = {"model": "minilm", "max_length": 256, "pooling": "mean"}
    features = {**features, "embedding": json.dumps(settings)}
    data = project_parameters()["reward_modelling"]["synthetic"]["data"]
    variant = _variant(training__max_steps=2, training__eval_every=1)
    model, _ = train_reward_model(pairs, features, data, variant)
    assert model.trained_with == {
        "min_context": variant["training"]["min_context"],
        "max_context": variant["training"]["max_context"],
        "embedding": settings,
    }
    # Scored on features embedded otherwise: refused before any prediction, naming the setting.
    other = {**features, "embedding": json.dumps({**settings, "max_length": 512})}
    episodes = {
        "rows": torch.zeros(2, 30, dtype=torch.long),
        "objective": torch.zeros(2, dtype=torch.long),
        "max_context": torch.tensor(10),
    }
    evaluation = project_parameters()["evaluation"]["synthetic"]
    with pytest.raises(DataContractError, match=r"max_length: 256 vs 512"):
        predict_reward_model(model, pairs, other, episodes, data, evaluation)
