import json
import pickle

import pytest
import torch
from kedro.io.core import DatasetError, Version

from steerable_alignment.datasets import RewardModelDataset, TensorDictDataset
from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.models.reward_models import build_model


def small_model(model_type="nppl"):
    config = RewardModelConfig.from_params(
        {"type": model_type, "hidden_dim": 8, "latent_dim": 2, "num_heads": 2}
    )
    torch.manual_seed(0)
    return build_model(config)


def test_tensor_dict_round_trip(tmp_path):
    dataset = TensorDictDataset(filepath=str(tmp_path / "f.safetensors"))
    tensors = {"pair_id": torch.arange(4), "features": torch.rand(4, 2, 3)}
    dataset.save(tensors)
    loaded = dataset.load()
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_tensor_dict_keeps_str_entries_in_the_header(tmp_path):
    dataset = TensorDictDataset(filepath=str(tmp_path / "f.safetensors"))
    settings = json.dumps({"model": "m", "max_length": 256})
    dataset.save({"pair_id": torch.arange(2), "embedding": settings})
    loaded = dataset.load()
    assert loaded["embedding"] == settings and torch.equal(loaded["pair_id"], torch.arange(2))
    assert dataset.preview()["embedding"] == settings
    with pytest.raises(DatasetError, match="expected a dict of tensors"):
        dataset.save({"pair_id": torch.arange(2), "n": 3})


def test_features_written_by_the_embedding_entry_point_load_the_same(tmp_path):
    from steerable_alignment.datasets.safetensors_datasets import TEXT_PREFIX
    from steerable_alignment.embedding.shards import TEXT_PREFIX as SHARDS_PREFIX
    from steerable_alignment.embedding.shards import save_tensors

    assert TEXT_PREFIX == SHARDS_PREFIX
    save_tensors(tmp_path / "f.safetensors", {"pair_id": torch.arange(3), "embedding": "{}"})
    loaded = TensorDictDataset(filepath=str(tmp_path / "f.safetensors")).load()
    assert loaded["embedding"] == "{}" and torch.equal(loaded["pair_id"], torch.arange(3))


def test_reward_model_keeps_what_it_was_trained_with(tmp_path):
    dataset = RewardModelDataset(filepath=str(tmp_path / "m.safetensors"))
    model = small_model()
    assert dataset.save(model) is None and dataset.load().trained_with == {}  # none recorded
    model.trained_with = {"max_context": 7, "embedding": {"model": "m", "max_length": 64}}
    dataset.save(model)
    assert dataset.load().trained_with == model.trained_with


@pytest.mark.parametrize("model_type", ["btl", "dpl", "nppl", "nppl_latent"])
def test_reward_model_round_trip_with_config(tmp_path, model_type):
    dataset = RewardModelDataset(filepath=str(tmp_path / "m.safetensors"))
    model = small_model(model_type)
    dataset.save(model)
    loaded = dataset.load()
    assert type(loaded) is type(model) and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # The file is a safetensors header (JSON) + raw bytes: nothing to unpickle.
    raw = (tmp_path / "m.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"]["config"])["type"] == model_type
    # Unpickling fails (how depends on the header length's first bytes: an
    # "unsupported protocol" ValueError when they happen to read as 0x80 N).
    with pytest.raises((pickle.UnpicklingError, ValueError, EOFError)):
        pickle.loads(raw)


def test_versioned_saves_keep_old_versions(tmp_path):
    path = str(tmp_path / "m.safetensors")
    RewardModelDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(
        small_model("btl")
    )
    RewardModelDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(
        small_model("dpl")
    )
    latest = RewardModelDataset(filepath=path, version=Version(None, None)).load()
    assert latest.config.type == "dpl"
    first = RewardModelDataset(
        filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)
    ).load()
    assert first.config.type == "btl"


def test_truncated_or_corrupted_weights_give_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    dataset = RewardModelDataset(filepath=str(path))
    dataset.save(small_model())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupted"):
        dataset.load()
    path.write_bytes(b"\x80\x04garbage that could be a pickle")
    with pytest.raises(DatasetError, match="truncated or corrupted"):
        dataset.load()


def test_weights_not_matching_config(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    config = small_model("btl").config
    save_file(
        {"reward_net.0.weight": torch.zeros(3, 3)},
        str(path),
        metadata={
            "format": "steerable-alignment/reward-model",
            "config": json.dumps(config.to_dict()),
        },
    )
    with pytest.raises(DatasetError, match="do not match their config"):
        RewardModelDataset(filepath=str(path)).load()
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(DatasetError, match="not a steerable-alignment reward model"):
        RewardModelDataset(filepath=str(path)).load()


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.safetensors"
    dataset = TensorDictDataset(filepath=str(path))
    dataset.save({"a": torch.ones(2)})
    with pytest.raises(DatasetError):
        dataset.save({"a": [1.0, 2.0]})  # neither a tensor nor a str
    assert torch.equal(dataset.load()["a"], torch.ones(2))
