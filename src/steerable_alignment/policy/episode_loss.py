"""A policy's DPO objective on episodes, and its validation scores, framework-free.

What the DPO and SFT training tasks (:mod:`steerable_alignment.recipes.policies`)
ask of a policy, written beside the policy rather than in the loop: the
DPO (+ NLL) loss of every target of a batch of training episodes, and the
validation scores of fixed episodes (the DPO loss, which selects the kept
weights, the implicit-reward accuracy and the chosen responses' NLL).
Chosen and rejected follow each episode user's choice; NP-DPO conditions
every target of an episode on the latent of its context (the first
``num_context`` targets, context ⊆ targets in training).

Glossary: B training episodes, E evaluation episodes, T targets, N context
slots, Z latent size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from steerable_alignment.episodes.sampler import TrainingEpisodes
from steerable_alignment.episodes.scoring import score_targets
from steerable_alignment.policy.dpo import DPOOutput, chosen_nll, dpo_loss
from steerable_alignment.policy.logps import response_token_counts
from steerable_alignment.policy.pairs import (
    PolicyData,
    ReferenceLogps,
    episode_choices,
    pair_sequences,
)
from steerable_alignment.policy.scoring import context_latents, episode_pair_logps
from steerable_alignment.runtime.devices import cuda_autocast

if TYPE_CHECKING:
    from steerable_alignment.policy.model import PolicyModel


def episode_dpo_loss(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    episodes: TrainingEpisodes,
    beta: float,
    device: torch.device,
    nll_weight: float = 0.0,
) -> DPOOutput:
    """The DPO (+ ``nll_weight`` · chosen NLL) loss of every target of training episodes.

    Chosen/rejected follow the episode user's choice; NP-DPO conditions every
    target of an episode on the latent of its context (the first
    ``num_context`` targets). The chosen NLL is normalised by the number of
    tokens the chosen log-prob sums (:func:`response_token_counts`: the
    response and its end-of-turn token).

    Returns:
        A :class:`DPOOutput` over the B·T targets, episode-major (with gradients;
        ``chosen_nll`` always reported).
    """
    rows = episodes.rows  # (B, T)
    num_episodes, num_targets = rows.shape
    choices = data.choices[rows, episodes.objective.unsqueeze(1)]  # (B, T)
    z = None
    if policy.config.uses_context:
        slots = int(episodes.num_context.max()) if num_episodes else 0
        mask = torch.arange(slots).unsqueeze(0) < episodes.num_context.unsqueeze(1)  # (B, N)
        z = context_latents(policy, data, rows[:, :slots], choices[:, :slots], mask, device)
        z = z.repeat_interleave(num_targets, 0)  # (B·T, Z)
    flat_rows = rows.flatten()  # (B·T,)
    chosen_side = choices.flatten()  # (B·T,)
    rejected_side = 1 - chosen_side
    chosen = pair_sequences(data.sequences, flat_rows, chosen_side).to(device)
    rejected = pair_sequences(data.sequences, flat_rows, rejected_side).to(device)
    policy_chosen, policy_rejected = policy.pair_logps(chosen, rejected, z)  # (B·T,) each
    return dpo_loss(
        policy_chosen,
        policy_rejected,
        reference.gather(flat_rows, chosen_side).to(device),
        reference.gather(flat_rows, rejected_side).to(device),
        beta,
        chosen_token_counts=response_token_counts(chosen),  # (B·T,)
        nll_weight=nll_weight,
    )


class ValidationScores(NamedTuple):
    """What :func:`validate_policy` measures, each averaged over the context sizes.

    Attributes:
        loss: the DPO loss, ``−log σ(r_chosen − r_rejected)`` (selects the best weights).
        accuracy: implicit-reward accuracy.
        chosen_nll: per-token NLL of the chosen responses, ``−log π(y_w) / |y_w|``.
    """

    loss: float
    accuracy: float
    chosen_nll: float


def validate_policy(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    episodes: Any,
    context_sizes: tuple[int, ...],
    beta: float,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> ValidationScores:
    """DPO loss, implicit-reward accuracy and chosen NLL over ``context_sizes`` on fixed episodes.

    The loss of a target is the NLL of its implicit-reward preference,
    ``−log σ(r_chosen − r_rejected)``, exactly as
    ``score_targets(predict_policy_episodes(...))`` computes it (a test checks
    it); the chosen NLL comes from the same forward passes. A policy that
    reads no context is scored once (its value is the same at every context size).
    """
    choices = episode_choices(data, episodes)  # (E, T)
    targets = episodes.rows[:, episodes.max_context :]  # (E, T)
    counts = data.sequences.response_len[targets, choices]  # (E, T) = response_token_counts
    sizes = context_sizes if policy.config.uses_context else context_sizes[:1]
    losses, accuracies, nlls = [], [], []
    with cuda_autocast(device, dtype):
        for n in sizes:
            logps = _episode_pair_logps(policy, data, episodes, n, batch_size, device)
            flat = targets.flatten()
            ref = torch.stack(
                [
                    reference.gather(flat, torch.zeros_like(flat)),
                    reference.gather(flat, torch.ones_like(flat)),
                ],
                1,
            ).reshape(logps.shape)  # (E, T, 2)
            rewards = beta * (logps.double() - ref.double())  # (E, T, 2)
            prob_b = torch.sigmoid(rewards[..., 1] - rewards[..., 0])  # (E, T)
            correct, nll = score_targets(prob_b, choices)
            chosen = logps.gather(-1, choices.unsqueeze(-1)).squeeze(-1)  # (E, T)
            losses.append(float(nll.mean()))
            accuracies.append(float(correct.mean()))
            nlls.append(float(chosen_nll(chosen.double(), counts).mean()))
    count = len(sizes)
    return ValidationScores(sum(losses) / count, sum(accuracies) / count, sum(nlls) / count)


@torch.no_grad()
def _episode_pair_logps(
    policy: PolicyModel,
    data: PolicyData,
    episodes: Any,
    num_context: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """(E, T, 2) policy log-probs of every scored target, in eval mode: the forward
    passes of ``predict_policy_episodes`` (the same helper), keeping the log-probs."""
    was_training = policy.training
    policy.eval()
    try:
        return episode_pair_logps(policy, data, episodes, num_context, batch_size, device)
    finally:
        policy.train(was_training)
