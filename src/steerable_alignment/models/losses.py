"""Losses and likelihoods of the preference models (DESIGN.md §2).

Functions return per-example values; the caller reduces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def btl_log_probs(reward_a: torch.Tensor, reward_b: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry-Luce choice log-probabilities.

    ``P(b ≻ a) = σ(r_b − r_a)``.

    Args:
        reward_a, reward_b: (...,) rewards of the two options.

    Returns:
        (..., 2) log-probabilities of choice 0 (a preferred) and 1 (b preferred).
    """
    margin = reward_b - reward_a
    return torch.stack([F.logsigmoid(-margin), F.logsigmoid(margin)], dim=-1)


def dpl_log_probs(
    mean_a: torch.Tensor, std_a: torch.Tensor, mean_b: torch.Tensor, std_b: torch.Tensor
) -> torch.Tensor:
    """Mean–variance distributional preference learning likelihood.

    With independent Gaussian utilities ``u ~ N(μ, s²)``:
    ``P(b ≻ a) = Φ((μ_b − μ_a) / sqrt(s_a² + s_b²))``, evaluated with
    ``log_ndtr`` so that confident predictions keep finite gradients.

    The probit is computed in float32 outside any autocast region, whatever
    the inputs' dtype: ``log_ndtr`` has no bfloat16 kernel on CPU, and in
    bfloat16 its tail would lose the precision the loss needs.

    Returns:
        (..., 2) float32 (or float64, for float64 inputs) log-probabilities of
        choice 0 and choice 1.
    """
    dtype = torch.promote_types(mean_a.dtype, torch.float32)
    with torch.autocast(device_type=mean_a.device.type, enabled=False):
        mean_a, std_a, mean_b, std_b = (t.to(dtype) for t in (mean_a, std_a, mean_b, std_b))
        z = (mean_b - mean_a) / torch.sqrt(std_a.square() + std_b.square())
        return torch.stack([torch.special.log_ndtr(-z), torch.special.log_ndtr(z)], dim=-1)


def choice_nll(log_probs: torch.Tensor, choices: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the observed choices per episode.

    Args:
        log_probs: (B, T, 2) log-probabilities of choice 0 / 1.
        choices: (B, T) long in {0, 1}.
        mask: (B, T) bool, the targets that count.

    Returns:
        (B,) mean NLL over each episode's counted targets (0 where none count).
    """
    nll = -log_probs.gather(-1, choices.unsqueeze(-1)).squeeze(-1)  # (B, T)
    weights = mask.to(nll.dtype)
    return (nll * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def gaussian_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mean_q, std_q²) ‖ N(mean_p, std_p²))`` of diagonal Gaussians.

    Args:
        mean_q, std_q, mean_p, std_p: (B, Z).

    Returns:
        (B,) KL divergence summed over the Z dimensions.
    """
    var_ratio = (std_q / std_p).square()
    mean_term = ((mean_q - mean_p) / std_p).square()
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log()).sum(-1)
