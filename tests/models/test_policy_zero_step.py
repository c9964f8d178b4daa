"""A policy trained for zero steps scores every pair exactly ½ through ``predict_policy``.

A freshly built policy has LoRA B matrices at zero and FiLM at the identity,
so its log-probs are the reference's and every implicit-reward margin
``β·((log π_b − log π_ref,b) − (log π_a − log π_ref,a))`` is 0. The
``predict_policy`` node computes ``log π`` from the STORED prefix states (when
the data set keeps them) and reads ``log π_ref`` from the CACHED reference
log-probs of ``compute_reference_logps``: the two must come from the same
computation, in another batching (other chunks, other padding), for the
margin to be exactly 0. With bf16 prefix states both sides start from the
same stored (bf16-computed) states, so it stays exact.
"""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest
import torch

from steerable_alignment.pipelines.dpo.nodes import (
    compute_reference_logps,
    make_policy_evaluation_episodes,
    predict_policy,
    tokenise_policy_pairs,
)
from steerable_alignment.policy import PolicyConfig, PolicyModel
from steerable_alignment.policy.base_model import PretrainedPolicy
from steerable_alignment.policy.checkpoint import TrainedPolicy
from tests.models.tiny_causal_lm import CHATML_WORDS, chatml_tokenizer, tiny_model

DATA = {"name": "hh", "objectives": ["helpfulness", "honesty"]}
FEATURE_DIM = 6
BETA = 0.5
CONTEXT_SIZES = [0, 1, 3]
EVALUATION = {
    "split": "test",
    "context_sizes": CONTEXT_SIZES,
    "episodes_per_objective": 3,
    "num_targets": 4,
    "seed": 0,
    "bootstrap": {"replicates": 20, "cluster_by": "prompt", "seed": 7},
    "batch_size": 6,  # 3 pairs per forward pass; the reference below used 2
    "device": "cpu",
}
#: (trained_blocks, prefix_dtype): no prefix states, float32 states, bf16-computed states.
PREFIX_MODES = [("all", "float32"), ("top_1", "float32"), ("top_1", "bfloat16")]


def _pairs(g: torch.Generator) -> pd.DataFrame:
    """24 pairs of random CHATML_WORDS texts of varied lengths (14 test pairs)."""

    def words(n: int) -> str:
        return " ".join(
            CHATML_WORDS[i] for i in torch.randint(len(CHATML_WORDS), (n,), generator=g)
        )

    splits = ["train"] * 6 + ["validation"] * 4 + ["test"] * 14
    rows = []
    for i, split in enumerate(splits):
        rows.append(
            {
                "pair_id": 10 + i,
                "prompt": words(3 + i % 5),
                "response_a": words(2 + i % 7),
                "response_b": words(4 + (3 * i) % 6),
                "reward_a_helpfulness": 0.0,
                "reward_b_helpfulness": 1.0,
                "choice_helpfulness": i % 2,
                "reward_a_honesty": 1.0,
                "reward_b_honesty": 0.0,
                "choice_honesty": (i // 2) % 2,
                "split": split,
                "is_conflicting": i % 4 == 0,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    pairs = _pairs(g)
    features = {
        "pair_id": torch.tensor(pairs["pair_id"].to_numpy()),
        "features": torch.randn(len(pairs), 2, FEATURE_DIM, generator=g),  # (N, 2, D)
    }
    tokenizer = chatml_tokenizer(corpus=[" ".join(CHATML_WORDS)] * 5, vocab_size=2000)
    base = PretrainedPolicy(tiny_model(tokenizer), tokenizer)
    policy_pairs = tokenise_policy_pairs(base, pairs, DATA, {"max_length": 128})
    episodes = make_policy_evaluation_episodes(pairs, features, policy_pairs, DATA, EVALUATION)
    return pairs, features, base, policy_pairs, episodes


@pytest.fixture(scope="module")
def references(setup):
    """(trained_blocks, prefix_dtype) -> (reference_logps, prefix_states) of the node."""
    _, _, base, policy_pairs, _ = setup
    out = {}
    for blocks, dtype in PREFIX_MODES:
        reference = {
            "batch_size": 4,
            "device": "cpu",
            "trained_blocks": blocks,
            "prefix_dtype": dtype,
        }
        out[(blocks, dtype)] = compute_reference_logps(base, policy_pairs, DATA, reference)
    return out


def _fresh(base: PretrainedPolicy, policy_type: str, blocks: str) -> PolicyModel:
    params = {
        "type": policy_type,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "layers_to_transform": blocks,
    }
    if policy_type == "np_dpo":
        params.update(
            film_layers=blocks,
            film_hidden_dim=8,
            latent_dim=4,
            encoder_hidden_dim=16,
            encoder_num_heads=2,
            embedding_dim=FEATURE_DIM,
        )
    torch.manual_seed(0)
    return PolicyModel(PolicyConfig.from_params(params), copy.deepcopy(base.model))


def _predict(setup, trained: TrainedPolicy, reference_logps, prefix_states) -> dict:
    pairs, features, base, policy_pairs, episodes = setup
    return predict_policy(
        base,
        trained,
        pairs,
        features,
        policy_pairs,
        reference_logps,
        prefix_states,
        episodes,
        DATA,
        EVALUATION,
    )


@pytest.fixture
def no_reference_forward(monkeypatch):
    """The prediction must read the cached reference log-probs, never recompute them."""

    def fail(*_args, **_kwargs):
        pytest.fail("predict_policy recomputed reference log-probs instead of using the cache")

    monkeypatch.setattr(PolicyModel, "reference_logps", fail)


@pytest.mark.parametrize("mode", PREFIX_MODES, ids=lambda m: "-".join(m))
@pytest.mark.parametrize("policy_type", ["btl_dpo", "np_dpo"])
def test_a_fresh_policy_scores_exactly_one_half(
    setup, references, policy_type, mode, no_reference_forward
):
    blocks, _ = mode
    reference_logps, prefix_states = references[mode]
    assert int(prefix_states["blocks"]) == (1 if blocks == "top_1" else 0)
    assert ("states" in prefix_states) == (blocks == "top_1")
    assert torch.isfinite(reference_logps["logps"]).all() and (reference_logps["logps"] < 0).all()
    policy = _fresh(setup[2], policy_type, blocks)
    lora_b = {k: v for k, v in policy.trainable_parameters().items() if "lora_B" in k}
    assert lora_b and all((v == 0).all() for v in lora_b.values())
    if policy.film is not None:
        z = torch.randn(3, policy.config.latent_dim)
        for film in policy.film.films.values():
            gamma, beta = film(z)
            assert torch.equal(gamma, torch.ones_like(gamma)) and not beta.any()
    trained = TrainedPolicy.from_policy(policy, BETA)
    out = _predict(setup, trained, reference_logps, prefix_states)
    assert out["num_context"].tolist() == CONTEXT_SIZES
    prob_b = out["prob_b"]  # (S, E, T)
    assert prob_b.shape == (3, 6, 4) and prob_b.dtype == torch.float64
    assert torch.equal(prob_b, torch.full_like(prob_b, 0.5))


def test_a_trained_lora_moves_the_predictions_off_one_half(setup, references):
    """The ½ above is not a constant of the path: non-zero LoRA B changes the margins."""
    policy = _fresh(setup[2], "np_dpo", "top_1")
    trained = TrainedPolicy.from_policy(policy, BETA)
    g = torch.Generator().manual_seed(2)
    state = {
        k: (0.5 * torch.randn(v.shape, generator=g) if "lora_B" in k or "film" in k else v)
        for k, v in trained.state.items()
    }
    stepped = dataclasses.replace(trained, state=state)
    prob_b = _predict(setup, stepped, *references[("top_1", "float32")])["prob_b"]  # (S, E, T)
    assert (prob_b != 0.5).all()
    assert not torch.equal(prob_b[0], prob_b[2])  # FiLM of the context latent matters


def test_the_prediction_reads_the_stored_prefix_states(setup, references, no_reference_forward):
    """States off the ones the reference was computed from break the ½; so do bf16 states
    scored against a float32 reference: reference and policy must share the stored states."""
    policy = _fresh(setup[2], "btl_dpo", "top_1")
    trained = TrainedPolicy.from_policy(policy, BETA)
    reference_logps, prefix_states = references[("top_1", "float32")]
    shifted = {**prefix_states, "states": prefix_states["states"] * 1.05}
    off = _predict(setup, trained, reference_logps, shifted)["prob_b"]
    assert (off - 0.5).abs().max() > 1e-3
    fast_states = references[("top_1", "bfloat16")][1]
    mixed = _predict(setup, trained, reference_logps, fast_states)["prob_b"]
    gap = float((mixed - 0.5).abs().max())
    assert 0 < gap < 0.05  # bf16 states are close to, not equal to, the float32 ones
