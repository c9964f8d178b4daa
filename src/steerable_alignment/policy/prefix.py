"""The frozen lower blocks of a causal LM, computed once per text and reused.

When a policy trains LoRA and FiLM on its top blocks only (the CPU default),
the blocks below them are frozen and unconditioned: their output for a text
never changes, whoever the user and whatever the step. The hidden states
entering the lowest trained block (the *prefix states*) can therefore be
computed once per sequence and fed to the upper blocks at every later
forward pass — training, validation, reference log-probs and evaluation
alike — which on SmolLM2 (30 blocks, top 4 trained) removes ~85 % of each
forward pass and its activation memory.

Mechanism: the decoder is called as usual (token embedding, rotary
positions, attention masks are built by the model's own code), with the
blocks below the cut temporarily replaced by pass-throughs: the first
returns the cached states, the others return their input. Nothing of the
model's internals is re-implemented; :func:`check_prefix_states` verifies
the equivalence on the model at hand, and decoders whose blocks take and
return the hidden states (Llama, Qwen2, Mistral and the like) qualify.

Shapes: S sequences, L tokens, H hidden size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy.blocks import decoder_blocks, skip_lower_blocks
from steerable_alignment.policy.logps import causal_lm_logps, position_ids_from_mask


class _Reached(Exception):
    """Raised by the hook once the wanted states exist: the upper blocks are not run."""


@torch.no_grad()
def compute_prefix_states(causal_lm: Any, sequences: Any, blocks: int) -> torch.Tensor:
    """(S, L, H) hidden states entering block ``blocks`` (the output of block ``blocks − 1``).

    Only the lower ``blocks`` blocks run.

    Args:
        causal_lm: a bare causal LM (no adapters below the cut).
        sequences: a :class:`~steerable_alignment.policy.logps.SequenceBatch`
            without prefix states.
        blocks: the number of lower blocks (>= 1).
    """

    layers = decoder_blocks(causal_lm)
    if not 1 <= blocks < len(layers):
        raise ValueError(f"blocks must be in [1, {len(layers) - 1}], got {blocks}")
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured["states"] = output if isinstance(output, torch.Tensor) else output[0]
        raise _Reached

    handle = layers[blocks - 1].register_forward_hook(hook)
    try:
        causal_lm.get_decoder()(
            input_ids=sequences.input_ids,
            attention_mask=sequences.attention_mask,
            position_ids=position_ids_from_mask(sequences.attention_mask),
            use_cache=False,
        )
    except _Reached:
        pass
    finally:
        handle.remove()
    if "states" not in captured:
        raise RuntimeError(f"block {blocks - 1} did not run: cannot read its output")
    return captured["states"].detach()


@torch.no_grad()
def check_prefix_states(
    causal_lm: Any, sequences: Any, blocks: int, tolerance: float = 1e-3
) -> float:
    """Check that starting from cached states gives the full forward pass's log-probs.

    Args:
        causal_lm: the bare causal LM.
        sequences: a few sequences (a :class:`SequenceBatch` without states).
        blocks: the cut.
        tolerance: the largest absolute difference accepted, in nats per sequence.

    Returns:
        The largest absolute difference.

    Raises:
        ConfigError: the model's decoder does not support skipping its lower blocks.
    """

    full = causal_lm_logps(causal_lm, sequences)  # (S,)
    states = compute_prefix_states(causal_lm, sequences, blocks)  # (S, L, H)
    with skip_lower_blocks(causal_lm, blocks, states):
        cached = causal_lm_logps(causal_lm, sequences)  # (S,)
    difference = float((full - cached).abs().max())
    if not difference <= tolerance:
        raise ConfigError(
            f"{type(causal_lm).__name__}: log-probs from cached block-{blocks} states differ "
            f"from the full forward pass by {difference:.3g} nats (> {tolerance}); this model "
            "cannot reuse its lower blocks' states: set the prefix cache off ('all')"
        )
    return difference
