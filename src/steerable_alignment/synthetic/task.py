"""The synthetic two-user task and its Bayes-optimal oracle (DESIGN.md §4).

Options are scalars ``y ~ U(0, 1)``. User type 0 has reward ``y`` below the
threshold and ``2y`` above; user type 1 has ``y`` below and ``1 − y`` above.
A user picks the option with the higher reward (ties at random).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OBJECTIVES = ("user_0", "user_1")


def user_rewards(options: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Rewards of every user type.

    Args:
        options: (...,) option values in [0, 1].

    Returns:
        (..., 2) rewards for user types 0 and 1.
    """
    above = options >= threshold
    reward_0 = torch.where(above, 2.0 * options, options)
    reward_1 = torch.where(above, 1.0 - options, options)
    return torch.stack([reward_0, reward_1], dim=-1)


def choice_probabilities(options: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``P(b ≻ a)`` for each user type: 1, 0 or 0.5 at a tie.

    Args:
        options: (..., 2) values of options a and b.

    Returns:
        (..., 2) probability that each user type (0, 1) picks option b.
    """
    rewards = user_rewards(options, threshold)  # (..., 2 options, 2 users)
    diff = rewards[..., 1, :] - rewards[..., 0, :]  # (..., 2 users)
    return (diff > 0).to(options.dtype) + 0.5 * (diff == 0).to(options.dtype)


@dataclass(frozen=True)
class SyntheticPairs:
    """Generated pairs: option values, user rewards, choices and splits.

    Attributes:
        options: (P, 2) float32 values of options a and b.
        rewards: (P, 2 options, 2 users) float32 rewards.
        choices: (P, 2 users) long, 1 = option b preferred.
        split: (P,) long, 0 train / 1 validation / 2 test.
    """

    options: torch.Tensor
    rewards: torch.Tensor
    choices: torch.Tensor
    split: torch.Tensor


def generate_pairs(
    n_pairs: int, threshold: float, split_fractions: tuple[float, float, float], seed: int
) -> SyntheticPairs:
    """Draw the synthetic data set deterministically from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    options = torch.rand(n_pairs, 2, generator=generator)  # (P, 2)
    rewards = user_rewards(options, threshold)  # (P, 2, 2)
    prob_b = choice_probabilities(options, threshold)  # (P, 2)
    choices = (torch.rand(prob_b.shape, generator=generator) < prob_b).long()  # ties at random
    n_train = round(split_fractions[0] * n_pairs)
    n_val = round(split_fractions[1] * n_pairs)
    split = torch.full((n_pairs,), 2, dtype=torch.long)
    order = torch.randperm(n_pairs, generator=generator)
    split[order[:n_train]] = 0
    split[order[n_train : n_train + n_val]] = 1
    return SyntheticPairs(options, rewards, choices, split)


def bayes_optimal_prob_b(
    context_options: torch.Tensor,
    context_choices: torch.Tensor,
    context_mask: torch.Tensor,
    target_options: torch.Tensor,
    threshold: float = 0.5,
) -> torch.Tensor:
    """The oracle's ``P(b ≻ a)`` for each target, knowing both reward functions.

    The posterior over the two user types (uniform prior) is exact: each
    context choice has likelihood 1, 0 or 0.5 (tie) under each type. The
    prediction is the posterior mixture of the types' choice probabilities.

    Args:
        context_options: (B, N, 2) option values of the context pairs.
        context_choices: (B, N) long choices.
        context_mask: (B, N) bool, the real context pairs.
        target_options: (B, T, 2) option values of the target pairs.

    Returns:
        (B, T) probability that option b is preferred.
    """
    prob_b = choice_probabilities(context_options.double(), threshold)  # (B, N, 2 users)
    choice = context_choices.unsqueeze(-1).double()  # (B, N, 1)
    likelihood = choice * prob_b + (1 - choice) * (1 - prob_b)  # (B, N, 2 users)
    likelihood = torch.where(context_mask.unsqueeze(-1), likelihood, torch.ones_like(likelihood))
    posterior = likelihood.prod(dim=1)  # (B, 2 users), prior uniform
    posterior = posterior / posterior.sum(-1, keepdim=True)
    target_prob = choice_probabilities(target_options.double(), threshold)  # (B, T, 2 users)
    return (target_prob * posterior.unsqueeze(1)).sum(-1).to(target_options.dtype)


def bayes_optimal_accuracy(num_context: int, disagreement: float = 0.5) -> float:
    """Closed-form expected Bayes accuracy on a fresh target, uniform prior.

    A context pair on which the two users disagree reveals the user; targets
    on which they agree are always right; disagreeing targets are a coin flip
    until the user is revealed. With independent pairs:
    ``1 − disagreement · 0.5 · (1 − disagreement)^n``. For the default
    threshold 0.5, ``disagreement = 1/2`` exactly.
    """
    return 1.0 - disagreement * 0.5 * (1.0 - disagreement) ** num_context
