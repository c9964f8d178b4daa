"""FiLM conditioning of a causal LM's decoder blocks on a user latent (DESIGN.md §2).

After each conditioned block, ``h ← γ(z) ⊙ h + β(z)``. γ and β come from a
small MLP of z whose output layer starts at zero, with γ = 1 + Δγ, so a fresh
conditioner is exactly the identity. The latent is held by the conditioner
(``with film.conditioned(z): ...``) and read by forward hooks on the blocks,
so it applies to training forwards and to every step of ``generate()`` alike.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class FiLM(nn.Module):
    """γ(z), β(z) for one block: ``Linear(Z, F) → SiLU → Linear(F, 2H)``, identity at init."""

    def __init__(self, latent_dim: int, hidden_size: int, film_hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, film_hidden_dim),
            nn.SiLU(),
            nn.Linear(film_hidden_dim, 2 * hidden_size),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Z) -> γ (B, H) and β (B, H)."""
        delta_gamma, beta = self.net(z).chunk(2, dim=-1)  # (B, H) each
        return 1.0 + delta_gamma, beta


class FiLMConditioner(nn.Module):
    """One :class:`FiLM` per conditioned block, applied through forward hooks.

    Outside :meth:`conditioned` (or inside :meth:`disabled`) the hooks leave
    the blocks' outputs untouched.

    Args:
        blocks: the model's decoder blocks (e.g. ``model.model.layers``).
        layer_indices: which blocks to condition.
        latent_dim: Z.
        hidden_size: H, the blocks' output width.
        film_hidden_dim: width of each FiLM MLP.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        layer_indices: Sequence[int],
        latent_dim: int,
        hidden_size: int,
        film_hidden_dim: int,
    ) -> None:
        super().__init__()
        self.layer_indices = list(layer_indices)
        self.latent_dim = latent_dim
        self.films = nn.ModuleDict(
            {str(i): FiLM(latent_dim, hidden_size, film_hidden_dim) for i in self.layer_indices}
        )
        self._latent: torch.Tensor | None = None
        self._enabled = True
        self._handles = [
            blocks[i].register_forward_hook(self._make_hook(str(i))) for i in self.layer_indices
        ]

    def _make_hook(self, key: str):
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            z = self._latent
            if z is None or not self._enabled:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            if not isinstance(hidden, torch.Tensor):
                raise TypeError(
                    f"FiLM expects a decoder block to return a tensor or a tuple starting with "
                    f"one, got {type(output).__name__}"
                )
            if hidden.shape[0] != z.shape[0]:
                raise ValueError(
                    f"FiLM latent holds {z.shape[0]} sequences but decoder block {key} got "
                    f"{hidden.shape[0]}: give one z per sequence (num_return_sequences > 1 and "
                    "beam search are not supported with a latent)"
                )
            gamma, beta = self.films[key](z)  # (B, H) each
            gamma = gamma.to(hidden.dtype).unsqueeze(1)  # (B, 1, H)
            beta = beta.to(hidden.dtype).unsqueeze(1)  # (B, 1, H)
            modulated = gamma * hidden + beta  # (B, L, H)
            if isinstance(output, tuple):
                return (modulated, *output[1:])
            return modulated

        return hook

    @contextlib.contextmanager
    def conditioned(self, z: torch.Tensor) -> Iterator[None]:
        """Condition every forward pass in the block on ``z`` (B, Z), one row per sequence."""
        if z.dim() != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"FiLM latent must have shape (B, {self.latent_dim}), got {tuple(z.shape)}"
            )
        previous, self._latent = self._latent, z
        try:
            yield
        finally:
            self._latent = previous

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Switch FiLM off (blocks return their unmodulated output) within the block."""
        previous, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = previous

    @property
    def latent(self) -> torch.Tensor | None:
        """The latent held by :meth:`conditioned`, if any."""
        return self._latent

    @property
    def enabled(self) -> bool:
        """False inside :meth:`disabled`."""
        return self._enabled

    @property
    def active(self) -> bool:
        """Whether the next forward pass is modulated."""
        return self._latent is not None and self._enabled

    def remove_hooks(self) -> None:
        """Detach from the blocks (the model then runs unconditioned for good)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
