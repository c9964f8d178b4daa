"""Supervised fine-tuning (SFT) of the base policy on the data's responses, framework-free.

The warm start every DPO policy of the offline default begins from (issue
13): a pretrained chat model has never written the data's phrases (its
per-token NLL of the generated responses is ~3.3 nats), so DPO's few steps
can only push it *away* from the rejected style, not towards the chosen one.
SFT first teaches it the language of the responses — both styles, since
every episode's chosen responses follow a random user of the data — so that
the reference policy writes every style some of the time and DPO (and
NP-DPO's context) shifts the mixture. This is the usual SFT-then-DPO recipe
(Rafailov et al. 2023, §4: the reference is the SFT model).

The task runs in the one loop (:mod:`steerable_alignment.training.loop`): an
episode is ``num_targets`` train pairs and a user type; the loss is the
per-token NLL of the user's chosen response of each pair (no context, no
reference), averaged over the step's pairs. Validation: the same NLL on
fixed validation episodes, which selects the kept weights. Only the LoRA
adapters train; :func:`fine_tune` merges them into the base weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steerable_alignment.episodes.sampler import EvaluationEpisodes, TrainingEpisodes
from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy.dpo import chosen_nll
from steerable_alignment.policy.logps import response_token_counts
from steerable_alignment.policy.pairs import PolicyData, ReferenceLogps, pair_sequences
from steerable_alignment.recipes.policies import PolicyTask, PolicyTrainingConfig, _check_data
from steerable_alignment.runtime.devices import cuda_autocast
from steerable_alignment.training.loop import run

if TYPE_CHECKING:
    from steerable_alignment.policy.model import PolicyModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTConfig(PolicyTrainingConfig):
    """Hyper-parameters of the SFT run (``params:dpo.sft.training``).

    The loop's settings with SFT's defaults: no context (``max_context`` 0),
    ``num_targets`` responses per episode. ``beta`` and ``nll_weight`` are
    not read.
    """

    lr: float = 1e-3
    num_targets: int = 8
    min_context: int = 0
    max_context: int = 0
    val_context_sizes: tuple[int, ...] = (0,)
    eval_every: int = 25

    def validate(self, prefix: str = "training") -> None:
        super().validate(prefix)
        if self.max_context != 0:
            raise ConfigError(
                f"Parameter '{prefix}.max_context': SFT reads no context, must be 0, "
                f"got {self.max_context}"
            )


def _chosen(data: PolicyData, rows: torch.Tensor, objective: torch.Tensor) -> Any:
    """The chosen sequence of each (E, T) row under its episode's user, flattened."""
    choices = data.choices[rows, objective.unsqueeze(1)]  # (E, T)
    return pair_sequences(data.sequences, rows.flatten(), choices.flatten())


class SFTTask(PolicyTask):
    """Per-token NLL of the episode users' chosen responses: the loop's task for SFT."""

    def __init__(self, policy: PolicyModel, data: PolicyData, config: SFTConfig) -> None:
        super().__init__(policy, data, config, ReferenceLogps.empty(len(data)))
        self.name = "sft"
        self.stat_scale = {"chosen_nll": config.batch_episodes * config.num_targets}

    def start(self, val_episodes: EvaluationEpisodes) -> str:
        self.policy.train()
        return ""

    def prepare(self, episodes: TrainingEpisodes) -> None:
        return None

    def loss(self, episodes: TrainingEpisodes, total: int) -> tuple[torch.Tensor, dict[str, Any]]:
        sequences = _chosen(self.data, episodes.rows, episodes.objective).to(self.device)
        nll = chosen_nll(self.policy.sequence_logps(sequences), response_token_counts(sequences))
        loss = nll.float().sum() / (total * self.config.num_targets)
        return loss, {"loss": float(loss.detach()), "chosen_nll": float(nll.detach().sum())}

    @torch.no_grad()
    def validate(self, episodes: EvaluationEpisodes) -> dict[str, float]:
        self.policy.eval()
        sequences = _chosen(self.data, episodes.rows, episodes.objective)
        size, total = self.config.batch_size, 0.0
        with cuda_autocast(self.device, self.dtype):
            for start in range(0, len(sequences), size):
                index = torch.arange(start, min(start + size, len(sequences)))
                batch = sequences.select(index).to(self.device)
                nll = chosen_nll(self.policy.sequence_logps(batch), response_token_counts(batch))
                total += float(nll.double().sum())
        self.policy.train()
        return {"val_chosen_nll": total / max(len(sequences), 1)}

    def selection_score(self, scores: Mapping[str, float]) -> float:
        return scores["val_chosen_nll"]


@dataclass
class SFTResult:
    """The fine-tuned base model (LoRA merged in) and the run's history.

    Attributes:
        model: the base causal LM with the best validation weights merged in.
        history: one dict per validation (step, train_loss, train_chosen_nll,
            val_chosen_nll, lr, seconds).
        best_step: the step whose weights were kept.
    """

    model: Any
    history: list[dict[str, float]]
    best_step: int


def fine_tune(policy: PolicyModel, data: PolicyData, config: SFTConfig) -> SFTResult:
    """Fine-tune ``policy``'s LoRA adapters on the chosen responses, then merge them.

    Args:
        policy: a fresh LoRA-only (``btl_dpo``) :class:`PolicyModel` around the
            base model to fine-tune (its base weights are replaced by the merge).
        data: the tokenised pairs, choices and splits (train and validation).
        config: the run's settings.

    Returns:
        The merged base model (adapters gone, the same architecture as before)
        and the history.

    Raises:
        ConfigError: a policy that reads context, or a split too small.
    """
    if policy.config.uses_context:
        raise ConfigError(
            f"SFT trains a LoRA-only policy (type btl_dpo), got {policy.config.type!r}"
        )
    _check_data(policy, data, config)
    result = run(SFTTask(policy, data, config), config)
    model = policy.lm.merge_and_unload()
    model.eval()
    return SFTResult(model, result.history, result.best_step)
