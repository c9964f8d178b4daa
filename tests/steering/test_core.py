"""Choosing the next pairs to ask a user (``suggest_pairs``, ``usable_pool``) on tiny models."""

from __future__ import annotations

import pytest
import torch

from steerable_alignment.evaluation.elicitation import binary_entropy, mutual_information
from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.steering import ContextPair, PoolPair, SteeringError, usable_pool
from steerable_alignment.steering.core import ContextTensors, suggest_pairs


def _model(kind: str):
    config = RewardModelConfig.from_params(
        {"type": kind, "input_dim": 3, "hidden_dim": 8, "latent_dim": 4, "num_heads": 2}
    )
    torch.manual_seed(0)
    return build_model(config)


def _inputs(m: int = 6):
    g = torch.Generator().manual_seed(1)
    pool = [PoolPair(f"p{i}", f"a{i}", f"b{i}", line=i + 1) for i in range(m)]
    features = torch.randn(m, 2, 3, generator=g)  # (M, 2, D)
    context = ContextTensors(
        torch.randn(1, 2, 2, 3, generator=g),  # (1, N, 2, D)
        torch.tensor([[1, 0]]),
        torch.ones(1, 2, dtype=torch.bool),
    )
    return pool, features, context


def test_the_latent_model_ranks_by_information_about_z():
    model = _model("nppl_latent")
    pool, features, context = _inputs()
    chosen = suggest_pairs(model, context, pool, features, 6, "information", samples=64, seed=3)
    assert [s.rank for s in chosen] == list(range(1, 7))
    assert sorted(s.pair.line for s in chosen) == list(range(1, 7))
    gains = [s.gain for s in chosen]
    assert gains == sorted(gains, reverse=True) and min(gains) >= 0
    # the gain is the mutual information of the same draws of z (same seed)
    from steerable_alignment.evaluation.elicitation import NPBTLView

    view = NPBTLView(model, 64)
    z = view.latents(
        context.features, context.choices, context.mask, torch.Generator().manual_seed(3)
    )
    probs = view.pool_probs(z, features)[:, 0]  # (S, M)
    expected = mutual_information(probs)
    for s in chosen:
        assert s.gain == pytest.approx(float(expected[s.pair.line - 1]), abs=1e-6)
        assert s.prob_b == pytest.approx(float(probs.mean(0)[s.pair.line - 1]), abs=1e-6)
    # the top 2 are the first two of the full ranking
    top = suggest_pairs(model, context, pool, features, 2, "information", samples=64, seed=3)
    assert [s.pair for s in top] == [s.pair for s in chosen[:2]]


def test_a_deterministic_model_ranks_by_the_entropy_of_its_prediction():
    model = _model("nppl")
    pool, features, context = _inputs()
    chosen = suggest_pairs(model, context, pool, features, 6, "uncertainty")
    for s in chosen:
        assert s.gain == pytest.approx(float(binary_entropy(torch.tensor(s.prob_b))), abs=1e-6)
    assert [s.gain for s in chosen] == sorted((s.gain for s in chosen), reverse=True)
    with pytest.raises(SteeringError, match="needs a latent NP-BTL model"):
        suggest_pairs(model, context, pool, features, 1, "information")
    with pytest.raises(SteeringError, match="valid strategies"):
        suggest_pairs(model, context, pool, features, 1, "best")
    with pytest.raises(SteeringError, match="cannot suggest 7 pair"):
        suggest_pairs(model, context, pool, features, 7, "uncertainty")


def test_random_suggestions_follow_the_seed():
    model = _model("nppl")
    pool, features, context = _inputs()
    first = [
        s.pair.line for s in suggest_pairs(model, context, pool, features, 6, "random", seed=5)
    ]
    again = [
        s.pair.line for s in suggest_pairs(model, context, pool, features, 6, "random", seed=5)
    ]
    other = [
        s.pair.line for s in suggest_pairs(model, context, pool, features, 6, "random", seed=6)
    ]
    assert first == again and first != other


def test_the_pool_loses_the_contexts_pairs_and_its_repeats_in_either_order():
    context = [ContextPair("p", "x", "y", choice=1, line=4)]
    pool = [
        PoolPair("p", "y", "x", line=1),  # the context's pair, responses swapped
        PoolPair("p", "x", "z", line=2),
        PoolPair("q", "x", "y", line=3),  # same responses, other prompt: a new question
        PoolPair("p", "z", "x", line=4),  # repeats line 2
    ]
    kept, skipped = usable_pool(pool, context)
    assert [p.line for p in kept] == [2, 3]
    assert [(s.line, s.reason) for s in skipped] == [
        (1, "already in the context (line 4)"),
        (4, "repeats pool line 2"),
    ]
