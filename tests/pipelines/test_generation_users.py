"""``make_generation_users`` on a hand-made pairs table: the simulated users' prompts and
context pairs come from the configured split, and a context never holds the answered
prompt (compared as normalised text)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.evaluation.generation_nodes import make_generation_users
from steerable_alignment.splits import normalise_prompt

DATA = {"name": "hh", "objectives": ["helpfulness", "honesty"]}
FEATURE_DIM = 4
#: split -> prompts; spellings of one prompt (spacing, capitals) are one normalised prompt.
PROMPTS = {
    "test": [
        "How do I cook rice?",
        "how do i   cook rice?",
        " HOW DO I COOK RICE? ",
        "Why does a cat sleep?",
        "why does a cat sleep?",
        "Write a poem",
        "Fix my code",
        "fix  my code",
        "Plant a tree",
        "Bake bread",
    ],
    "validation": [
        "Learn python",
        "learn  Python",
        "Boil pasta",
        "boil pasta ",
        "Rain or sun",
        "Garden soil",
        "garden soil",
        # the same prompt as a test prompt: it is a validation row all the same
        "how do i cook rice?",
    ],
    "train": ["Quick answer", "Slow answer", "Good or bad"],
}


def _pairs() -> pd.DataFrame:
    """One pair per prompt text, the splits interleaved so split rows are not contiguous."""
    rows = [(split, prompt) for split, prompts in PROMPTS.items() for prompt in prompts]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    table = []
    for pair_id, index in enumerate(order):
        split, prompt = rows[index]
        table.append(
            {
                "pair_id": 100 + pair_id,
                "prompt": prompt,
                "response_a": f"answer a to {prompt}",
                "response_b": f"answer b to {prompt}",
                "reward_a_helpfulness": 0.0,
                "reward_b_helpfulness": 1.0,
                "choice_helpfulness": pair_id % 2,
                "reward_a_honesty": 1.0,
                "reward_b_honesty": 0.0,
                "choice_honesty": 1 - pair_id % 2,
                "split": split,
                "is_conflicting": bool(pair_id % 2),
            }
        )
    return pd.DataFrame(table)


@pytest.fixture(scope="module")
def table():
    pairs = _pairs()
    g = torch.Generator().manual_seed(1)
    features = {
        "pair_id": torch.tensor(pairs["pair_id"].to_numpy()),
        "features": torch.randn(len(pairs), 2, FEATURE_DIM, generator=g),  # (N, 2, D)
    }
    return pairs, features


def _generation(split: str, num_prompts: int, seed: int = 0, sizes=(0, 2, 4)) -> dict:
    return {
        "num_prompts": num_prompts,
        "context_sizes": list(sizes),
        "split": split,
        "seed": seed,
        "sampling": {},
    }


def _distinct(split: str) -> int:
    return len({normalise_prompt(p) for p in PROMPTS[split]})


@pytest.mark.parametrize(("split", "num_prompts"), [("test", 4), ("validation", 3)])
def test_prompts_and_contexts_come_from_the_split_and_never_repeat_the_prompt(
    table, split, num_prompts
):
    pairs, features = table
    users = make_generation_users(pairs, features, DATA, _generation(split, num_prompts))
    prompt_rows, context_rows = users["prompt_rows"], users["context_rows"]
    assert prompt_rows.shape == (num_prompts,) and context_rows.shape == (num_prompts, 4)
    assert prompt_rows.dtype == context_rows.dtype == torch.long
    splits = pairs["split"].to_numpy()
    keys = pairs["prompt"].map(normalise_prompt).to_numpy()
    assert set(splits[prompt_rows.numpy()]) == {split}
    assert set(splits[context_rows.flatten().numpy()]) == {split}
    # distinct prompts (by normalised text), each with pairs of other prompts only
    answered = keys[prompt_rows.numpy()]
    assert len(set(answered)) == num_prompts
    for prompt, context in zip(answered, context_rows.numpy(), strict=True):
        assert len(set(context.tolist())) == 4  # four different pairs
        assert all(keys[row] != prompt for row in context)


def test_the_validation_split_never_uses_the_test_rows_of_a_shared_prompt(table):
    """'how do i cook rice?' is in both splits: asked in validation, it uses validation rows."""
    pairs, features = table
    n = _distinct("validation") - 1
    users = make_generation_users(pairs, features, DATA, _generation("validation", n, sizes=[3]))
    rice = normalise_prompt("How do I cook rice?")
    keys = pairs["prompt"].map(normalise_prompt).to_numpy()
    splits = pairs["split"].to_numpy()
    assert set(splits[users["prompt_rows"].numpy()]) == {"validation"}
    contexts = users["context_rows"].numpy()
    answered = keys[users["prompt_rows"].numpy()].tolist()
    assert rice in answered  # seed 0 draws it
    assert not any(keys[row] == rice for row in contexts[answered.index(rice)])
    # the rice pair is in the validation contexts of other prompts, never a test rice row
    test_rice = {i for i in range(len(pairs)) if keys[i] == rice and splits[i] == "test"}
    assert not test_rice & set(contexts.flatten().tolist())


def test_the_draw_is_reproducible_for_a_seed_and_changes_with_it(table):
    pairs, features = table
    first = make_generation_users(pairs, features, DATA, _generation("test", 4, seed=5))
    again = make_generation_users(pairs, features, DATA, _generation("test", 4, seed=5))
    other = make_generation_users(pairs, features, DATA, _generation("test", 4, seed=6))
    assert torch.equal(first["prompt_rows"], again["prompt_rows"])
    assert torch.equal(first["context_rows"], again["context_rows"])
    assert not (
        torch.equal(first["prompt_rows"], other["prompt_rows"])
        and torch.equal(first["context_rows"], other["context_rows"])
    )


def test_no_context_gives_an_empty_context_table(table):
    pairs, features = table
    users = make_generation_users(pairs, features, DATA, _generation("test", 3, sizes=[0]))
    assert users["context_rows"].shape == (3, 0) and users["context_rows"].dtype == torch.long


@pytest.mark.parametrize("split", ["test", "validation"])
def test_more_prompts_than_the_split_has_is_a_config_error(table, split):
    pairs, features = table
    distinct = _distinct(split)
    with pytest.raises(
        ConfigError,
        match=rf"'generation\.hh\.num_prompts': {distinct + 1} asked but split '{split}' "
        rf"has {distinct} distinct prompts",
    ):
        make_generation_users(pairs, features, DATA, _generation(split, distinct + 1))


def test_an_unknown_split_or_too_large_context_is_a_config_error(table):
    pairs, features = table
    with pytest.raises(ConfigError, match=r"'generation\.hh\.split': no split 'dev'"):
        make_generation_users(pairs, features, DATA, _generation("dev", 2))
    # the train split has 3 pairs: 2 of other prompts at most
    with pytest.raises(ConfigError, match=r"'generation\.hh\.context_sizes': 4 context pairs"):
        make_generation_users(pairs, features, DATA, _generation("train", 1))
