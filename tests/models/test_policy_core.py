"""Policy pieces without an LLM: sequence log-probs, the DPO loss, the config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy import (
    PolicyConfig,
    dpo_loss,
    resolve_layers,
    sequence_logps,
    sequence_logps_from_hidden,
)
from steerable_alignment.policy.logps import response_token_counts
from steerable_alignment.policy.pairs import SequenceBatch


def _naive_logps(logits, input_ids, start, length):
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    totals = []
    for s in range(input_ids.shape[0]):
        total = 0.0
        for t in range(int(start[s]), int(start[s] + length[s])):
            total += float(log_probs[s, t - 1, input_ids[s, t]])
        totals.append(total)
    return torch.tensor(totals, dtype=torch.float64)


def _random_case(seed=0, s=5, seq_len=12, vocab=17):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (s, seq_len), generator=g)
    start = torch.randint(1, seq_len, (s,), generator=g)
    length = torch.stack(
        [torch.randint(0, seq_len - int(b) + 1, (1,), generator=g)[0] for b in start]
    )
    return g, input_ids, start, length


def test_sequence_logps_matches_naive_loop():
    g, input_ids, start, length = _random_case()
    length[0] = 0  # an empty response sums to 0
    logits = torch.randn(5, 12, 17, generator=g) * 3
    fast = sequence_logps(logits, input_ids, start, length)
    assert fast.shape == (5,)
    assert torch.allclose(fast.double(), _naive_logps(logits, input_ids, start, length), atol=1e-4)
    assert fast[0] == 0


def test_sequence_logps_accepts_model_output_and_gets_gradients():
    g, input_ids, start, length = _random_case(seed=1)
    logits = torch.randn(5, 12, 17, generator=g, requires_grad=True)

    class Output:
        pass

    output = Output()
    output.logits = logits
    total = sequence_logps(output, input_ids, start, length).sum()
    total.backward()
    # Only rows that predict a response token receive gradient.
    used = torch.zeros(5, 12, dtype=torch.bool)
    for s in range(5):
        used[s, int(start[s]) - 1 : int(start[s] + length[s]) - 1] = True
    assert torch.all(logits.grad.abs().sum(-1)[~used] == 0)
    assert torch.all(logits.grad.abs().sum(-1)[used] > 0)


def test_logits_at_response_positions_equal_full_logits():
    g, input_ids, start, length = _random_case(seed=2)
    hidden = torch.randn(5, 12, 8, generator=g)
    lm_head = nn.Linear(8, 17, bias=False)
    full = sequence_logps(lm_head(hidden), input_ids, start, length)
    gathered = sequence_logps_from_hidden(hidden, lm_head, input_ids, start, length)
    assert torch.allclose(full, gathered, atol=1e-5)


@pytest.mark.parametrize(
    ("start", "length", "message"),
    [(0, 2, "response_start must be >= 1"), (3, 5, "runs past the sequence length 6")],
)
def test_sequence_logps_rejects_bad_spans(start, length, message):
    logits = torch.zeros(1, 6, 4)
    ids = torch.zeros(1, 6, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        sequence_logps(logits, ids, torch.tensor([start]), torch.tensor([length]))


def test_sequence_batch_cat_right_pads():
    a = SequenceBatch(
        torch.ones(1, 3, dtype=torch.long),
        torch.ones(1, 3, dtype=torch.long),
        torch.tensor([1]),
        torch.tensor([2]),
    )
    b = SequenceBatch(
        torch.full((2, 5), 2),
        torch.ones(2, 5, dtype=torch.long),
        torch.tensor([2, 3]),
        torch.tensor([3, 2]),
    )
    both = SequenceBatch.cat([a, b], pad_token_id=9)
    assert both.input_ids.shape == (3, 5)
    assert both.input_ids[0].tolist() == [1, 1, 1, 9, 9]
    assert both.attention_mask[0].tolist() == [1, 1, 1, 0, 0]
    assert both.response_start.tolist() == [1, 2, 3]


def test_dpo_loss_by_hand():
    beta = 0.5
    out = dpo_loss(
        policy_chosen_logps=torch.tensor([-1.0, -3.0]),
        policy_rejected_logps=torch.tensor([-2.0, -1.0]),
        reference_chosen_logps=torch.tensor([-1.5, -2.0]),
        reference_rejected_logps=torch.tensor([-1.5, -2.0]),
        beta=beta,
    )
    # Pair 0: chosen ratio +0.5, rejected ratio -0.5 -> rewards +0.25 / -0.25, margin 0.5.
    # Pair 1: chosen ratio -1.0, rejected ratio +1.0 -> rewards -0.5 / +0.5, margin -1.0.
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.5])
    expected = [math.log1p(math.exp(-0.5)), math.log1p(math.exp(1.0))]  # -log σ(m) = log(1+e^-m)
    assert out.loss.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.accuracy.tolist() == [1.0, 0.0]
    assert not out.chosen_rewards.requires_grad


def test_dpo_loss_gradient_reaches_policy_only():
    chosen = torch.tensor([-1.0], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    ref = torch.tensor([-1.0], requires_grad=True)
    out = dpo_loss(chosen, rejected, ref, ref, beta=0.1)
    out.loss.sum().backward()
    # d/dchosen of -log σ(β(c - r)) at margin 0 = -β/2.
    assert chosen.grad.item() == pytest.approx(-0.05)
    assert rejected.grad.item() == pytest.approx(0.05)
    assert ref.grad is None
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(chosen, rejected, ref, ref, beta=0.0)


def test_dpo_plus_nll_loss_by_hand():
    beta, weight = 0.5, 0.25
    out = dpo_loss(
        policy_chosen_logps=torch.tensor([-2.0, -6.0]),
        policy_rejected_logps=torch.tensor([-2.5, -5.0]),
        reference_chosen_logps=torch.tensor([-2.5, -5.0]),
        reference_rejected_logps=torch.tensor([-2.0, -6.0]),
        beta=beta,
        chosen_token_counts=torch.tensor([4, 3]),
        nll_weight=weight,
    )
    # Pair 0: ratios +0.5 / -0.5 -> margin β·1 = 0.5; chosen NLL 2/4 = 0.5 per token.
    # Pair 1: ratios -1.0 / +1.0 -> margin β·(-2) = -1.0; chosen NLL 6/3 = 2.0 per token.
    assert out.chosen_nll.tolist() == pytest.approx([0.5, 2.0])
    dpo = [math.log1p(math.exp(-0.5)), math.log1p(math.exp(1.0))]
    expected = [dpo[0] + weight * 0.5, dpo[1] + weight * 2.0]
    assert out.loss.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.margins.tolist() == pytest.approx([0.5, -1.0])
    assert not out.chosen_nll.requires_grad


def test_dpo_plus_nll_gradient_by_hand():
    chosen = torch.tensor([-1.0], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    ref = torch.tensor([-1.0])
    out = dpo_loss(chosen, rejected, ref, ref, 0.1, torch.tensor([5]), nll_weight=2.0)
    out.loss.sum().backward()
    # DPO at margin 0: -β/2 = -0.05; NLL term: d/dc [2 · (−c / 5)] = -0.4.
    assert chosen.grad.item() == pytest.approx(-0.45)
    assert rejected.grad.item() == pytest.approx(0.05)  # the NLL is on the chosen side only


def test_nll_weight_zero_is_plain_dpo_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    logps = -torch.rand(4, 64, generator=g, dtype=torch.float32) * 40  # (4, P)
    counts = torch.randint(1, 30, (64,), generator=g)
    grads = []
    for kwargs in ({}, {"chosen_token_counts": counts, "nll_weight": 0.0}):
        chosen = logps[0].clone().requires_grad_()
        out = dpo_loss(chosen, logps[1], logps[2], logps[3], beta=0.1, **kwargs)
        out.loss.sum().backward()
        grads.append((out.loss.detach(), chosen.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    plain = dpo_loss(logps[0], logps[1], logps[2], logps[3], beta=0.1)
    assert plain.chosen_nll is None  # no counts, no diagnostic


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nll_weight": -0.1, "chosen_token_counts": torch.tensor([1])}, "nll_weight must be"),
        ({"nll_weight": float("nan"), "chosen_token_counts": torch.tensor([1])}, "nll_weight"),
        ({"nll_weight": 1.0}, "needs chosen_token_counts"),
        ({"nll_weight": 1.0, "chosen_token_counts": torch.tensor([0])}, "must be >= 1"),
        ({"chosen_token_counts": torch.tensor([1, 2])}, "do not match"),
    ],
)
def test_dpo_plus_nll_rejects_bad_arguments(kwargs, message):
    one = torch.tensor([-1.0])
    with pytest.raises(ValueError, match=message):
        dpo_loss(one, one, one, one, beta=0.1, **kwargs)


def test_response_token_counts_are_the_tokens_summed():
    # Left padding (row 0), right padding (row 2), an empty response (row 1).
    input_ids = torch.tensor([[0, 0, 5, 6, 7, 8], [5, 6, 7, 0, 0, 0], [5, 6, 7, 8, 9, 0]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    start, length = torch.tensor([3, 3, 2]), torch.tensor([3, 0, 3])
    batch = SequenceBatch(input_ids, attention, start, length)
    naive = [len(range(int(start[s]), int(start[s] + length[s]))) for s in range(len(batch))]
    counts = response_token_counts(batch)
    assert counts.tolist() == naive == [3, 0, 3]
    # Uniform logits give every token log-prob −log V: the sum is −count · log V.
    vocab = 10
    summed = sequence_logps(torch.zeros(3, 6, vocab), input_ids, start, length)
    assert (summed / -math.log(vocab)).tolist() == pytest.approx(counts.float().tolist())


def test_policy_config_from_params_and_errors():
    config = PolicyConfig.from_params(
        {"type": "np_dpo", "target_modules": ["q_proj"], "film_layers": [0, -1]},
        embedding_dim=384,
    )
    assert config.target_modules == ("q_proj",)
    assert config.film_layers == (0, -1)
    assert PolicyConfig.from_params(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lora_rank'\]"):
        PolicyConfig.from_params({"lora_rank": 4})
    with pytest.raises(ConfigError, match="'policy.embedding_dim'"):
        PolicyConfig.from_params({"type": "np_dpo"})
    assert PolicyConfig.from_params({"type": "btl_dpo"}).embedding_dim is None
    with pytest.raises(ConfigError, match="'policy.lora_dropout'"):
        PolicyConfig.from_params({"type": "btl_dpo", "lora_dropout": 1.0})
    with pytest.raises(ConfigError, match="'policy.film_layers'"):
        PolicyConfig.from_params({"type": "btl_dpo", "film_layers": "top_0"})
    with pytest.raises(ConfigError, match="'policy.target_modules'"):
        PolicyConfig.from_params({"type": "btl_dpo", "target_modules": []})
    with pytest.raises(ConfigError, match="'policy.type'"):
        PolicyConfig.from_params({"type": "dpo"})


def test_resolve_layers():
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers("top_2", 4) == [2, 3]
    assert resolve_layers((0, -1), 4) == [0, 3]
    with pytest.raises(ConfigError, match="asks for 5 blocks but the model has 4"):
        resolve_layers("top_5", 4)
    with pytest.raises(ConfigError, match=r"\[4\] are out of range"):
        resolve_layers((0, 4), 4)
    with pytest.raises(ConfigError, match="names a block twice"):
        resolve_layers((1, -3), 4)
