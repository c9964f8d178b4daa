"""Cached states of the frozen lower blocks (policy/prefix.py) on tiny 3-block models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import steerable_alignment.policy.prefix as prefix
from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy import PolicyConfig, PolicyModel
from steerable_alignment.policy.blocks import skip_lower_blocks
from steerable_alignment.policy.logps import causal_lm_logps
from steerable_alignment.policy.pairs import SequenceBatch
from steerable_alignment.policy.prefix import check_prefix_states, compute_prefix_states
from tests.models.tiny_causal_lm import encode_chats, tiny_model, tiny_tokenizer

PROMPTS = ["how do i cook rice", "why a cat sleeps all day", "write short poem about river"]
RESPONSES = ["boil water add salt wait ten minutes", "it likes warm", "the river is slow"]
BLOCKS = 3


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tokenizer):
    return encode_chats(tokenizer, PROMPTS, RESPONSES)  # right-padded, 3 sequences


def _model(tokenizer, model_type="qwen2", seed=0):
    return tiny_model(tokenizer, seed, model_type, num_hidden_layers=BLOCKS)


def _left_padded(batch: SequenceBatch, pad_id: int) -> SequenceBatch:
    """The same sequences left-padded (positions come from the mask)."""
    lengths = batch.attention_mask.sum(1)
    width = batch.input_ids.shape[1]
    ids = torch.full_like(batch.input_ids, pad_id)
    mask = torch.zeros_like(batch.attention_mask)
    for i, n in enumerate(lengths.tolist()):
        ids[i, width - n :] = batch.input_ids[i, :n]
        mask[i, width - n :] = 1
    return SequenceBatch(ids, mask, batch.response_start + width - lengths, batch.response_len)


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
@pytest.mark.parametrize("cut", [1, 2])
@pytest.mark.parametrize("side", ["right", "left"])
def test_starting_from_cached_states_gives_the_full_forward_pass(
    tokenizer, batch, model_type, cut, side
):
    model = _model(tokenizer, model_type)
    if side == "left":
        batch = _left_padded(batch, tokenizer.pad_token_id)
    full = causal_lm_logps(model, batch)  # (S,)
    states = compute_prefix_states(model, batch, cut)  # (S, L, H)
    assert states.shape == (*batch.input_ids.shape, model.config.hidden_size)
    cached = dataclasses.replace(batch, prefix_states=states, prefix_blocks=cut)
    assert torch.allclose(causal_lm_logps(model, cached), full, atol=1e-5)
    # the blocks are back in place afterwards
    assert all(type(b).__name__.endswith("DecoderLayer") for b in model.model.layers)
    assert check_prefix_states(model, batch, cut) < 1e-5


def test_only_the_lower_blocks_run_when_states_are_computed(tokenizer, batch):
    model = _model(tokenizer)
    ran = []
    hooks = [
        block.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
        for k, block in enumerate(model.model.layers)
    ]
    compute_prefix_states(model, batch, 2)
    assert ran == [0, 1]
    states = compute_prefix_states(model, batch, 2)
    ran.clear()
    with skip_lower_blocks(model, 2, states):
        causal_lm_logps(model, batch)
    assert ran == [2]  # the stand-ins do not fire the real blocks' hooks
    for hook in hooks:
        hook.remove()


def test_a_model_that_cannot_restart_from_states_is_refused(tokenizer, batch, monkeypatch):
    model = _model(tokenizer)
    real = prefix.compute_prefix_states
    monkeypatch.setattr(prefix, "compute_prefix_states", lambda m, s, b: real(m, s, b) * 1.5 + 0.1)
    with pytest.raises(ConfigError, match=r"cached block-1 states differ .*'all'"):
        check_prefix_states(model, batch, 1)


def test_states_of_the_wrong_shape_are_an_error(tokenizer, batch):
    model = _model(tokenizer)
    states = compute_prefix_states(model, batch, 1)
    with pytest.raises(ValueError, match="do not match input_ids"):
        dataclasses.replace(batch, prefix_states=states[:, :-1], prefix_blocks=1)
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(batch, prefix_states=states)
    with pytest.raises(ValueError, match=r"blocks must be in \[1, 2\]"):
        compute_prefix_states(model, batch, BLOCKS)


def test_batches_with_states_select_and_join(tokenizer, batch):
    model = _model(tokenizer)
    cut = 1
    full = causal_lm_logps(model, batch)
    cached = dataclasses.replace(
        batch, prefix_states=compute_prefix_states(model, batch, cut), prefix_blocks=cut
    )
    short, long = cached.select([1]), cached.select([0, 2])
    short = SequenceBatch(  # trimmed to its own length, as pair_sequences does
        short.input_ids[:, : int(short.attention_mask.sum())],
        short.attention_mask[:, : int(short.attention_mask.sum())],
        short.response_start,
        short.response_len,
        short.prefix_states[:, : int(short.attention_mask.sum())],
        cut,
    )
    joined = SequenceBatch.cat([short, long], pad_token_id=tokenizer.pad_token_id)
    assert joined.prefix_states.shape[:2] == joined.input_ids.shape
    assert torch.allclose(causal_lm_logps(model, joined), full[[1, 0, 2]], atol=1e-5)
    with pytest.raises(ValueError, match="different prefix_blocks"):
        SequenceBatch.cat([short, batch.select([0])], pad_token_id=0)


def _policy(tokenizer, **overrides):
    values = {
        "type": "np_dpo",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "layers_to_transform": "top_1",
        "film_layers": "top_1",
        "film_hidden_dim": 8,
        "latent_dim": 4,
        "encoder_hidden_dim": 16,
        "encoder_num_heads": 2,
        "embedding_dim": 6,
    }
    torch.manual_seed(0)
    policy = PolicyModel(PolicyConfig.from_params({**values, **overrides}), _model(tokenizer))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move LoRA B and FiLM off their identity start
        for param in policy.trainable_parameters().values():
            param.add_(torch.randn(param.shape, generator=g) * 0.2)
    return policy


def test_policy_log_probs_and_gradients_are_the_same_from_cached_states(tokenizer, batch):
    policy = _policy(tokenizer)
    z = torch.randn(len(batch), 4, generator=torch.Generator().manual_seed(2))
    cut = BLOCKS - 1  # every block below the adapted top one
    with policy.reference_mode():
        states = compute_prefix_states(policy.lm.get_base_model(), batch, cut)
    cached = dataclasses.replace(batch, prefix_states=states, prefix_blocks=cut)

    def grads(sequences):
        policy.zero_grad()
        logps = policy.sequence_logps(sequences, z)
        logps.sum().backward()
        return logps.detach(), {
            n: p.grad.clone()
            for n, p in policy.trainable_parameters().items()
            if p.grad is not None
        }

    full_logps, full_grads = grads(batch)
    cached_logps, cached_grads = grads(cached)
    assert torch.allclose(cached_logps, full_logps, atol=1e-5)
    assert full_grads.keys() == cached_grads.keys() and full_grads
    for name, grad in full_grads.items():
        assert torch.allclose(cached_grads[name], grad, atol=1e-5), name
    assert torch.allclose(policy.reference_logps(cached), policy.reference_logps(batch), atol=1e-5)


def test_states_that_cover_an_adapted_block_are_refused(tokenizer, batch):
    policy = _policy(tokenizer, layers_to_transform="top_2")  # LoRA on blocks 1 and 2
    with policy.reference_mode():
        states = compute_prefix_states(policy.lm.get_base_model(), batch, 2)
    cached = dataclasses.replace(batch, prefix_states=states, prefix_blocks=2)
    z = torch.zeros(len(batch), 4)
    with pytest.raises(ConfigError, match=r"lowest 2 blocks but this policy adapts block 1"):
        policy.sequence_logps(cached, z)
    # the reference (adapters and FiLM off) may start anywhere
    assert torch.allclose(policy.reference_logps(cached), policy.reference_logps(batch), atol=1e-5)
