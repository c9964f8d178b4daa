"""The DPO loss (DESIGN.md §2), optionally with an NLL term on the chosen response."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOOutput:
    """Per-pair DPO loss and detached diagnostics.

    Attributes:
        loss: (P,) the value to minimise (the caller reduces): the DPO loss,
            plus ``nll_weight · chosen_nll`` when that weight is > 0.
        chosen_rewards: (P,) detached ``β·(log π(y_w) − log π_ref(y_w))``.
        rejected_rewards: (P,) detached ``β·(log π(y_l) − log π_ref(y_l))``.
        chosen_nll: (P,) detached per-token NLL of the chosen response,
            ``−log π(y_w) / |y_w|`` (:func:`chosen_nll`), or None when no token
            counts were given.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_nll: torch.Tensor | None = None

    @property
    def margins(self) -> torch.Tensor:
        """(P,) chosen minus rejected implicit reward."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        """(P,) 1.0 where the chosen response has the higher implicit reward."""
        return (self.margins > 0).float()


def chosen_nll(
    policy_chosen_logps: torch.Tensor, chosen_token_counts: torch.Tensor
) -> torch.Tensor:
    """Length-normalised negative log-likelihood of the chosen responses, per pair.

    ``NLL(y_w) = −log π(y_w) / |y_w|``, where ``log π(y_w)`` is summed over the
    response tokens (as in the DPO loss) and ``|y_w|`` is the number of those
    tokens: the mean per-token NLL, the NLL term of Pang et al. (2024),
    "Iterative Reasoning Preference Optimization" (arXiv:2404.19733, §2,
    the DPO+NLL loss; there the response is chain of thought + answer).

    Args:
        policy_chosen_logps: (P,) summed log π of y_w (gradients flow through).
        chosen_token_counts: (P,) number of response tokens of y_w (>= 1).

    Returns:
        (P,) per-token NLL (with gradients).

    Raises:
        ValueError: a count below 1 or a shape that differs from the log-probs'.
    """
    if chosen_token_counts.shape != policy_chosen_logps.shape:
        raise ValueError(
            f"chosen_token_counts of shape {tuple(chosen_token_counts.shape)} do not match the "
            f"log-probs' {tuple(policy_chosen_logps.shape)}"
        )
    if chosen_token_counts.numel() and bool((chosen_token_counts < 1).any()):
        raise ValueError("chosen_token_counts must be >= 1 (a chosen response has no tokens)")
    counts = chosen_token_counts.to(device=policy_chosen_logps.device)
    return -policy_chosen_logps / counts.to(policy_chosen_logps.dtype)  # (P,)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
    chosen_token_counts: torch.Tensor | None = None,
    nll_weight: float = 0.0,
) -> DPOOutput:
    """Direct preference optimisation loss per pair (DESIGN.md §2), optionally + NLL.

    ``loss = −log σ(β · [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])``
    with sequence log-probs summed over response tokens only; the reference
    log-probs are constants.

    With ``nll_weight = λ > 0`` (DPO+NLL, "RPO": Pang et al. 2024, Iterative
    Reasoning Preference Optimization, arXiv:2404.19733, §2) the loss is
    ``DPO + λ · (−log π(y_w) / |y_w|)``: the length-normalised NLL of the
    chosen response (:func:`chosen_nll`, ``|y_w|`` its response tokens) keeps
    the chosen side's likelihood from falling with the rejected one's. The
    paper writes ``NLL + α · DPO``; that is ``λ = 1/α`` with the loss scaled
    by α. ``λ = 0`` returns the DPO loss itself (nothing is added, so values
    and gradients are bit-identical to plain DPO).

    Args:
        policy_chosen_logps, policy_rejected_logps: (P,) log π of y_w and y_l.
        reference_chosen_logps, reference_rejected_logps: (P,) log π_ref of y_w and y_l.
        beta: β_dpo > 0, the strength of the implicit KL constraint.
        chosen_token_counts: (P,) number of response tokens of y_w, the ones
            summed in ``policy_chosen_logps`` (needed when ``nll_weight > 0``;
            when given, ``chosen_nll`` is reported).
        nll_weight: λ >= 0, the weight of the chosen response's NLL.

    Returns:
        A :class:`DPOOutput`.

    Raises:
        ValueError: ``beta <= 0``, a negative or non-finite ``nll_weight``, or
            ``nll_weight > 0`` without token counts.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not (math.isfinite(nll_weight) and nll_weight >= 0):
        raise ValueError(f"nll_weight must be a finite number >= 0, got {nll_weight}")
    if nll_weight > 0 and chosen_token_counts is None:
        raise ValueError("nll_weight > 0 needs chosen_token_counts")
    chosen_ratio = policy_chosen_logps - reference_chosen_logps.detach()  # (P,)
    rejected_ratio = policy_rejected_logps - reference_rejected_logps.detach()  # (P,)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))  # (P,)
    nll = None
    if chosen_token_counts is not None:
        nll = chosen_nll(policy_chosen_logps, chosen_token_counts)  # (P,)
        if nll_weight > 0:
            loss = loss + nll_weight * nll
    return DPOOutput(
        loss=loss,
        chosen_rewards=(beta * chosen_ratio).detach(),
        rejected_rewards=(beta * rejected_ratio).detach(),
        chosen_nll=None if nll is None else nll.detach(),
    )
