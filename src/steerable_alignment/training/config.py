"""The settings every training run shares, checked once (``params:<variant>.training``).

:class:`LoopConfig` holds what the loop itself reads (steps, episodes,
optimiser, schedule, validation cadence, checkpoints, device); a model's
config (:class:`~steerable_alignment.recipes.reward_models.TrainingConfig`,
:class:`~steerable_alignment.recipes.policies.PolicyTrainingConfig`)
subclasses it with its own defaults and fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from steerable_alignment.models.config import ConfigError, config_from_params
from steerable_alignment.runtime.devices import DTYPES

LR_SCHEDULES = ("constant", "cosine")
#: Settings that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = (
    "progress",
    "num_threads",
    "checkpoint_dir",
    "checkpoint_every",
    "keep_checkpoints",
)


@dataclass(frozen=True)
class LoopConfig:
    """Hyper-parameters of one training run that the loop reads.

    Attributes:
        objectives: user types episodes are drawn from (None: all of the data's).
        max_steps: optimiser steps.
        batch_episodes: B, episodes per optimiser step.
        grad_accum_steps: micro-batches per step and process (B must be a
            multiple); the gradients add up to those of the whole step.
        num_targets: T, target pairs per episode.
        min_context, max_context: range of the context size (context ⊆ targets).
        lr, weight_decay, betas: AdamW settings.
        lr_schedule: ``constant`` or ``cosine`` (decay to ``min_lr_ratio``·lr).
        warmup_steps: linear warm-up steps.
        grad_clip: max gradient norm (None: no clipping).
        eval_every: validate every this many steps (and at the last step).
        val_episodes_per_objective: size of the fixed validation set per objective.
        val_context_sizes: context sizes averaged in the validation score
            (targets are never in the context).
        checkpoint_every: write a resumable checkpoint every this many steps
            (and at the last step); 0 turns checkpoints off.
        checkpoint_dir: where checkpoints go; a run started with a folder that
            holds checkpoints resumes from the last one (None: no checkpoints).
        keep_checkpoints: how many of the latest checkpoints to keep.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32``, ``bfloat16`` or ``float16`` (autocast; where it
            applies is the model's choice).
        num_threads: torch intra-op threads on the CPU (None: leave as is).
        seed: seeds initialisation-free randomness: episodes, validation
            episodes, dropout and latent samples.
        progress: show a progress bar.
    """

    #: Fields added after checkpoints were first written, with the value that
    #: reproduces older runs: left out of the signature at that value.
    SIGNATURE_DEFAULTS: ClassVar[dict[str, Any]] = {"grad_accum_steps": 1}
    #: Fields given as lists in the parameters, kept as tuples.
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("objectives", "betas", "val_context_sizes")

    objectives: tuple[str, ...] | None = None
    max_steps: int = 100
    batch_episodes: int = 2
    grad_accum_steps: int = 1
    num_targets: int = 11
    min_context: int = 0
    max_context: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    eval_every: int = 50
    val_episodes_per_objective: int = 8
    val_context_sizes: tuple[int, ...] = (0, 3, 10)
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 1
    device: str = "auto"
    dtype: str = "float32"
    num_threads: int | None = None
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str = "training") -> Any:
        """Build and validate from a parameters mapping.

        Raises:
            ConfigError: naming the offending parameter.
        """
        return config_from_params(cls, params, prefix, cls.TUPLE_FIELDS)

    def validate(self, prefix: str = "training") -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(f"Parameter '{prefix}.{key}': {message}")

        positive = ["max_steps", "batch_episodes", "grad_accum_steps", "num_targets"]
        positive += ["eval_every", "val_episodes_per_objective", "keep_checkpoints"]
        for key in positive:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise fail(key, f"must be a positive integer, got {value!r}")
        if self.batch_episodes % self.grad_accum_steps:
            raise fail(
                "grad_accum_steps",
                f"must divide batch_episodes ({self.batch_episodes}), got {self.grad_accum_steps}",
            )
        if not 0 <= self.min_context <= self.max_context:
            raise fail("min_context", f"must be in [0, max_context={self.max_context}]")
        if self.max_context >= self.num_targets:
            raise fail(
                "max_context",
                f"must be smaller than num_targets ({self.num_targets}) because the context is "
                f"drawn from the targets, got {self.max_context}",
            )
        if not self.val_context_sizes or any(
            n < 0 or n > self.max_context for n in self.val_context_sizes
        ):
            raise fail("val_context_sizes", f"each must be in [0, max_context={self.max_context}]")
        if not self.lr > 0:
            raise fail("lr", f"must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise fail("lr_schedule", f"expected one of {list(LR_SCHEDULES)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise fail("grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        if self.checkpoint_every < 0:
            raise fail("checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise fail("checkpoint_dir", "is needed when checkpoint_every > 0")
        if self.dtype not in DTYPES:
            raise fail("dtype", f"expected one of {list(DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise fail("device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def signature(self) -> dict[str, Any]:
        """The settings a resumed run must share (resumable ones and later defaults left out)."""
        defaults = self.SIGNATURE_DEFAULTS
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in RESUMABLE_CHANGES and not (k in defaults and v == defaults[k])
        }


def lr_factor(config: LoopConfig, step: int) -> float:
    """The learning-rate multiplier at ``step`` (linear warm-up, then constant or cosine)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine
