"""Sequence log-probabilities of response tokens (DESIGN.md §2, DPO).

Glossary: S sequences, L tokens, R response tokens (the longest response of
the batch), K response tokens of the whole batch, H hidden size, V vocab.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from steerable_alignment.policy.pairs import SequenceBatch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(S, L) positions counting real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def response_positions(
    response_start: torch.Tensor, response_len: torch.Tensor, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the response tokens are predicted from.

    Token ``t`` is predicted by the logits at position ``t − 1`` (the causal shift).

    Args:
        response_start: (S,) long.
        response_len: (S,) long.
        seq_len: L.

    Returns:
        ``(positions, mask)``: (S, R) long logit positions (clamped into range
        where masked) and (S, R) bool, True on real response tokens.

    Raises:
        ValueError: a response starts at token 0 (nothing predicts it) or ends
            past the sequence.
    """
    if (response_start < 1).any():
        raise ValueError("response_start must be >= 1: the first token has no prediction")
    if (response_start + response_len > seq_len).any():
        raise ValueError(f"a response runs past the sequence length {seq_len}")
    if (response_len < 0).any():
        raise ValueError("response_len must be >= 0")
    num = int(response_len.max()) if response_len.numel() else 0
    offsets = torch.arange(num, device=response_start.device)  # (R,)
    mask = offsets < response_len.unsqueeze(-1)  # (S, R)
    positions = (response_start.unsqueeze(-1) - 1 + offsets).clamp_max(seq_len - 2)  # (S, R)
    return positions, mask


def response_token_counts(sequences: SequenceBatch) -> torch.Tensor:
    """(S,) long number of tokens whose log-probs :func:`sequence_logps` sums per sequence.

    The count of the same mask the sums use (:func:`response_positions`), so
    it covers the response tokens only — the response text and its
    end-of-turn token, never the prompt or the padding. The naive equivalent::

        counts[s] = len(range(response_start[s], response_start[s] + response_len[s]))

    Raises:
        ValueError: as :func:`response_positions`.
    """
    _, mask = response_positions(
        sequences.response_start, sequences.response_len, sequences.input_ids.shape[1]
    )  # (S, R)
    return mask.sum(-1)  # (S,)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K, V) logits, (K,) targets -> (K,) log-softmax values of the targets, in float32."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (K,)
    return picked - torch.logsumexp(logits, dim=-1)


def _sum_response(
    per_position: torch.Tensor,
    project: Any,
    input_ids: torch.Tensor,
    response_start: torch.Tensor,
    response_len: torch.Tensor,
) -> torch.Tensor:
    """Gather the predicting rows of ``per_position`` (S, L, F), project them to logits, sum."""
    s, seq_len, width = per_position.shape
    positions, mask = response_positions(response_start, response_len, seq_len)  # (S, R) each
    rows = per_position.gather(1, positions.unsqueeze(-1).expand(-1, -1, width))  # (S, R, F)
    targets = input_ids.gather(1, positions + 1)  # (S, R)
    token_logps = _token_logps(project(rows[mask]), targets[mask])  # (K,)
    seq_index = torch.arange(s, device=input_ids.device).unsqueeze(-1).expand_as(mask)  # (S, R)
    out = token_logps.new_zeros(s)
    return out.index_add(0, seq_index[mask], token_logps)  # (S,)


def sequence_logps(
    logits_or_output: Any,
    input_ids: torch.Tensor,
    response_start: torch.Tensor,
    response_len: torch.Tensor,
) -> torch.Tensor:
    """Sum of the log-probabilities of each sequence's response tokens.

    The naive equivalent, with ``lp = log_softmax(logits, -1)``::

        for s in range(S):
            total[s] = sum(
                lp[s, t - 1, input_ids[s, t]]
                for t in range(response_start[s], response_start[s] + response_len[s])
            )

    Only the response rows of the logits go through the softmax.

    Args:
        logits_or_output: (S, L, V) logits, or a model output with ``.logits``.
        input_ids: (S, L) long.
        response_start: (S,) long, first response token (>= 1).
        response_len: (S,) long.

    Returns:
        (S,) float32 summed log-probabilities.
    """
    logits = getattr(logits_or_output, "logits", logits_or_output)
    return _sum_response(logits, lambda rows: rows, input_ids, response_start, response_len)


def sequence_logps_from_hidden(
    hidden_states: torch.Tensor,
    lm_head: nn.Module,
    input_ids: torch.Tensor,
    response_start: torch.Tensor,
    response_len: torch.Tensor,
) -> torch.Tensor:
    """:func:`sequence_logps` with the output layer applied at response positions only.

    Equal to ``sequence_logps(lm_head(hidden_states), ...)`` for models whose
    logits are exactly ``lm_head(final hidden state)`` (Qwen2, Llama), at a
    fraction of the (S, L, V) cost.

    Args:
        hidden_states: (S, L, H) final (normed) hidden states.
        lm_head: the output layer, H -> V.
        input_ids, response_start, response_len: as in :func:`sequence_logps`.

    Returns:
        (S,) float32 summed log-probabilities.
    """
    return _sum_response(hidden_states, lm_head, input_ids, response_start, response_len)


def causal_lm_logps(
    causal_lm: Any,
    sequences: SequenceBatch,
    logits_at_response_only: bool = True,
    full_forward: Any = None,
) -> torch.Tensor:
    """(S,) summed response log-probs of a Hugging Face causal LM.

    Position ids come from the attention mask (left or right padding give the
    same values). With ``logits_at_response_only`` the decoder's hidden states
    go through the output layer at response positions only
    (:func:`sequence_logps_from_hidden`); otherwise the full logits are
    computed (:func:`sequence_logps`).

    Args:
        causal_lm: the causal LM whose ``get_decoder()`` and
            ``get_output_embeddings()`` are used (for a peft model, its base
            model: the adapters live inside its modules).
        sequences: S tokenised sequences.
        logits_at_response_only: the fast path.
        full_forward: the module called for full logits (default ``causal_lm``;
            e.g. the peft wrapper).

    With ``sequences.prefix_states`` the blocks below ``prefix_blocks`` are
    skipped and the forward pass starts from those states
    (:func:`~steerable_alignment.policy.prefix.skip_lower_blocks`).
    """
    if sequences.prefix_states is not None:
        from steerable_alignment.policy.blocks import skip_lower_blocks

        skip = skip_lower_blocks(causal_lm, sequences.prefix_blocks, sequences.prefix_states)
    else:
        skip = contextlib.nullcontext()
    with skip:
        return _causal_lm_logps(causal_lm, sequences, logits_at_response_only, full_forward)


def _causal_lm_logps(
    causal_lm: Any,
    sequences: SequenceBatch,
    logits_at_response_only: bool,
    full_forward: Any,
) -> torch.Tensor:
    position_ids = position_ids_from_mask(sequences.attention_mask)  # (S, L)
    inputs = {
        "input_ids": sequences.input_ids,
        "attention_mask": sequences.attention_mask,
        "position_ids": position_ids,
        "use_cache": False,
    }
    if not logits_at_response_only:
        output = (full_forward or causal_lm)(**inputs)
        return sequence_logps(
            output, sequences.input_ids, sequences.response_start, sequences.response_len
        )
    hidden = causal_lm.get_decoder()(**inputs).last_hidden_state  # (S, L, H)
    return sequence_logps_from_hidden(
        hidden,
        causal_lm.get_output_embeddings(),
        sequences.input_ids,
        sequences.response_start,
        sequences.response_len,
    )
