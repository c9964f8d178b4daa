"""Generation for simulated users, win-rates and the steering gap (evaluation/generation.py)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from steerable_alignment.evaluation.generation import (
    SamplingConfig,
    distinct_bigram_share,
    generate_answers,
    mean_reward_rows,
    prompt_batch,
    steering_gap_rows,
    win_rate_rows,
)
from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy import PolicyConfig, PolicyModel
from tests.models.tiny_causal_lm import chatml_tokenizer, tiny_model

PROMPTS = ["how do i cook rice", "why a cat sleeps", "write a poem", "fix my code", "hello"]


def _scores() -> pd.DataFrame:
    """Hand-made scores: 3 prompts, users h (helpfulness) and o (honesty), sizes 0 and 2."""
    rows = []
    # (model, user, c) -> per-prompt (reward_h, reward_o)
    values = {
        ("np", "h", 0): [(1, 1), (2, 2), (3, 3)],
        ("np", "o", 0): [(1, 1), (2, 2), (3, 3)],
        ("np", "h", 2): [(3, 0), (4, 1), (5, 2)],
        ("np", "o", 2): [(0, 3), (2, 4), (3, 6)],
        ("base", "h", 0): [(2, 2), (2, 2), (2, 2)],
        ("base", "o", 0): [(2, 2), (2, 2), (2, 2)],
        ("base", "h", 2): [(2, 2), (2, 2), (2, 2)],
        ("base", "o", 2): [(2, 2), (2, 2), (2, 2)],
    }
    for (model, user, c), per_prompt in values.items():
        for prompt_id, (rh, ro) in enumerate(per_prompt):
            rows.append(
                {
                    "model": model,
                    "prompt_id": prompt_id,
                    "user": user,
                    "num_context": c,
                    "reward_h": float(rh),
                    "reward_o": float(ro),
                }
            )
    return pd.DataFrame(rows)


def test_win_rates_count_ties_half_and_pair_by_prompt():
    rows = {
        (r["objective"], r["num_context"]): r
        for r in win_rate_rows(_scores(), "np", "base", ["h", "o"], replicates=200, seed=0)
    }
    # size 0, users h on reward h: 1 < 2 (loss), 2 = 2 (tie), 3 > 2 (win) -> 0.5
    assert rows[("h", 0)]["win_rate"] == pytest.approx(0.5)
    assert rows[("h", 0)]["reward_diff"] == pytest.approx(0.0)
    # size 2, users h on reward h: 3, 4, 5 vs 2 -> all wins, mean diff 2, no spread
    assert rows[("h", 2)]["win_rate"] == 1.0 and rows[("h", 2)]["win_rate_se"] == 0.0
    assert rows[("h", 2)]["reward_diff"] == pytest.approx(2.0)
    # size 2, users o on reward o: 3, 4, 6 vs 2 -> wins; diffs 1, 2, 4 -> mean 7/3
    assert rows[("o", 2)]["reward_diff"] == pytest.approx(7 / 3)
    assert rows[("o", 2)]["reward_diff_se"] > 0
    assert {r["n_prompts"] for r in rows.values()} == {3}


def test_the_steering_gap_by_hand():
    rows = {
        (r["objective"], r["context_objective"], r["num_context"]): r
        for r in steering_gap_rows(_scores(), "np", ["h", "o"], replicates=500, seed=0)
    }
    assert set(rows) == {("h", "o", 0), ("h", "o", 2), ("o", "h", 0), ("o", "h", 2)}
    assert rows[("h", "o", 0)]["gap"] == 0 and rows[("h", "o", 0)]["gap_se"] == 0
    # reward h of the h-user's answers (3, 4, 5) minus the o-user's (0, 2, 3): 3, 2, 2
    assert rows[("h", "o", 2)]["gap"] == pytest.approx(7 / 3)
    # reward o of the o-user's answers (3, 4, 6) minus the h-user's (0, 1, 2): 3, 3, 4
    assert rows[("o", "h", 2)]["gap"] == pytest.approx(10 / 3)
    # the bootstrap s.e. of a mean of 3 values is about sd / sqrt(3)
    sd = torch.tensor([3.0, 3.0, 4.0]).std(unbiased=False)
    assert rows[("o", "h", 2)]["gap_se"] == pytest.approx(float(sd) / 3**0.5, rel=0.25)


def test_mean_rewards_per_model_user_and_size():
    rows = mean_reward_rows(_scores(), ["h", "o"], replicates=100, seed=0)
    found = {(r["model"], r["user"], r["num_context"], r["objective"]): r for r in rows}
    assert found[("np", "o", 2, "o")]["reward"] == pytest.approx(13 / 3)
    assert found[("base", "h", 0, "h")]["reward_se"] == 0
    assert len(rows) == 2 * 2 * 2 * 2


def test_mean_rewards_carry_the_fluency_proxy_when_scored():
    scores = _scores()
    scores["distinct_2"] = [1.0, 0.5, 0.0] * (len(scores) // 3)
    rows = mean_reward_rows(scores, ["h", "o"], replicates=100, seed=0)
    assert all(r["distinct_2"] == pytest.approx(0.5) for r in rows)
    assert all(r["distinct_2_se"] > 0 for r in rows)
    assert pd.isna(mean_reward_rows(_scores(), ["h"], replicates=50, seed=0)[0]["distinct_2"])


def test_distinct_bigram_share_by_hand():
    assert distinct_bigram_share("a b c d") == 1.0  # 3 bigrams, all distinct
    assert distinct_bigram_share("I am I am I am") == pytest.approx(2 / 5)  # (I,am), (am,I)
    assert distinct_bigram_share("") == distinct_bigram_share("one") == 1.0


def test_sampling_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"'sampling\.top_p'"):
        SamplingConfig.from_params({"top_p": 0})
    with pytest.raises(ConfigError, match=r"'sampling\.max_new_tokens'"):
        SamplingConfig.from_params({"max_new_tokens": 0})
    with pytest.raises(ConfigError, match="typo"):
        SamplingConfig.from_params({"typo": 1})
    with pytest.raises(ConfigError, match=r"'sampling\.top_k'"):
        SamplingConfig.from_params({"top_k": -1})
    with pytest.raises(ConfigError, match=r"'sampling\.repetition_penalty'"):
        SamplingConfig.from_params({"repetition_penalty": 0})
    greedy = SamplingConfig(temperature=0).generate_kwargs(chatml_tokenizer())
    assert greedy["do_sample"] is False


def test_every_sampling_parameter_is_passed_explicitly():
    # A model's generation_config (e.g. Qwen2.5-Instruct: top_k 20, repetition_penalty
    # 1.05) must not change the answers: generate() gets every value from the config.
    kwargs = SamplingConfig(top_k=7, repetition_penalty=1.1).generate_kwargs(chatml_tokenizer())
    assert kwargs["do_sample"] is True
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (0.7, 0.9, 7)
    assert kwargs["repetition_penalty"] == 1.1
    # the defaults are what transformers applies when nothing sets them: no change
    from transformers import GenerationConfig

    defaults = GenerationConfig._get_default_generation_params()
    config = SamplingConfig()
    assert (config.top_k, config.repetition_penalty) == (
        defaults["top_k"],
        defaults["repetition_penalty"],
    )


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
            "latent_dim": 4,
            "encoder_hidden_dim": 16,
            "encoder_num_heads": 2,
            "embedding_dim": 6,
        }
    )
    model = PolicyModel(config, tiny_model(tokenizer))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # FiLM away from the identity, so z matters
        for param in model.film.parameters():
            param.add_(torch.randn(param.shape, generator=g))
    return model


def test_prompts_are_left_padded_and_rendered_as_in_training(tokenizer):
    from steerable_alignment.policy.tokenise import render_prompt

    ids, mask = prompt_batch(tokenizer, PROMPTS[:2])
    assert ids.shape == mask.shape and mask[:, -1].all()
    for row, prompt in enumerate(PROMPTS[:2]):
        expected = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)
        assert ids[row][mask[row].bool()].tolist() == expected["input_ids"]


def test_generation_is_seeded_per_batch_and_conditioned_on_z(policy, tokenizer):
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=2)
    z = torch.randn(len(PROMPTS), 4, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first, lengths = generate_answers(policy, tokenizer, PROMPTS, sampling, z, progress=False)
    assert torch.rand(1) == before  # the caller's RNG is left as it was
    again, _ = generate_answers(policy, tokenizer, PROMPTS, sampling, z, progress=False)
    assert first == again and len(first) == len(PROMPTS)
    assert lengths.shape == (len(PROMPTS),) and (lengths >= 1).all() and (lengths <= 6).all()
    other_seed = SamplingConfig(**{**sampling.__dict__, "seed": 1})
    assert generate_answers(policy, tokenizer, PROMPTS, other_seed, z, progress=False)[0] != first
    greedy = SamplingConfig(max_new_tokens=6, temperature=0, batch_size=5)
    a, _ = generate_answers(policy, tokenizer, PROMPTS, greedy, z, progress=False)
    b, _ = generate_answers(policy, tokenizer, PROMPTS, greedy, -3 * z, progress=False)
    assert a != b  # another latent, other answers


def test_batched_greedy_answers_equal_one_prompt_at_a_time(policy, tokenizer):
    z = torch.randn(len(PROMPTS), 4, generator=torch.Generator().manual_seed(4))
    batched = SamplingConfig(max_new_tokens=5, temperature=0, batch_size=5)
    single = SamplingConfig(max_new_tokens=5, temperature=0, batch_size=1)
    a, _ = generate_answers(policy, tokenizer, PROMPTS, batched, z, progress=False)
    b, _ = generate_answers(policy, tokenizer, PROMPTS, single, z, progress=False)
    assert a == b


def test_answer_nll_matches_a_naive_token_loop():
    from steerable_alignment.evaluation.generation import answer_nll
    from steerable_alignment.policy.tokenise import render_prompt

    tokenizer = chatml_tokenizer()
    model = tiny_model(tokenizer, seed=3)
    answers = ["rice needs water", "cats sleep a lot", "roses are red", "", "hi there friend"]
    got = answer_nll(model, tokenizer, PROMPTS, answers, batch_size=2)
    for prompt, answer, value in zip(PROMPTS, answers, got.tolist()):
        start = len(
            tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        )
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            tokenize=False,
        )
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        end = ids.index(tokenizer.convert_tokens_to_ids("<|im_end|>"), start)  # closing token
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        terms = [-float(logp[t - 1, ids[t]]) for t in range(start, end)]
        if not terms:
            assert torch.isnan(torch.tensor(value))
        else:
            assert value == pytest.approx(sum(terms) / len(terms), abs=1e-4)
