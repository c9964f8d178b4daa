"""Pooling of token hidden states into one vector per text."""

from __future__ import annotations

import torch

POOLINGS = ("mean", "last_token")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens, in float32.

    Equivalent to ``hidden[b, attention_mask[b] == 1].mean(0)`` for every ``b``
    (sentence-transformers' mean pooling).

    Args:
        hidden: (B, L, D) hidden states.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.

    Returns:
        (B, D) float32.
    """
    mask = attention_mask.to(torch.float32).unsqueeze(-1)  # (B, L, 1)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)  # (B, D)
    return summed / mask.sum(dim=1).clamp(min=1.0)  # (B, D)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last non-padding token, in float32 (left or right padding).

    Equivalent to ``hidden[b, attention_mask[b].nonzero().max()]`` for every ``b``.

    Args:
        hidden: (B, L, D) hidden states.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.

    Returns:
        (B, D) float32.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (L,)
    last = (positions * attention_mask.long()).argmax(dim=1)  # (B,)
    rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
    return hidden[rows, last].to(torch.float32)  # (B, D)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """``mean`` or ``last_token`` pooling; see :func:`mean_pool`, :func:`last_token_pool`."""
    if method == "mean":
        return mean_pool(hidden, attention_mask)
    if method == "last_token":
        return last_token_pool(hidden, attention_mask)
    raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {method!r}")
