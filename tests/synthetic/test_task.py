import pytest
import torch

from steerable_alignment.episodes.sampler import PreferenceData, make_evaluation_episodes
from steerable_alignment.episodes.scoring import summarise, target_choices
from steerable_alignment.synthetic.task import (
    bayes_optimal_accuracy,
    bayes_optimal_prob_b,
    choice_probabilities,
    generate_pairs,
    user_rewards,
)


def test_user_rewards_known_values():
    y = torch.tensor([0.2, 0.5, 0.8])
    expected = torch.tensor([[0.2, 0.2], [1.0, 0.5], [1.6, 0.2]])
    assert torch.allclose(user_rewards(y), expected)


def test_choices_follow_rewards_and_ties_are_half():
    options = torch.tensor([[0.1, 0.3], [0.3, 0.8], [0.9, 0.4], [0.25, 0.75]])
    probs = choice_probabilities(options)
    # user 0: monotone -> picks the larger value; user 1: tent around 0.5.
    assert probs[:, 0].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert probs[:, 1].tolist() == [1.0, 0.0, 1.0, 0.5]  # 0.25 vs 1 - 0.75: a tie


def test_generation_is_reproducible_and_split():
    a = generate_pairs(1000, 0.5, (0.8, 0.1, 0.1), seed=4)
    b = generate_pairs(1000, 0.5, (0.8, 0.1, 0.1), seed=4)
    assert torch.equal(a.options, b.options) and torch.equal(a.choices, b.choices)
    assert a.split.bincount().tolist() == [800, 100, 100]
    # About half of the pairs are conflicting (users disagree).
    conflicting = (a.choices[:, 0] != a.choices[:, 1]).float().mean()
    assert 0.45 < float(conflicting) < 0.55


@pytest.mark.parametrize("num_context", [0, 1, 3, 5, 10])
def test_bayes_optimal_accuracy_matches_monte_carlo(num_context):
    pairs = generate_pairs(40_000, 0.5, (1.0, 0.0, 0.0), seed=11)
    data = PreferenceData(pairs.options.unsqueeze(-1), pairs.choices, ("user_0", "user_1"))
    episodes = make_evaluation_episodes(
        torch.arange(40_000), torch.tensor([0, 1]), 2000, 20, 10, seed=5
    )
    batch = episodes.batch(data, num_context)
    prob_b = bayes_optimal_prob_b(
        batch.context_features[..., 0],
        batch.context_choices,
        batch.context_mask,
        batch.target_features[..., 0],
    )
    scores = summarise(prob_b, target_choices(data, episodes))
    expected = bayes_optimal_accuracy(num_context)
    assert abs(scores["accuracy"] - expected) < 4 * scores["accuracy_se"] + 1e-3
    # The oracle is never confidently wrong.
    assert scores["nll"] < 0.7
