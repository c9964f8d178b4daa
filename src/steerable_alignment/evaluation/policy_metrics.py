"""Scoring DPO policies by their implicit reward (DESIGN.md §2-3), framework-free.

A DPO policy defines an implicit reward ``r(y) = β·(log π(y) − log π_ref(y))``
(log-probs summed over the response tokens). Read as a preference model,
``P(b ≻ a) = σ(r(y_b) − r(y_a))``: the accuracy of these probabilities is the
*implicit-reward accuracy* (the chosen response's reward above the
rejected's; a zero margin is a tie and counts half, as for the reward
models) and their NLL is the DPO loss. Predictions therefore go through the
same tables, bootstrap and paired comparisons as the reward models
(:mod:`steerable_alignment.evaluation.metrics`).

The reference log-probs never change (the reference is the base model with
adapters and FiLM off), so they are computed once per (pair, side) and kept
in a :class:`ReferenceLogps` cache indexed by pair row.

Glossary: P pairs, E episodes, N context slots, T targets, L tokens,
D embedding size, Z latent size, M gathered pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steerable_alignment.episodes.sampler import EvaluationEpisodes
from steerable_alignment.policy.logps import (
    SequenceBatch,
    causal_lm_logps,
)
from steerable_alignment.policy_data.tokenise import PolicyPairs

if TYPE_CHECKING:
    from steerable_alignment.policy.model import PolicyModel

logger = logging.getLogger(__name__)

#: Tensors of a ``{dataset}.policy_pairs`` file (:func:`policy_pairs_to_tensors`).
POLICY_PAIR_TENSORS = (
    "input_ids",
    "attention_mask",
    "response_start",
    "response_len",
    "pair_id",
    "pad_token_id",
)


def policy_pairs_to_tensors(pairs: PolicyPairs) -> dict[str, torch.Tensor]:
    """A :class:`PolicyPairs` as a dict of tensors (a ``TensorDictDataset`` file)."""
    return {
        "input_ids": pairs.input_ids,  # (P, 2, L)
        "attention_mask": pairs.attention_mask,  # (P, 2, L)
        "response_start": pairs.response_start,  # (P, 2)
        "response_len": pairs.response_len,  # (P, 2)
        "pair_id": pairs.pair_id,  # (P,)
        "pad_token_id": torch.tensor(pairs.pad_token_id, dtype=torch.int64),
    }


def policy_pairs_from_tensors(tensors: Mapping[str, torch.Tensor], name: str) -> PolicyPairs:
    """The inverse of :func:`policy_pairs_to_tensors`.

    Raises:
        ValueError: naming ``name`` and the missing or misshapen tensor.
    """
    missing = [key for key in POLICY_PAIR_TENSORS if key not in tensors]
    if missing:
        raise ValueError(f"Dataset '{name}': missing tensor(s) {missing}")
    ids = tensors["input_ids"]
    num = int(tensors["pair_id"].shape[0])
    if ids.dim() != 3 or ids.shape[:2] != (num, 2):
        raise ValueError(
            f"Dataset '{name}': 'input_ids' must have shape (P, 2, L) with P = {num} "
            f"(the pair ids), got {tuple(ids.shape)}"
        )
    return PolicyPairs(
        input_ids=ids.long(),
        attention_mask=tensors["attention_mask"].long(),
        response_start=tensors["response_start"].long(),
        response_len=tensors["response_len"].long(),
        pair_id=tensors["pair_id"].long(),
        pad_token_id=int(tensors["pad_token_id"]),
    )


@dataclass(frozen=True)
class PolicyData:
    """Everything a policy is trained and scored on, one row per pair.

    Attributes:
        sequences: the tokenised pairs, ``(P, 2, L)`` (side 0 = response a).
        choices: (P, K) long, per objective, 1 = response b preferred.
        objectives: the K objective names, in column order of ``choices``.
        embeddings: (P, 2, D) context embeddings of (prompt, response a/b),
            read by NP-DPO's context encoder; None when there are none.
        splits: split name -> (P_split,) long row indices.
        source_rows: (P,) long row of each pair in the features file it was
            aligned with (evaluation episodes are stored in that row space).
    """

    sequences: PolicyPairs
    choices: torch.Tensor
    objectives: tuple[str, ...]
    embeddings: torch.Tensor | None
    splits: dict[str, torch.Tensor]
    source_rows: torch.Tensor

    def __len__(self) -> int:
        return int(self.choices.shape[0])

    def objective_ids(self, names: tuple[str, ...] | list[str]) -> torch.Tensor:
        """Column indices of the named objectives; unknown names raise ValueError."""
        unknown = [n for n in names if n not in self.objectives]
        if unknown:
            raise ValueError(
                f"Unknown objective(s) {unknown}; valid objectives: {list(self.objectives)}"
            )
        return torch.tensor([self.objectives.index(n) for n in names], dtype=torch.long)

    def rows_from_source(self, source_rows: torch.Tensor, name: str = "episodes") -> torch.Tensor:
        """Map rows of the features file to rows of this data (every one must be present).

        Raises:
            ValueError: naming ``name`` when a row has no tokenised pair.
        """
        size = int(max(int(self.source_rows.max()), int(source_rows.max())) + 1)
        lookup = torch.full((size,), -1, dtype=torch.long)
        lookup[self.source_rows] = torch.arange(len(self))
        mapped = lookup[source_rows]
        if bool((mapped < 0).any()):
            raise ValueError(
                f"'{name}' uses {int((mapped < 0).sum())} pair(s) that have no tokenised "
                "sequences (dropped as over-long, or outside the tokenised subset)"
            )
        return mapped

    @classmethod
    def align(
        cls,
        sequences: PolicyPairs,
        features: torch.Tensor,
        feature_pair_ids: torch.Tensor,
        choices: torch.Tensor,
        objectives: tuple[str, ...],
        splits: Mapping[str, torch.Tensor],
    ) -> PolicyData:
        """The pairs that have both tokenised sequences and features, in the features' order.

        Args:
            sequences: tokenised pairs (any subset of the pairs, any order).
            features: (F, 2, D) context embeddings, one row per features-file row.
            feature_pair_ids: (F,) pair id of each features row.
            choices: (F, K) long choices, aligned with ``features``.
            objectives: the K objective names.
            splits: split name -> rows of the features file.

        Raises:
            ValueError: no pair has both.
        """
        position = {int(p): i for i, p in enumerate(sequences.pair_id.tolist())}
        token_rows = torch.tensor(
            [position.get(int(p), -1) for p in feature_pair_ids.tolist()], dtype=torch.long
        )  # (F,)
        keep = torch.nonzero(token_rows >= 0).flatten()  # (P,) rows of the features file
        if keep.numel() == 0:
            raise ValueError(
                "No pair has both tokenised sequences and features: the policy pairs and the "
                "features describe different pairs"
            )
        dense = torch.full((len(feature_pair_ids),), -1, dtype=torch.long)
        dense[keep] = torch.arange(keep.numel())
        new_splits = {}
        for split, rows in splits.items():
            mapped = dense[rows]
            new_splits[split] = mapped[mapped >= 0]
        return cls(
            sequences=sequences.select(token_rows[keep]),  # (P, 2, L)
            choices=choices[keep],  # (P, K)
            objectives=tuple(objectives),
            embeddings=features[keep].float(),  # (P, 2, D)
            splits=new_splits,
            source_rows=keep,
        )


def pair_sequences(pairs: PolicyPairs, rows: torch.Tensor, sides: torch.Tensor) -> SequenceBatch:
    """One sequence per (pair row, side), trimmed to the longest of them.

    The pairs' prefix states (if any) come along.

    Args:
        pairs: the tokenised pairs.
        rows: (M,) long pair rows.
        sides: (M,) long, 0 = response a, 1 = response b.

    Returns:
        A :class:`SequenceBatch` of M sequences.
    """
    rows, sides = rows.cpu(), sides.cpu()
    seq_len = pairs.seq_len[rows, sides]  # (M,)
    width = int(seq_len.max()) if seq_len.numel() else 0
    return SequenceBatch(
        input_ids=pairs.input_ids[rows, sides, :width],  # (M, L_b)
        attention_mask=pairs.attention_mask[rows, sides, :width],  # (M, L_b)
        response_start=pairs.response_start[rows, sides],  # (M,)
        response_len=pairs.response_len[rows, sides],  # (M,)
        prefix_states=(
            None if pairs.prefix_states is None else pairs.prefix_states[rows, sides, :width]
        ),  # (M, L_b, H)
        prefix_blocks=pairs.prefix_blocks,
    )


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


class ReferenceLogps:
    """Reference log-probs of every (pair, side), computed once and kept.

    Attributes:
        values: (P, 2) float32 log π_ref of response a and b of each pair row
            (NaN where not computed yet).
        known: (P,) bool, rows whose two values are computed.
    """

    def __init__(self, values: torch.Tensor, known: torch.Tensor | None = None) -> None:
        if values.dim() != 2 or values.shape[1] != 2:
            raise ValueError(f"reference log-probs must have shape (P, 2), got {values.shape}")
        self.values = values.float().cpu().clone()
        self.known = (
            ~torch.isnan(self.values).any(1) if known is None else known.bool().cpu().clone()
        )

    @classmethod
    def empty(cls, num_pairs: int) -> ReferenceLogps:
        """A cache with nothing computed yet."""
        return cls(torch.full((num_pairs, 2), float("nan")))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def ensure(
        self,
        rows: torch.Tensor,
        logps_fn: Callable[[SequenceBatch], torch.Tensor],
        pairs: PolicyPairs,
        batch_size: int,
        device: torch.device,
    ) -> int:
        """Compute the rows not known yet (both sides), ``batch_size`` sequences per forward.

        Args:
            rows: (M,) pair rows that are needed (repeats allowed).
            logps_fn: SequenceBatch (on ``device``) -> (S,) reference log-probs.
            pairs: the tokenised pairs.
            batch_size: sequences per forward pass (>= 2).
            device: where the forward passes run.

        Returns:
            The number of pairs computed.
        """
        needed = torch.unique(rows.cpu())  # (U,) sorted
        missing = needed[~self.known[needed]]
        per_chunk = max(batch_size // 2, 1)
        for start in range(0, len(missing), per_chunk):
            chunk = missing[start : start + per_chunk]  # (m,)
            both_rows = torch.cat([chunk, chunk])  # (2m,)
            sides = torch.cat([torch.zeros_like(chunk), torch.ones_like(chunk)])  # (2m,)
            batch = pair_sequences(pairs, both_rows, sides).to(device)
            logps = logps_fn(batch).float().cpu()  # (2m,)
            self.values[chunk] = torch.stack([logps[: len(chunk)], logps[len(chunk) :]], 1)
            self.known[chunk] = True
        return len(missing)

    def gather(self, rows: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
        """(M,) reference log-probs of (row, side); every row must be known.

        Raises:
            RuntimeError: a row has not been computed.
        """
        rows, sides = rows.cpu(), sides.cpu()
        if not bool(self.known[rows].all()):
            raise RuntimeError("reference log-probs requested for pairs not computed yet")
        return self.values[rows, sides]  # (M,)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"values": self.values, "known": self.known}


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


def episode_choices(data: PolicyData, episodes: EvaluationEpisodes) -> torch.Tensor:
    """(E, T) observed choices of the scored targets (rows of ``data``)."""
    targets = episodes.rows[:, episodes.max_context :]
    return data.choices[targets, episodes.objective.unsqueeze(1)]
