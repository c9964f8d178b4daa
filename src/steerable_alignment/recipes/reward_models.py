"""Training a preference (reward) model with the one loop (``training/loop.py``).

The task: episodes gather feature pairs (:meth:`TrainingEpisodes.batch`);
the loss is the model's own (choice NLL, plus the KL for a latent model)
averaged over episodes; validation reports the choice NLL and accuracy on
the fixed validation episodes averaged over ``val_context_sizes``, and
``select_by`` picks which of the two keeps the weights. Everything is
trainable; the whole state dict is the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerable_alignment.episodes.sampler import (
    EvaluationEpisodes,
    PreferenceData,
    TrainingEpisodes,
)
from steerable_alignment.episodes.scoring import predict_episodes, summarise, target_choices
from steerable_alignment.models.config import ConfigError
from steerable_alignment.runtime.devices import autocast
from steerable_alignment.training import checkpointing
from steerable_alignment.training.config import LoopConfig
from steerable_alignment.training.loop import check_split_sizes, run

SELECT_BY = ("nll", "accuracy")


@dataclass(frozen=True)
class TrainingConfig(LoopConfig):
    """Hyper-parameters of one reward model's training (``params:<variant>.training``).

    The loop's settings (:class:`LoopConfig`) with the reward models' defaults, and:

    Attributes:
        select_by: keep the weights with the best validation ``nll`` (lowest)
            or ``accuracy`` (highest; ties keep the earlier step).

    ``dtype`` autocasts on any device (bf16 works on the CPU too).
    """

    max_steps: int = 3000
    batch_episodes: int = 64
    num_targets: int = 20
    lr: float = 1e-4
    eval_every: int = 500
    val_episodes_per_objective: int = 256
    val_context_sizes: tuple[int, ...] = (0, 1, 3, 5, 10)
    select_by: str = "nll"

    def validate(self, prefix: str = "training") -> None:
        super().validate(prefix)
        if self.select_by not in SELECT_BY:
            raise ConfigError(
                f"Parameter '{prefix}.select_by': expected one of {list(SELECT_BY)}, "
                f"got {self.select_by!r}"
            )


@dataclass
class TrainingResult:
    """The trained model (best validation weights) and its history.

    Attributes:
        model: the model with the best validation weights loaded.
        history: one dict per validation (step, train_loss, val_nll, val_accuracy, lr, seconds).
        best_step: the step whose weights were kept.
        resumed_from: the step a checkpoint resumed from (0: a fresh run).
    """

    model: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    resumed_from: int = 0


def validate_model(
    model: torch.nn.Module,
    data: PreferenceData,
    episodes: Any,
    context_sizes: tuple[int, ...],
    dtype: torch.dtype,
) -> tuple[float, float]:
    """Mean NLL and accuracy over ``context_sizes`` on fixed episodes."""
    choices = target_choices(data, episodes)
    device = data.features.device
    nll, acc = [], []
    with autocast(device, dtype):
        for n in context_sizes:
            scores = summarise(predict_episodes(model, data, episodes, n), choices)
            nll.append(scores["nll"])
            acc.append(scores["accuracy"])
    return sum(nll) / len(nll), sum(acc) / len(acc)


class RewardModelTask:
    """A reward model on feature pairs: the loop's :class:`~.loop.TrainingTask` for it."""

    stat_scale: Mapping[str, float] = {}

    def __init__(
        self,
        model: torch.nn.Module,
        data: PreferenceData,
        train_rows: torch.Tensor,
        val_rows: torch.Tensor,
        config: TrainingConfig,
    ) -> None:
        self.model, self.data, self.config = model, data, config
        self.name = type(model).__name__
        self.train_rows, self.val_rows = train_rows, val_rows
        self.objective_ids = data.objective_ids(config.objectives or data.objectives)
        self.sample_device = data.features.device

    def setup(self, device: torch.device, dtype: torch.dtype) -> None:
        self._signature = self._make_signature() if self.config.checkpoint_dir else {}
        self.data = self.data.to(device)
        self.model = self.model.to(device)
        self.device, self.dtype = device, dtype
        self.sample_device = device

    def _make_signature(self) -> dict[str, Any]:
        import dataclasses

        model_config = getattr(self.model, "config", None)
        data = self.data
        return {
            "model": {
                "class": type(self.model).__name__,
                "config": dataclasses.asdict(model_config)
                if dataclasses.is_dataclass(model_config)
                else None,
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "data": {
                "pairs": int(data.features.shape[0]),
                "objectives": list(data.objectives),
                "digest": checkpointing.tensor_digest(
                    (data.features, data.choices, self.train_rows, self.val_rows)
                ),
            },
        }

    def signature(self) -> dict[str, Any]:
        return self._signature

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters())}]

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def start(self, val_episodes: EvaluationEpisodes) -> str:
        return ""

    def prepare(self, episodes: TrainingEpisodes) -> None:
        """Nothing: the features are already on the device."""

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.dtype)

    def loss(self, episodes: TrainingEpisodes, total: int) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = episodes.batch(self.data, self.config.max_context)
        per_episode = self.model.loss(batch).loss  # (b,)
        loss = per_episode.mean() * (len(episodes) / total)  # x 1.0 for a whole step
        return loss, {"loss": loss.detach()}

    def validate(self, episodes: EvaluationEpisodes) -> dict[str, float]:
        nll, accuracy = validate_model(
            self.model, self.data, episodes, self.config.val_context_sizes, self.dtype
        )
        return {"val_nll": nll, "val_accuracy": accuracy}

    def selection_score(self, scores: Mapping[str, float]) -> float:
        if self.config.select_by == "nll":
            return scores["val_nll"]
        return -scores["val_accuracy"]

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return checkpointing.with_prefix("model.", self.model.state_dict())

    def load_state(self, tensors: Mapping[str, torch.Tensor], folder: Path) -> None:
        self.model.load_state_dict(checkpointing.strip_prefix("model.", tensors))

    def write_extra(self, folder: Path) -> None:
        """Nothing beyond the tensors."""


def train(
    model: torch.nn.Module,
    data: PreferenceData,
    train_rows: torch.Tensor,
    val_rows: torch.Tensor,
    config: TrainingConfig,
) -> TrainingResult:
    """Train ``model`` on episodes of ``train_rows``, select on ``val_rows``.

    Args:
        model: a preference model with ``loss(batch) -> LossOutput``.
        data: all pairs as tensors (any device; moved to the config's device).
        train_rows, val_rows: (P,) long row indices of the two splits.
        config: the training configuration.

    Returns:
        The model holding its best validation weights, and the history.

    Raises:
        ConfigError: a split too small for an episode, or a checkpoint in
            ``config.checkpoint_dir`` made with another configuration, model
            or data.
    """
    check_split_sizes(config, {"train": len(train_rows), "validation": len(val_rows)})
    task = RewardModelTask(model, data, train_rows, val_rows, config)
    result = run(task, config)
    return TrainingResult(task.model, result.history, result.best_step, result.resumed_from)
