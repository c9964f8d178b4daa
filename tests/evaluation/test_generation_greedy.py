"""Greedy answers under a latent z are the argmax of the teacher-forced logits under z.

An NP-DPO policy with FiLM away from the identity answers left-padded prompts
of different lengths with the KV cache (``generate_answers``, temperature 0);
running each prompt + answer again through the policy, unpadded and in one
forward pass conditioned on the same z, must predict every generated token
as its argmax.
"""

from __future__ import annotations

import pytest
import torch

from steerable_alignment.evaluation.generation import (
    SamplingConfig,
    generate_answers,
    prompt_batch,
)
from steerable_alignment.policy import PolicyConfig, PolicyModel
from tests.models.tiny_causal_lm import chatml_tokenizer, tiny_model

#: Prompts of very different token lengths, so the batch is left-padded.
PROMPTS = [
    "hello",
    "how do i cook rice with water and salt for ten minutes then serve it",
    "write a poem",
    "why a cat sleeps all day because it likes warm places",
]
LATENT_DIM = 4
NEW_TOKENS = 8
GREEDY = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=0, batch_size=len(PROMPTS))


@pytest.fixture(scope="module")
def tokenizer():
    return chatml_tokenizer(corpus=PROMPTS)


@pytest.fixture(scope="module")
def policy(tokenizer):
    torch.manual_seed(0)
    config = PolicyConfig.from_params(
        {
            "type": "np_dpo",
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
            "film_hidden_dim": 8,
            "latent_dim": LATENT_DIM,
            "encoder_hidden_dim": 16,
            "encoder_num_heads": 2,
            "embedding_dim": 6,
        }
    )
    model = PolicyModel(config, tiny_model(tokenizer))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # FiLM away from the identity (small random weights), so z matters
        for param in model.film.parameters():
            param.copy_(0.5 * torch.randn(param.shape, generator=g))
    return model.eval()


def _greedy_tokens(
    policy, tokenizer, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L) left-padded prompts, their (B, L) mask and (B, NEW_TOKENS) greedy new tokens,
    as generate_answers makes them (same kwargs, default KV cache)."""
    input_ids, attention_mask = prompt_batch(tokenizer, PROMPTS)
    out = policy.generate(input_ids, attention_mask, z=z, **GREEDY.generate_kwargs(tokenizer))
    return input_ids, attention_mask, out[:, input_ids.shape[1] :]


def _answer_length(row: torch.Tensor, eos: int) -> int:
    stop = (row == eos).nonzero()
    return int(stop[0]) + 1 if len(stop) else len(row)


def test_the_prompt_batch_is_left_padded(tokenizer):
    _, mask = prompt_batch(tokenizer, PROMPTS)
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) == len(PROMPTS)  # four different lengths
    assert (mask[:, -1] == 1).all() and (mask[lengths.argmin(), 0] == 0)


def test_greedy_tokens_are_the_argmax_of_teacher_forced_logits_under_z(policy, tokenizer):
    z = torch.randn(len(PROMPTS), LATENT_DIM, generator=torch.Generator().manual_seed(3))
    input_ids, attention_mask, new = _greedy_tokens(policy, tokenizer, z)
    answers, lengths = generate_answers(policy, tokenizer, PROMPTS, GREEDY, z, progress=False)
    assert policy.lm.generation_config.use_cache  # generate() runs with the KV cache
    eos = tokenizer.eos_token_id
    checked, unconditioned_misses = 0, 0
    for i in range(len(PROMPTS)):
        length = _answer_length(new[i], eos)
        assert int(lengths[i]) == length
        decoded = tokenizer.decode(new[i, :length], skip_special_tokens=True).strip()
        assert decoded == answers[i]  # generate_answers decoded these very tokens
        prompt = input_ids[i][attention_mask[i].bool()]  # (L_i,) without padding
        sequence = torch.cat([prompt, new[i, :length]]).unsqueeze(0)  # (1, L_i + n)
        with torch.no_grad(), policy.conditioned(z[i : i + 1]):
            logits = policy.lm(input_ids=sequence, use_cache=False).logits[0]  # (L_i + n, V)
        start = len(prompt)
        predicted = logits[start - 1 : start + length - 1].argmax(-1)  # (n,)
        assert predicted.tolist() == new[i, :length].tolist()
        # the argmax is not a near tie: float noise of padding cannot explain a match
        top2 = logits[start - 1 : start + length - 1].topk(2, dim=-1).values  # (n, 2)
        assert ((top2[:, 0] - top2[:, 1]) > 1e-4).all()
        checked += length
        with torch.no_grad(), policy.film_disabled():  # the same check without z
            plain = policy.lm(input_ids=sequence, use_cache=False).logits[0]
        unconditioned_misses += int(
            (plain[start - 1 : start + length - 1].argmax(-1) != new[i, :length]).sum()
        )
    assert checked >= len(PROMPTS) * 2
    assert unconditioned_misses > 0  # the check sees z: without it some argmax differ


def test_the_kv_cache_changes_nothing_and_z_changes_the_answers(policy, tokenizer):
    z = torch.randn(len(PROMPTS), LATENT_DIM, generator=torch.Generator().manual_seed(3))
    input_ids, attention_mask, cached = _greedy_tokens(policy, tokenizer, z)
    kwargs = {**GREEDY.generate_kwargs(tokenizer), "use_cache": False}
    uncached = policy.generate(input_ids, attention_mask, z=z, **kwargs)[:, input_ids.shape[1] :]
    assert torch.equal(cached, uncached)
    _, _, other = _greedy_tokens(policy, tokenizer, -3 * z)
    assert not torch.equal(cached, other)  # another latent, other tokens
    # ... and the unconditioned base model answers otherwise still
    with policy.film_disabled():
        plain = policy.generate(input_ids, attention_mask, **GREEDY.generate_kwargs(tokenizer))
    assert not torch.equal(cached, plain[:, input_ids.shape[1] :])
