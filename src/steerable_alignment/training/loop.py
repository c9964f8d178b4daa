"""The one training loop shared by every preference model.

AdamW on batches of fresh episodes, validation on a fixed seeded set of
validation episodes every ``eval_every`` steps, the best-by-validation
weights kept as the checkpoint, a progress bar, device and dtype from the
config, deterministic from a seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerable_alignment.episodes.sampler import (
    PreferenceData,
    TrainingEpisodeSampler,
    make_evaluation_episodes,
)
from steerable_alignment.evaluation.metrics import predict_episodes, summarise, target_choices
from steerable_alignment.models.config import ConfigError

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LR_SCHEDULES = ("constant", "cosine")
SELECT_BY = ("nll", "accuracy")


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

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str = "training") -> TrainingConfig:
        """Build and validate from a parameters mapping.

        Raises:
            ConfigError: naming the offending parameter.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"Parameter '{prefix}' has unknown key(s) {unknown}; valid keys: {sorted(known)}"
            )
        values = dict(params)
        for key in ("objectives", "betas", "val_context_sizes"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        config = cls(**values)
        config.validate(prefix)
        return config

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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Parameter 'device' is {name!r} but CUDA is not available here")
    return device


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the outer state after."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    """

    model: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0


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
    with _autocast(device, dtype):
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
            raise ConfigError(
                f"Parameters 'training.num_targets'/'training.max_context': an episode needs "
                f"{needed[split]} distinct pairs but the {split} split has {len(rows)}"
            )
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
    result = TrainingResult(model=model)
    best_score = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    running = torch.zeros((), device=device)
    started = time.perf_counter()
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
        bar = tqdm(
            range(1, config.max_steps + 1),
            desc=f"train {type(model).__name__}",
            disable=not config.progress,
            mininterval=2.0,
        )
        for step in bar:
            batch = sampler.sample(config.batch_episodes)
            with _autocast(device, dtype):
                loss = model.loss(batch).loss.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            scheduler.step()
            running += loss.detach()
            if step % config.eval_every == 0 or step == config.max_steps:
                since = step - (result.history[-1]["step"] if result.history else 0)
                train_loss = float(running) / since
                running.zero_()
                val_nll, val_acc = validate_model(
                    model, data, val_episodes, config.val_context_sizes, dtype
                )
                score = val_nll if config.select_by == "nll" else -val_acc
                if score < best_score:
                    best_score, result.best_step = score, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                result.history.append(
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
    if best_state is not None:
        model.load_state_dict(best_state)
    logger.info(
        "Kept the weights of step %d (best validation %s)", result.best_step, config.select_by
    )
    return result
