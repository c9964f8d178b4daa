import copy
import logging
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch
from kedro.pipeline.node import Node
from kedro.runner import SequentialRunner

import steerable_alignment.embedding.core as core
from steerable_alignment.contracts import DataContractError
from steerable_alignment.embedding import EmbeddingConfig
from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.embedding import create_pipeline
from steerable_alignment.pipelines.embedding.nodes import embed_pairs
from steerable_alignment.pipelines.embedding.pipeline import EMBEDDING_DATASETS, EMBEDDING_REUSE
from tests.conftest import PROJECT_ROOT
from tests.embedding.tiny_models import make_pairs, save_tiny_llama
from tests.pipelines.helpers import memory_catalog, project_parameters


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def _params(tmp_path, model):
    params = copy.deepcopy(project_parameters())
    for dataset in EMBEDDING_DATASETS:
        block = params["embedding"][dataset]
        block.update(model=str(model), pooling="last_token", max_length=64)
        block["shard_dir"] = str(tmp_path / dataset / "embedding_shards")
    return params


def test_every_dataset_is_embedded_end_to_end(tiny_llama, tmp_path):
    pairs = {"hh": make_pairs(num_prompts=3, seed=1), "hht": make_pairs(num_prompts=4, seed=2)}
    catalog = memory_catalog(
        _params(tmp_path, tiny_llama),
        keep=("hh.features", "hht.features"),
        **{f"{d}.pairs": p for d, p in pairs.items()},
    )
    SequentialRunner().run(create_pipeline(), catalog)
    for dataset, table in pairs.items():
        features = catalog.load(f"{dataset}.features")
        assert features["features"].shape == (len(table), 2, 32)
        assert features["pair_id"].tolist() == table["pair_id"].tolist()
        assert torch.isfinite(features["features"]).all()
        assert len(list((tmp_path / dataset / "embedding_shards").glob("shard-*"))) == 1


def test_one_definition_namespaced_per_dataset(monkeypatch):
    # Kedro warns about dotted dataset names once per process: re-arm it
    monkeypatch.setattr(Node, "__dotted_dataset_name_warned__", False, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipeline = create_pipeline()
    nodes = {n.name: n for n in pipeline.nodes}
    assert sorted(nodes) == ["hh.embed_pairs", "hht.embed_pairs"]
    for dataset in EMBEDDING_DATASETS:
        node = nodes[f"{dataset}.embed_pairs"]
        reused = EMBEDDING_REUSE.get(dataset)
        expected = [f"{dataset}.pairs", f"params:embedding.{dataset}"]
        if reused:
            expected += [f"{reused}.pairs", f"{reused}.features", f"params:embedding.{reused}"]
        assert node.inputs == expected
        assert node.outputs == [f"{dataset}.features"]
        assert "gpu" in node.tags
    assert EMBEDDING_REUSE == {"hht": "hh"}


def test_shared_texts_are_embedded_once_across_datasets(tiny_llama, tmp_path, monkeypatch):
    hh = make_pairs(num_prompts=3, seed=1)
    extra = make_pairs(num_prompts=1, seed=5)
    extra["pair_id"] += 100
    hht = pd.concat([hh.iloc[2:], extra], ignore_index=True)  # shares all but one pair's texts
    seen = []
    load = core.load_model

    def counting_load(*args, **kwargs):
        model = load(*args, **kwargs)
        forward = model.forward

        def counting(input_ids, attention_mask, **kw):
            seen.append(int(attention_mask.shape[0]))
            return forward(input_ids=input_ids, attention_mask=attention_mask, **kw)

        model.forward = counting
        return model

    monkeypatch.setattr(core, "load_model", counting_load)
    params = _params(tmp_path, tiny_llama)
    catalog = memory_catalog(
        params, keep=("hh.features", "hht.features"), **{"hh.pairs": hh, "hht.pairs": hht}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    assert sum(seen) == 12 + 4  # hh's 3 x 4 texts, then hht's 4 new ones only
    alone = embed_pairs(hht, params["embedding"]["hht"] | {"shard_dir": None})
    features = catalog.load("hht.features")
    assert torch.equal(features["pair_id"], alone["pair_id"])
    torch.testing.assert_close(features["features"], alone["features"], atol=1e-5, rtol=0)


def test_datasets_embedded_with_other_settings_are_not_reused(tiny_llama, tmp_path, caplog):
    params = _params(tmp_path, tiny_llama)["embedding"]
    hh = make_pairs(num_prompts=2, seed=1)
    hh_features = embed_pairs(hh, params["hh"] | {"shard_dir": None})
    # stand-ins that would show if they were copied
    stale = {"pair_id": hh_features["pair_id"], "features": hh_features["features"] * 0}
    other = params["hh"] | {"pooling": "mean"}
    with caplog.at_level(logging.WARNING):
        features = embed_pairs(hh, params["hht"] | {"shard_dir": None}, hh, stale, other)
    assert "not reusing hh.features: the embedding settings differ in ['pooling']" in caplog.text
    torch.testing.assert_close(features["features"], hh_features["features"], atol=1e-5, rtol=0)
    assert features["features"].abs().sum() > 0


def test_building_the_pipeline_imports_no_torch():
    code = (
        "import sys, steerable_alignment.pipelines.embedding as p; p.create_pipeline(); "
        "heavy = [m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


@pytest.mark.parametrize("env", ["base", "gpu", "test"])
def test_every_environment_has_valid_parameters(env):
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env=env,
        env=env,
        merge_strategy={"parameters": "soft"},
    )
    for dataset in EMBEDDING_DATASETS:
        config = EmbeddingConfig.from_params(loader["parameters"]["embedding"][dataset])
        assert config.name == dataset and config.shard_dir.endswith(f"{dataset}/embedding_shards")
        if env == "gpu":
            assert config.model == "meta-llama/Meta-Llama-3-8B"
            assert (config.pooling, config.dtype, config.device) == (
                "last_token",
                "bfloat16",
                "cuda",
            )


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("pooling", "cls", r"embedding\.hh\.pooling"),
        ("max_length", -5, r"embedding\.hh\.max_length"),
        ("model", "/no/such/folder/model", r"embedding\.hh\.model.*/no/such/folder/model"),
    ],
)
def test_bad_parameters_fail_before_loading(tmp_path, tiny_llama, key, value, needle, monkeypatch):
    monkeypatch.setattr(core, "load_tokenizer", lambda *a: pytest.fail("tokenizer loaded"))
    params = _params(tmp_path, tiny_llama)["embedding"]["hh"]
    params[key] = value
    with pytest.raises(ConfigError, match=needle):
        embed_pairs(make_pairs(), params)


def test_a_bad_pairs_table_names_dataset_and_column(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.setattr(core, "load_tokenizer", lambda *a: pytest.fail("tokenizer loaded"))
    params = _params(tmp_path, tiny_llama)["embedding"]["hht"]
    with pytest.raises(DataContractError, match=r"'hht\.pairs'.*'response_a'"):
        embed_pairs(make_pairs().drop(columns="response_a"), params)
