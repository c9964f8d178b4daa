"""A small, equal-budget hyper-parameter sweep chosen on the validation split.

Every compared model of a data set gets the same candidate schedules
(:func:`candidate_grid`) and is judged by the same validation criterion;
the test split is never read here. Each candidate is one training run whose
checkpoint is itself chosen on validation (``select_by``), so a candidate's
score is the best validation score its run reached.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerable_alignment.episodes.sampler import PreferenceData
from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.recipes.reward_models import TrainingConfig, train
from steerable_alignment.runtime.devices import seeded

# Keys of ``training`` a sweep may vary; the rest stays as configured.
SWEEPABLE = ("lr", "max_steps", "lr_schedule", "weight_decay", "warmup_steps")


def candidate_grid(grid: Mapping[str, Sequence[Any]], evals_per_run: int) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as ``training`` overrides.

    ``eval_every`` is set so that each run validates ``evals_per_run`` times,
    whatever its length, and the checkpoint step is chosen among those.

    Raises:
        ConfigError: a key that is not a sweepable training parameter.
    """
    unknown = sorted(set(grid) - set(SWEEPABLE))
    if unknown:
        raise ConfigError(f"Sweep grid: unknown key(s) {unknown}; sweepable: {list(SWEEPABLE)}")
    keys = sorted(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        candidate = dict(zip(keys, values, strict=True))
        steps = int(candidate.get("max_steps", 0)) or None
        if steps is not None:
            candidate["eval_every"] = max(steps // evals_per_run, 1)
        out.append(candidate)
    return out


@dataclass(frozen=True)
class CandidateResult:
    """One training run of a sweep.

    Attributes:
        variant: the model namespace (e.g. ``nppl_mixed``).
        overrides: the candidate's ``training`` overrides.
        val_accuracy, val_nll: validation scores at the kept checkpoint.
        best_step: the kept checkpoint's step.
        seconds: wall time of the run.
    """

    variant: str
    overrides: dict[str, Any]
    val_accuracy: float
    val_nll: float
    best_step: int
    seconds: float


def run_candidate(
    variant: str,
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    overrides: Mapping[str, Any],
    data: PreferenceData,
    train_rows: torch.Tensor,
    val_rows: torch.Tensor,
) -> CandidateResult:
    """Train one candidate and report its validation scores (nothing else is read)."""
    training = TrainingConfig.from_params({**training_params, **overrides, "progress": False})
    config = RewardModelConfig.from_params(model_params, input_dim=int(data.features.shape[-1]))
    started = time.perf_counter()
    with seeded(training.seed):
        model = build_model(config)
    result = train(model, data, train_rows, val_rows, training)
    best = next(h for h in result.history if h["step"] == result.best_step)
    return CandidateResult(
        variant=variant,
        overrides=dict(overrides),
        val_accuracy=float(best["val_accuracy"]),
        val_nll=float(best["val_nll"]),
        best_step=result.best_step,
        seconds=time.perf_counter() - started,
    )


def select_best(results: Sequence[CandidateResult], select_by: str) -> CandidateResult:
    """The candidate with the best validation score (ties keep the earlier candidate).

    Args:
        select_by: ``accuracy`` (highest) or ``nll`` (lowest).
    """
    if not results:
        raise ValueError("no candidate results to select from")
    if select_by == "accuracy":
        return max(results, key=lambda r: (r.val_accuracy, -results.index(r)))
    if select_by == "nll":
        return min(results, key=lambda r: (r.val_nll, results.index(r)))
    raise ConfigError(f"select_by must be 'accuracy' or 'nll', got {select_by!r}")
