"""Scoring DPO policies by their implicit reward (DESIGN.md §2-3), framework-free.

A DPO policy defines an implicit reward ``r(y) = β·(log π(y) − log π_ref(y))``
(log-probs summed over the response tokens). Read as a preference model,
``P(b ≻ a) = σ(r(y_b) − r(y_a))``: the accuracy of these probabilities is the
*implicit-reward accuracy* (the chosen response's reward above the
rejected's; a zero margin is a tie and counts half, as for the reward
models) and their NLL is the DPO loss. Predictions therefore go through the
same tables, bootstrap and paired comparisons as the reward models
(:mod:`steerable_alignment.evaluation.metrics`). Training's validation and
the ``dpo`` pipeline's evaluation both score through here.

Glossary: P pairs, E episodes, N context slots, T targets, L tokens,
D embedding size, Z latent size, M gathered pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from steerable_alignment.episodes.sampler import EvaluationEpisodes
from steerable_alignment.policy.logps import causal_lm_logps
from steerable_alignment.policy.pairs import (
    PolicyData,
    ReferenceLogps,
    SequenceBatch,
    pair_sequences,
)

if TYPE_CHECKING:
    from steerable_alignment.policy.model import PolicyModel


@torch.no_grad()
def base_model_logps(
    model: Any, sequences: SequenceBatch, logits_at_response_only: bool = True
) -> torch.Tensor:
    """(S,) summed response log-probs under a bare base causal LM (the reference policy).

    The same computation as ``PolicyModel.reference_logps`` (adapters and FiLM
    off), without wrapping the model: used to precompute a data set's
    reference log-probs once for every policy trained on it.
    """
    return causal_lm_logps(model, sequences, logits_at_response_only)


def context_latents(
    policy: PolicyModel,
    data: PolicyData,
    context_rows: torch.Tensor,
    context_choices: torch.Tensor,
    context_mask: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """(B, Z) user latents from context pairs given as rows of ``data``.

    Args:
        context_rows: (B, N) long pair rows (padding rows are masked out).
        context_choices: (B, N) long choices of the episode's user.
        context_mask: (B, N) bool, the real context pairs.
    """
    embeddings = data.embeddings[context_rows.cpu()].to(device)  # (B, N, 2, D)
    return policy.encode_context(
        embeddings, context_choices.to(device), context_mask.to(device)
    )  # (B, Z)


def policy_pair_logps(
    policy: PolicyModel,
    data: PolicyData,
    rows: torch.Tensor,
    z: torch.Tensor | None,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """(M, 2) policy log-probs of responses a and b of each pair row.

    Pairs are processed in order of length (less padding), ``batch_size``
    sequences per forward pass.

    Args:
        rows: (M,) long pair rows.
        z: (M, Z) the latent of each pair (np_dpo), else None.
    """
    rows = rows.cpu()
    out = torch.empty(len(rows), 2)
    order = torch.argsort(data.sequences.seq_len[rows].max(1).values)  # (M,)
    per_chunk = max(batch_size // 2, 1)
    for start in range(0, len(rows), per_chunk):
        index = order[start : start + per_chunk]  # (m,)
        chunk = rows[index]
        side_a = pair_sequences(data.sequences, chunk, torch.zeros_like(chunk)).to(device)
        side_b = pair_sequences(data.sequences, chunk, torch.ones_like(chunk)).to(device)
        z_chunk = None if z is None else z[index.to(z.device)]  # (m, Z)
        logp_a, logp_b = policy.pair_logps(side_a, side_b, z_chunk)  # (m,), (m,)
        out[index] = torch.stack([logp_a, logp_b], 1).float().cpu()
    return out


@torch.no_grad()
def episode_pair_logps(
    policy: PolicyModel,
    data: PolicyData,
    episodes: EvaluationEpisodes,
    num_context: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """(E, T, 2) policy log-probs of both responses of every scored target of fixed episodes.

    A context of ``num_context`` pairs (the episode's first slots, never a
    target) conditions NP-DPO; policies that read no context, and NP-DPO
    with an empty context (one latent for every user), score each distinct
    target pair once. The caller sets eval mode.
    """
    targets = episodes.rows[:, episodes.max_context :]  # (E, T)
    num_episodes, num_targets = targets.shape
    uses_context = policy.config.uses_context
    if not uses_context or num_context == 0:
        unique, inverse = torch.unique(targets, return_inverse=True)  # (U,), (E, T)
        z = None
        if uses_context:
            empty = torch.zeros(1, 0, dtype=torch.long)
            z0 = context_latents(policy, data, empty, empty, empty.bool(), device)  # (1, Z)
            z = z0.expand(len(unique), -1)  # (U, Z)
        return policy_pair_logps(policy, data, unique, z, batch_size, device)[inverse]
    context_rows = episodes.rows[:, :num_context]  # (E, n)
    objective = episodes.objective.unsqueeze(1)  # (E, 1)
    context_choices = data.choices[context_rows, objective]  # (E, n)
    mask = torch.ones_like(context_rows, dtype=torch.bool)  # (E, n)
    z = context_latents(policy, data, context_rows, context_choices, mask, device)
    z = z.repeat_interleave(num_targets, 0)  # (E·T, Z)
    logps = policy_pair_logps(policy, data, targets.flatten(), z, batch_size, device)
    return logps.reshape(num_episodes, num_targets, 2)  # (E, T, 2)


@torch.no_grad()
def predict_policy_episodes(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    episodes: EvaluationEpisodes,
    num_context: int,
    beta: float,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Implicit-reward ``P(b ≻ a) = σ(r_b − r_a)`` of every scored target of fixed episodes.

    ``r = β·(log π − log π_ref)``; a context of ``num_context`` pairs (the
    episode's first slots, never a target) conditions NP-DPO. Policies that
    read no context, and NP-DPO with an empty context (one latent for every
    user), score each distinct target pair once.

    Args:
        episodes: fixed episodes whose ``rows`` are rows of ``data``.
        beta: β_dpo of the policy.
        batch_size: sequences per forward pass.

    Returns:
        (E, T) float64 probabilities on the CPU.
    """
    was_training = policy.training
    policy.eval()
    try:
        logps = episode_pair_logps(policy, data, episodes, num_context, batch_size, device)
        targets = episodes.rows[:, episodes.max_context :]  # (E, T)
        num_episodes, num_targets = targets.shape
        flat = targets.flatten()
        ref = torch.stack(
            [
                reference.gather(flat, torch.zeros_like(flat)),
                reference.gather(flat, torch.ones_like(flat)),
            ],
            1,
        ).reshape(num_episodes, num_targets, 2)  # (E, T, 2)
        rewards = beta * (logps.double() - ref.double())  # (E, T, 2)
        return torch.sigmoid(rewards[..., 1] - rewards[..., 0])  # (E, T)
    finally:
        policy.train(was_training)


def predict_policy_context_sizes(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    episodes: EvaluationEpisodes,
    context_sizes: list[int] | tuple[int, ...],
    beta: float,
    batch_size: int,
    device: torch.device,
) -> dict[int, torch.Tensor]:
    """:func:`predict_policy_episodes` at every context size, each forward pass done once.

    A policy that reads no context gives the same probabilities at every
    size, so it is scored once and the result is shared by all sizes.

    Returns:
        context size -> (E, T) float64 probabilities on the CPU.
    """
    probs: dict[int, torch.Tensor] = {}
    shared: torch.Tensor | None = None
    for n in context_sizes:
        if policy.config.uses_context:
            probs[n] = predict_policy_episodes(
                policy, data, reference, episodes, n, beta, batch_size, device
            )
            continue
        if shared is None:
            shared = predict_policy_episodes(
                policy, data, reference, episodes, n, beta, batch_size, device
            )
        probs[n] = shared.clone()
    return probs
