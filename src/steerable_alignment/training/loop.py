"""The one training loop shared by every preference model.

AdamW on batches of fresh episodes, validation on a fixed seeded set of
validation episodes every ``eval_every`` steps, the best-by-validation
weights kept as the checkpoint, a progress bar, device and dtype from the
config, deterministic from a seed.

Optionally (``checkpoint_dir`` and ``checkpoint_every``), a resumable
checkpoint every ``checkpoint_every`` steps (and at the last step): the
model, optimiser, scheduler, RNG and episode-sampler states, the running
train loss, the best weights so far and the history, written atomically as
safetensors + JSON (:mod:`steerable_alignment.training.checkpointing`). A run
started again with the same configuration, model and data resumes from the
last checkpoint and ends exactly as an uninterrupted run would; a checkpoint
of another run is refused, naming the differing keys.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steerable_alignment.episodes.sampler import (
    PreferenceData,
    TrainingEpisodeSampler,
    make_evaluation_episodes,
)
from steerable_alignment.episodes.scoring import predict_episodes, summarise, target_choices
from steerable_alignment.episodes.sizes import too_small_hint
from steerable_alignment.models.config import ConfigError, config_from_params
from steerable_alignment.runtime.devices import DTYPES, autocast, resolve_device, seeded
from steerable_alignment.training import checkpointing

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")
SELECT_BY = ("nll", "accuracy")
#: Settings that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = (
    "progress",
    "num_threads",
    "checkpoint_dir",
    "checkpoint_every",
    "keep_checkpoints",
)


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one training run (``params:<variant>.training``).

    Attributes:
        objectives: user types episodes are drawn from (None: all of the data's).
        max_steps: optimiser steps.
        batch_episodes: B, episodes per step.
        num_targets: T, target pairs per episode.
        min_context, max_context: range of the context size (context ⊆ targets).
        lr, weight_decay, betas: AdamW settings.
        lr_schedule: ``constant`` or ``cosine`` (decay to ``min_lr_ratio``·lr).
        warmup_steps: linear warm-up steps.
        grad_clip: max gradient norm (None: no clipping).
        eval_every: validate every this many steps (and at the end).
        val_episodes_per_objective: size of the fixed validation set per objective.
        val_context_sizes: context sizes averaged in the validation score.
        select_by: keep the weights with the best validation ``nll`` (lowest)
            or ``accuracy`` (highest; ties keep the earlier step).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32``, ``bfloat16`` or ``float16`` (autocast on accelerators).
        num_threads: torch intra-op threads on the CPU (None: leave as is).
        seed: seeds initialisation, episodes and latent samples.
        progress: show a progress bar.
        checkpoint_every: write a resumable checkpoint every this many steps
            (and at the last step); 0 (default) turns checkpoints off.
        checkpoint_dir: where checkpoints go; a run started with a folder that
            holds checkpoints resumes from the last one (None: no checkpoints).
        keep_checkpoints: how many of the latest checkpoints to keep.
    """

    objectives: tuple[str, ...] | None = None
    max_steps: int = 3000
    batch_episodes: int = 64
    num_targets: int = 20
    min_context: int = 0
    max_context: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    eval_every: int = 500
    val_episodes_per_objective: int = 256
    val_context_sizes: tuple[int, ...] = (0, 1, 3, 5, 10)
    select_by: str = "nll"
    device: str = "auto"
    dtype: str = "float32"
    num_threads: int | None = None
    seed: int = 0
    progress: bool = True
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str = "training") -> TrainingConfig:
        """Build and validate from a parameters mapping.

        Raises:
            ConfigError: naming the offending parameter.
        """
        return config_from_params(cls, params, prefix, ("objectives", "betas", "val_context_sizes"))

    def validate(self, prefix: str = "training") -> None:
        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(f"Parameter '{prefix}.{key}': {message}")

        for key in ("max_steps", "batch_episodes", "num_targets", "eval_every"):
            if getattr(self, key) <= 0:
                raise fail(key, f"must be a positive integer, got {getattr(self, key)}")
        if self.min_context < 0 or self.min_context > self.max_context:
            raise fail("min_context", f"must be in [0, max_context={self.max_context}]")
        if self.max_context >= self.num_targets:
            raise fail(
                "max_context",
                f"must be smaller than num_targets ({self.num_targets}) because the "
                f"context is drawn from the targets, got {self.max_context}",
            )
        if any(n < 0 or n > self.max_context for n in self.val_context_sizes):
            raise fail("val_context_sizes", f"each must be in [0, max_context={self.max_context}]")
        if self.lr <= 0:
            raise fail("lr", f"must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise fail("lr_schedule", f"expected one of {list(LR_SCHEDULES)}")
        if self.select_by not in SELECT_BY:
            raise fail("select_by", f"expected one of {list(SELECT_BY)}, got {self.select_by!r}")
        if self.dtype not in DTYPES:
            raise fail("dtype", f"expected one of {list(DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise fail("device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.val_episodes_per_objective <= 0:
            raise fail("val_episodes_per_objective", "must be a positive integer")
        if self.checkpoint_every < 0:
            raise fail("checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise fail("checkpoint_dir", "is needed when checkpoint_every > 0")
        if self.keep_checkpoints <= 0:
            raise fail(
                "keep_checkpoints", f"must be a positive integer, got {self.keep_checkpoints}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def _lr_factor(config: TrainingConfig, step: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


@dataclass
class TrainingResult:
    """The trained model (best validation weights) and its history.

    Attributes:
        model: the model with the best validation weights loaded.
        history: one dict per validation (step, train_loss, val_nll, val_accuracy, seconds).
        best_step: the step whose weights were kept.
        resumed_from: the step a checkpoint resumed from (0: a fresh run).
    """

    model: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    resumed_from: int = 0


@dataclass
class _LoopState:
    """Everything besides the model, optimiser, scheduler and RNGs that a resumed run needs."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_score: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0


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
    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    if config.num_threads is not None and device.type == "cpu":
        torch.set_num_threads(config.num_threads)
    objectives = config.objectives or data.objectives
    objective_ids = data.objective_ids(objectives)
    needed = {"train": config.num_targets, "validation": config.max_context + config.num_targets}
    for split, rows in (("train", train_rows), ("validation", val_rows)):
        if len(rows) < needed[split]:
            hint = too_small_hint(
                len(rows),
                config.max_context,
                config.num_targets,
                context_in_targets=split == "train",
            )
            raise ConfigError(
                f"Parameters 'training.num_targets'/'training.max_context': an episode needs "
                f"{needed[split]} distinct pairs but the {split} split has {len(rows)}{hint}"
            )
    checkpoints = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    signature = _signature(config, model, data, train_rows, val_rows) if checkpoints else {}
    data = data.to(device)
    model = model.to(device)
    sampler = TrainingEpisodeSampler(
        data,
        train_rows,
        objective_ids,
        config.num_targets,
        config.min_context,
        config.max_context,
        seed=config.seed,
    )
    val_episodes = make_evaluation_episodes(
        val_rows,
        objective_ids,
        config.val_episodes_per_objective,
        config.num_targets,
        config.max_context,
        seed=config.seed + 1,
    )
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(config, step))
    state = _LoopState()
    running = torch.zeros((), device=device)  # train loss summed since the last validation
    rng_state: dict[str, torch.Tensor] | None = None
    latest = checkpointing.latest_checkpoint(checkpoints) if checkpoints else None
    if latest is not None:
        state, rng_state = _load_checkpoint(
            latest, signature, model, optimiser, scheduler, sampler, running, device
        )
        logger.info("Resuming from %s (step %d of %d)", latest, state.step, config.max_steps)
    resumed_from = state.step
    started = time.perf_counter() - state.seconds
    logger.info(
        "Training %s for %d steps on %s (%s), %d episodes x %d targets per step",
        type(model).__name__,
        config.max_steps,
        device,
        config.dtype,
        config.batch_episodes,
        config.num_targets,
    )
    with seeded(config.seed + 2, device):
        if rng_state is not None:
            checkpointing.set_rng_state(rng_state, device)
        bar = tqdm(
            range(state.step + 1, config.max_steps + 1),
            desc=f"train {type(model).__name__}",
            initial=state.step,
            total=config.max_steps,
            disable=not config.progress,
            mininterval=2.0,
        )
        for step in bar:
            batch = sampler.sample(config.batch_episodes)
            with autocast(device, dtype):
                loss = model.loss(batch).loss.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            scheduler.step()
            running += loss.detach()
            state.step = step
            if step % config.eval_every == 0 or step == config.max_steps:
                since = step - (state.history[-1]["step"] if state.history else 0)
                train_loss = float(running) / since
                running.zero_()
                val_nll, val_acc = validate_model(
                    model, data, val_episodes, config.val_context_sizes, dtype
                )
                score = val_nll if config.select_by == "nll" else -val_acc
                if score < state.best_score:
                    state.best_score, state.best_step = score, step
                    state.best_state = {
                        k: v.detach().clone() for k, v in model.state_dict().items()
                    }
                state.history.append(
                    {
                        "step": step,
                        "train_loss": train_loss,
                        "val_nll": val_nll,
                        "val_accuracy": val_acc,
                        "lr": optimiser.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - started,
                    }
                )
                bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val_acc:.4f}")
                logger.info(
                    "step %d: train loss %.4f, val nll %.4f, val accuracy %.4f",
                    step,
                    train_loss,
                    val_nll,
                    val_acc,
                )
            if (
                checkpoints is not None
                and config.checkpoint_every
                and (step % config.checkpoint_every == 0 or step == config.max_steps)
            ):
                state.seconds = time.perf_counter() - started
                _save_checkpoint(
                    checkpoints,
                    config,
                    signature,
                    state,
                    model,
                    optimiser,
                    scheduler,
                    sampler,
                    running,
                    device,
                )
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    logger.info(
        "Kept the weights of step %d (best validation %s)", state.best_step, config.select_by
    )
    return TrainingResult(model, state.history, state.best_step, resumed_from)


# -- checkpoints --------------------------------------------------------------------------------


def _signature(
    config: TrainingConfig,
    model: torch.nn.Module,
    data: PreferenceData,
    train_rows: torch.Tensor,
    val_rows: torch.Tensor,
) -> dict[str, Any]:
    """What must not change between a run and its resumption: configs, model, data."""
    model_config = getattr(model, "config", None)
    return {
        "training": {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES},
        "model": {
            "class": type(model).__name__,
            "config": dataclasses.asdict(model_config)
            if dataclasses.is_dataclass(model_config)
            else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "data": {
            "pairs": int(data.features.shape[0]),
            "objectives": list(data.objectives),
            "digest": checkpointing.tensor_digest(
                (data.features, data.choices, train_rows, val_rows)
            ),
        },
    }


def _save_checkpoint(
    directory: Path,
    config: TrainingConfig,
    signature: dict[str, Any],
    state: _LoopState,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    sampler: TrainingEpisodeSampler,
    running: torch.Tensor,
    device: torch.device,
) -> Path:
    optimiser_tensors, param_groups = checkpointing.optimizer_tensors(optimiser)
    tensors = {
        **checkpointing.with_prefix("model.", model.state_dict()),
        **checkpointing.with_prefix("best.", state.best_state or {}),
        **checkpointing.with_prefix("rng.", checkpointing.rng_tensors(device)),
        **optimiser_tensors,
        "sampler.generator": sampler.generator.get_state(),
        "running_loss": running,
    }
    meta = {
        "signature": signature,
        "history": state.history,
        "best_step": state.best_step,
        "best_score": state.best_score if math.isfinite(state.best_score) else None,
        "has_best_state": state.best_state is not None,
        "seconds": state.seconds,
        "optimizer_param_groups": param_groups,
        "scheduler": scheduler.state_dict(),
    }
    return checkpointing.write_checkpoint(
        directory, state.step, tensors, meta, keep=config.keep_checkpoints
    )


def _load_checkpoint(
    path: Path,
    signature: dict[str, Any],
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    sampler: TrainingEpisodeSampler,
    running: torch.Tensor,
    device: torch.device,
) -> tuple[_LoopState, dict[str, torch.Tensor]]:
    """Restore what :func:`_save_checkpoint` wrote; returns the loop state and the RNG states.

    Raises:
        ConfigError: the checkpoint was made with another configuration, model or data.
    """
    meta, tensors = checkpointing.read_checkpoint(path, signature)
    model.load_state_dict(checkpointing.strip_prefix("model.", tensors))
    checkpointing.load_optimizer(optimiser, tensors, meta["optimizer_param_groups"])
    scheduler.load_state_dict(meta["scheduler"])
    sampler.generator.set_state(tensors["sampler.generator"])
    running.copy_(tensors["running_loss"])
    best = {k: v.to(device) for k, v in checkpointing.strip_prefix("best.", tensors).items()}
    state = _LoopState(
        step=int(meta["step"]),
        history=meta["history"],
        best_step=int(meta["best_step"]),
        best_score=math.inf if meta["best_score"] is None else float(meta["best_score"]),
        best_state=best if meta["has_best_state"] else None,
        seconds=float(meta["seconds"]),
    )
    return state, checkpointing.strip_prefix("rng.", tensors)
