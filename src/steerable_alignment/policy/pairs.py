"""The DPO data contract: tokenised pairs with their features, and the batches cut from them.

What the ``dpo`` nodes hand to training and to evaluation, below both
(docs/architecture.md):

- :class:`SequenceBatch`: tokenised (prompt, response) sequences padded to
  one length, optionally with the cached states entering the lowest adapted
  block (*prefix states*).
- :class:`PolicyData`: the pairs that have both tokenised sequences and
  features, with their choices and splits; episodes index its rows.
- :class:`ReferenceLogps`: the reference policy's summed response
  log-probs of every (pair, side), computed once and kept. The reference is
  the base model with adapters and FiLM off, so they never change.
- :func:`pair_sequences` cuts a :class:`SequenceBatch` out of the pairs by
  (row, side) index tensors.

Glossary: P pairs, E episodes, T targets, L tokens, H hidden size,
D embedding size, K objectives, M gathered pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerable_alignment.episodes.sampler import EvaluationEpisodes
from steerable_alignment.policy.tokenise import PolicyPairs


@dataclass(frozen=True)
class SequenceBatch:
    """Tokenised (prompt, response) sequences, padded to one length.

    Attributes:
        input_ids: (S, L) long token ids.
        attention_mask: (S, L) 1 on real tokens, 0 on padding (either side).
        response_start: (S,) long index of each response's first token (>= 1).
        response_len: (S,) long number of response tokens (the response ends
            at ``response_start + response_len <= L``).
        prefix_states: (S, L, H) hidden states entering block ``prefix_blocks``
            (computed once, :mod:`steerable_alignment.policy.prefix`), or None:
            forward passes then start there instead of at the embeddings.
        prefix_blocks: the number of lower blocks those states stand for (0: none).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_start: torch.Tensor
    response_len: torch.Tensor
    prefix_states: torch.Tensor | None = None
    prefix_blocks: int = 0

    def __post_init__(self) -> None:
        if (self.prefix_states is None) != (self.prefix_blocks == 0):
            raise ValueError("prefix_states and prefix_blocks > 0 go together")
        if self.prefix_states is not None and (
            self.prefix_states.shape[:2] != self.input_ids.shape
        ):
            raise ValueError(
                f"prefix_states of shape {tuple(self.prefix_states.shape)} do not match "
                f"input_ids of shape {tuple(self.input_ids.shape)}"
            )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> SequenceBatch:
        """Move every tensor to ``device``."""
        return SequenceBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            response_start=self.response_start.to(device),
            response_len=self.response_len.to(device),
            prefix_states=_maybe(self.prefix_states, lambda t: t.to(device)),
            prefix_blocks=self.prefix_blocks,
        )

    def without_prefix(self) -> SequenceBatch:
        """The same sequences with no cached states (forward passes start at the embeddings)."""
        return dataclasses.replace(self, prefix_states=None, prefix_blocks=0)

    def select(self, index: slice | list[int] | torch.Tensor) -> SequenceBatch:
        """The sequences at ``index`` (rows), in that order."""
        return SequenceBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            response_start=self.response_start[index],
            response_len=self.response_len[index],
            prefix_states=_maybe(self.prefix_states, lambda t: t[index]),
            prefix_blocks=self.prefix_blocks,
        )

    @staticmethod
    def cat(batches: list[SequenceBatch], pad_token_id: int) -> SequenceBatch:
        """Stack batches along S, right-padding the shorter ones.

        Right padding leaves every token's index (and so ``response_start``) as it was.
        """
        length = max(b.input_ids.shape[1] for b in batches)
        prefix_blocks = {b.prefix_blocks for b in batches}
        if len(prefix_blocks) != 1:
            raise ValueError(f"cannot join batches with different prefix_blocks {prefix_blocks}")

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            return nn.functional.pad(t, (0, length - t.shape[1]), value=value)  # (S_i, L)

        def pad_states(t: torch.Tensor) -> torch.Tensor:
            return nn.functional.pad(t, (0, 0, 0, length - t.shape[1]))  # (S_i, L, H)

        states = None
        if batches[0].prefix_states is not None:
            states = torch.cat([pad_states(b.prefix_states) for b in batches])  # (S, L, H)
        return SequenceBatch(
            input_ids=torch.cat([pad(b.input_ids, pad_token_id) for b in batches]),  # (S, L)
            attention_mask=torch.cat([pad(b.attention_mask, 0) for b in batches]),  # (S, L)
            response_start=torch.cat([b.response_start for b in batches]),  # (S,)
            response_len=torch.cat([b.response_len for b in batches]),  # (S,)
            prefix_states=states,
            prefix_blocks=prefix_blocks.pop(),
        )


def _maybe(value: Any, fn: Any) -> Any:
    return None if value is None else fn(value)


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


def episode_choices(data: PolicyData, episodes: EvaluationEpisodes) -> torch.Tensor:
    """(E, T) observed choices of the scored targets (rows of ``data``)."""
    targets = episodes.rows[:, episodes.max_context :]
    return data.choices[targets, episodes.objective.unsqueeze(1)]
