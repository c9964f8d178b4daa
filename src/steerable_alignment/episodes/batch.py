"""The episode batch every preference model consumes (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class EpisodeBatch:
    """A batch of B episodes: a user's context pairs and target pairs.

    Glossary: B episodes, N context slots, T target pairs, D feature size.

    Attributes:
        context_features: (B, N, 2, D) options a/b of each context pair.
        context_choices: (B, N) long, 1 = option b preferred.
        context_mask: (B, N) bool, True where the slot holds a real pair.
        target_features: (B, T, 2, D) options of each target pair.
        target_choices: (B, T) long, 1 = option b preferred.
        target_mask: (B, T) bool, True where the target is scored.
        objective: (B,) long, index of the episode's user type.
    """

    context_features: torch.Tensor
    context_choices: torch.Tensor
    context_mask: torch.Tensor
    target_features: torch.Tensor
    target_choices: torch.Tensor
    target_mask: torch.Tensor
    objective: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.target_features.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EpisodeBatch:
        """Move every tensor to ``device``; cast the feature tensors to ``dtype``."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if dtype is not None and value.is_floating_point():
                value = value.to(device=device, dtype=dtype)
            else:
                value = value.to(device)
            moved[field.name] = value
        return EpisodeBatch(**moved)
