"""The decoder blocks of a causal LM, and running it from given states entering one of them.

:func:`skip_lower_blocks` swaps the lowest blocks for pass-throughs so that a
forward pass starts from cached states (the *prefix states*,
:mod:`steerable_alignment.policy.prefix`). Shapes: S sequences, L tokens,
H hidden size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from steerable_alignment.models.config import ConfigError


def decoder_blocks(model: Any) -> nn.ModuleList:
    """The decoder blocks of a Qwen2/Llama-style causal LM (``model.get_decoder().layers``)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ConfigError(
            f"{type(model).__name__} has no decoder blocks at model.get_decoder().layers; "
            "the policy supports Qwen2/Llama-style causal LMs"
        )
    return layers


class _PassThrough(nn.Module):
    """Stands in for a frozen block: returns ``states`` if given, else its input."""

    def __init__(self, states: torch.Tensor | None = None) -> None:
        super().__init__()
        self.states = states

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.states is None:
            return hidden_states
        if self.states.shape != hidden_states.shape:
            raise ValueError(
                f"prefix states have shape {tuple(self.states.shape)} but the batch's hidden "
                f"states have {tuple(hidden_states.shape)}"
            )
        return self.states.to(hidden_states.dtype)


@contextlib.contextmanager
def skip_lower_blocks(causal_lm: Any, blocks: int, states: torch.Tensor) -> Iterator[None]:
    """Within the block, forward passes start at block ``blocks`` from ``states``.

    Args:
        causal_lm: the causal LM (or the peft model's base model).
        blocks: the number of lower blocks skipped (>= 1).
        states: (S, L, H) hidden states entering block ``blocks`` for the
            batch that will be run.
    """
    layers = decoder_blocks(causal_lm)
    if not 1 <= blocks < len(layers):
        raise ValueError(f"blocks must be in [1, {len(layers) - 1}], got {blocks}")
    original = [layers[i] for i in range(blocks)]
    try:
        for i in range(blocks):
            layers[i] = _PassThrough(states if i == 0 else None)
        yield
    finally:
        for i, block in enumerate(original):
            layers[i] = block
