"""The DPO loss (DESIGN.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOOutput:
    """Per-pair DPO loss and detached diagnostics.

    Attributes:
        loss: (P,) the value to minimise (the caller reduces).
        chosen_rewards: (P,) detached ``β·(log π(y_w) − log π_ref(y_w))``.
        rejected_rewards: (P,) detached ``β·(log π(y_l) − log π_ref(y_l))``.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        """(P,) chosen minus rejected implicit reward."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        """(P,) 1.0 where the chosen response has the higher implicit reward."""
        return (self.margins > 0).float()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> DPOOutput:
    """Direct preference optimisation loss per pair (DESIGN.md §2).

    ``loss = −log σ(β · [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])``
    with sequence log-probs summed over response tokens only; the reference
    log-probs are constants.

    Args:
        policy_chosen_logps, policy_rejected_logps: (P,) log π of y_w and y_l.
        reference_chosen_logps, reference_rejected_logps: (P,) log π_ref of y_w and y_l.
        beta: β_dpo > 0, the strength of the implicit KL constraint.

    Returns:
        A :class:`DPOOutput`.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_ratio = policy_chosen_logps - reference_chosen_logps.detach()  # (P,)
    rejected_ratio = policy_rejected_logps - reference_rejected_logps.detach()  # (P,)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return DPOOutput(
        loss=loss,
        chosen_rewards=(beta * chosen_ratio).detach(),
        rejected_rewards=(beta * rejected_ratio).detach(),
    )
