"""HFPretrainedDataset: save_pretrained folders of a tiny Qwen2 and its ChatML tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from kedro.io import DataCatalog
from kedro.io.core import DatasetError, Version

from steerable_alignment.datasets import HFPretrainedDataset
from steerable_alignment.policy import PretrainedPolicy

MESSAGES = [{"role": "user", "content": "How do I boil pasta?"}]


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    batch = tokenizer(ids, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


@dataclass
class _Policy:
    model: Any
    tokenizer: Any


def test_save_then_load_reproduces_model_and_tokenizer(tmp_path, model, tokenizer):
    dataset = HFPretrainedDataset(filepath=str(tmp_path / "policy"))
    assert not dataset.exists()
    dataset.save((model, tokenizer))
    assert dataset.exists()
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left

    loaded = dataset.load()
    assert isinstance(loaded, PretrainedPolicy)
    new_model, new_tokenizer = loaded
    assert not new_model.training
    assert new_model.dtype == torch.float32
    assert new_tokenizer.chat_template == tokenizer.chat_template
    assert new_tokenizer.pad_token_id == tokenizer.pad_token_id
    assert new_tokenizer.eos_token_id == tokenizer.eos_token_id
    torch.testing.assert_close(_logits(new_model, new_tokenizer), _logits(model, tokenizer))


def test_save_accepts_a_dataclass_and_replaces_an_existing_folder(tmp_path, model, tokenizer):
    dataset = HFPretrainedDataset(filepath=str(tmp_path / "policy"))
    dataset.save(_Policy(model, tokenizer))
    (tmp_path / "policy" / "stale.txt").write_text("from an older save")
    dataset.save(PretrainedPolicy(model, tokenizer))
    assert not (tmp_path / "policy" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_save_args_dtype_stores_bf16_without_touching_the_model(tmp_path, model, tokenizer):
    dataset = HFPretrainedDataset(
        filepath=str(tmp_path / "policy"),
        save_args={"dtype": "bfloat16"},
        load_args={"dtype": "auto"},
    )
    dataset.save((model, tokenizer))
    assert model.dtype == torch.float32
    assert dataset.load().model.dtype == torch.bfloat16
    as_fp32 = HFPretrainedDataset(filepath=str(tmp_path / "policy")).load().model
    assert as_fp32.dtype == torch.float32
    weight = model.model.embed_tokens.weight
    torch.testing.assert_close(
        as_fp32.model.embed_tokens.weight, weight.to(torch.bfloat16).to(torch.float32)
    )


def test_a_failed_save_leaves_the_previous_folder_intact(tmp_path, model, tokenizer):
    class _BrokenTokenizer:
        def save_pretrained(self, folder):
            raise RuntimeError("disk full")

    dataset = HFPretrainedDataset(filepath=str(tmp_path / "policy"))
    dataset.save((model, tokenizer))
    before = sorted(p.name for p in (tmp_path / "policy").iterdir())
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save((model, _BrokenTokenizer()))
    assert sorted(p.name for p in (tmp_path / "policy").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    assert dataset.load().tokenizer.chat_template == tokenizer.chat_template


def test_bad_arguments_and_objects_fail_with_the_filepath(tmp_path, model, tokenizer):
    path = str(tmp_path / "policy")
    with pytest.raises(DatasetError, match="trust_remote_code must be false"):
        HFPretrainedDataset(filepath=path, load_args={"trust_remote_code": True})
    with pytest.raises(DatasetError, match="load_args.dtype"):
        HFPretrainedDataset(filepath=path, load_args={"dtype": "float64"})
    with pytest.raises(DatasetError, match="save_args.dtype"):
        HFPretrainedDataset(filepath=path, save_args={"dtype": "int8"})
    with pytest.raises(DatasetError, match="unknown save_args"):
        HFPretrainedDataset(filepath=path, save_args={"max_shard_size": "1GB"})
    dataset = HFPretrainedDataset(filepath=path)
    with pytest.raises(DatasetError, match="expected a \\(model, tokenizer\\) pair"):
        dataset.save(model)
    with pytest.raises(DatasetError, match="not a save_pretrained directory|No such"):
        dataset.load()
    Path(path).mkdir()
    with pytest.raises(DatasetError, match="no config.json"):
        dataset.load()


def test_describe_and_versioning(tmp_path, model, tokenizer):
    dataset = HFPretrainedDataset(
        filepath=str(tmp_path / "policy"), version=Version(None, None), save_args={}
    )
    described = dataset._describe()
    assert described["filepath"] == str(tmp_path / "policy")
    assert described["load_args"] == {} and described["save_args"] == {}
    dataset.save((model, tokenizer))
    (version_dir,) = (tmp_path / "policy").iterdir()
    assert (version_dir / "policy" / "config.json").is_file()
    assert dataset.exists()
    torch.testing.assert_close(_logits(*dataset.load()), _logits(model, tokenizer))


def test_catalog_entry_by_type_name(tmp_path, model, tokenizer):
    catalog = DataCatalog.from_config(
        {
            "base_policy": {
                "type": "steerable_alignment.datasets.HFPretrainedDataset",
                "filepath": str(tmp_path / "base_policy"),
                "load_args": {"dtype": "float32"},
            }
        }
    )
    catalog.save("base_policy", (model, tokenizer))
    loaded_model, loaded_tokenizer = catalog.load("base_policy")
    torch.testing.assert_close(_logits(loaded_model, loaded_tokenizer), _logits(model, tokenizer))
