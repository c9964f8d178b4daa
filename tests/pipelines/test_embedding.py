import copy
import subprocess
import sys
import warnings

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
from steerable_alignment.pipelines.embedding.pipeline import EMBEDDING_DATASETS
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
        assert node.inputs == [f"{dataset}.pairs", f"params:embedding.{dataset}"]
        assert node.outputs == [f"{dataset}.features"]
        assert "gpu" in node.tags


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
