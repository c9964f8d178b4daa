"""The one training loop, shared by every model: reward models and DPO policies alike.

Each optimiser step draws ``batch_episodes`` fresh episodes (index tensors,
:class:`~steerable_alignment.episodes.sampler.EpisodeSampler`: a user type,
``num_targets`` distinct train pairs with that user's choices, a context of
the first ``n`` of them), splits them over the processes of a data-parallel
launch and each process's share into ``grad_accum_steps`` micro-batches,
adds up the gradients (all-reduced across processes), clips them and steps
AdamW under a constant or warm-up/cosine schedule. Every ``eval_every``
steps (and at the last) it scores fixed, seeded validation episodes and keeps
the weights with the best score. With ``checkpoint_dir`` and
``checkpoint_every`` it writes resumable checkpoints (safetensors + JSON,
:mod:`steerable_alignment.training.checkpointing`); a run started again with
the same inputs resumes from the last one and ends exactly as an
uninterrupted run would, and a checkpoint of other inputs is refused naming
what changed.

What differs between models comes in through a :class:`TrainingTask`: how a
micro-batch of episodes becomes a loss, what is trainable and saved, the
validation scores and which of them selects the weights, and what else a
checkpoint must hold. The tasks are recipes, outside this package (which
imports none of them): :mod:`steerable_alignment.recipes.reward_models`,
:mod:`steerable_alignment.recipes.policies` and
:mod:`steerable_alignment.recipes.sft`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from steerable_alignment.episodes.sampler import (
    EpisodeSampler,
    EvaluationEpisodes,
    TrainingEpisodes,
    make_evaluation_episodes,
)
from steerable_alignment.episodes.sizes import too_small_hint
from steerable_alignment.models.config import ConfigError
from steerable_alignment.runtime.devices import DTYPES
from steerable_alignment.runtime.distributed import (
    Processes,
    all_reduce_gradients,
    all_reduce_sum,
    current_processes,
    process_device,
)
from steerable_alignment.training import checkpointing
from steerable_alignment.training.config import LoopConfig, lr_factor

logger = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What the loop needs from a model (a reward model, a DPO policy).

    Attributes:
        name: the model's name in the progress bar and the logs.
        train_rows, val_rows: (P,) long rows of the train and validation splits.
        objective_ids: (K',) long objective columns users are drawn from.
        sample_device: where episodes are drawn (the features' device, or the CPU).
        stat_scale: train statistics divided by this per step before averaging
            (e.g. sums over a step's pairs; absent: as returned).
    """

    name: str
    train_rows: torch.Tensor
    val_rows: torch.Tensor
    objective_ids: torch.Tensor
    sample_device: torch.device
    stat_scale: Mapping[str, float]

    def setup(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move the model (and data) to ``device`` before anything else runs."""

    def signature(self) -> dict[str, Any]:
        """What besides the config a checkpoint must have been made from."""

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups (the trainable weights only)."""

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters whose gradients are clipped and all-reduced."""

    def start(self, val_episodes: EvaluationEpisodes) -> str:
        """Anything to do once before the first step (after a resume); a note for the log."""

    def prepare(self, episodes: TrainingEpisodes) -> None:
        """Anything a step's episodes need before their loss (e.g. cached reference log-probs)."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the forward passes."""

    def loss(self, episodes: TrainingEpisodes, total: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss of a micro-batch as its share of the step (of ``total`` episodes).

        Returns:
            The scalar to back-propagate (the step's gradient is the sum over
            micro-batches and processes) and train statistics summed over
            the micro-batch (added up over the step).
        """

    def validate(self, episodes: EvaluationEpisodes) -> dict[str, float]:
        """Validation scores (``val_*``, in the order the history shows them)."""

    def selection_score(self, scores: Mapping[str, float]) -> float:
        """The score that selects the kept weights: lower is better."""

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the weights worth keeping as the best so far."""

    def restore(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Load a :meth:`snapshot`."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What else a checkpoint holds as tensors (weights, caches)."""

    def load_state(self, tensors: Mapping[str, torch.Tensor], folder: Path) -> None:
        """Restore what :meth:`state_tensors` and :meth:`write_extra` saved."""

    def write_extra(self, folder: Path) -> None:
        """Write anything else into a checkpoint folder (e.g. loadable weights)."""


@dataclass
class LoopResult:
    """What a run produced besides the trained model.

    Attributes:
        history: one dict per validation: step, ``train_*`` (averages since
            the previous validation), the task's ``val_*`` scores, lr, seconds.
        best_step: the step whose weights were kept (loaded into the model).
        resumed_from: the step a checkpoint resumed from (0: a fresh run).
    """

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
    running: dict[str, Any] = field(default_factory=dict)  # train statistics since validation
    running_steps: int = 0
    seconds: float = 0.0


def check_split_sizes(config: LoopConfig, sizes: Mapping[str, int], what: str = "pairs") -> None:
    """Fail before any work when a split cannot fill one episode.

    Raises:
        ConfigError: naming the parameters, the split, and the sizes that would fit.
    """
    needed = {"train": config.num_targets, "validation": config.max_context + config.num_targets}
    for split, count in needed.items():
        have = sizes.get(split, 0)
        if have < count:
            hint = too_small_hint(
                have, config.max_context, config.num_targets, context_in_targets=split == "train"
            )
            raise ConfigError(
                f"Parameters 'training.num_targets'/'training.max_context': an episode needs "
                f"{count} distinct pairs but the {split} split has {have} {what}{hint}"
            )


def run(task: TrainingTask, config: LoopConfig) -> LoopResult:
    """Train ``task``'s model with ``config`` (module docstring); the best weights end loaded.

    Raises:
        ConfigError: the step's episodes do not split over the processes and
            micro-batches, or a checkpoint in ``config.checkpoint_dir`` was made
            from other inputs.
    """
    processes = current_processes(config.device)
    world, rank = processes.count, processes.index
    if config.batch_episodes % (config.grad_accum_steps * world):
        raise ConfigError(
            f"Parameter 'training.batch_episodes': {config.batch_episodes} episodes per step "
            f"must split evenly over {world} process(es) x {config.grad_accum_steps} "
            "micro-batch(es) ('training.grad_accum_steps')"
        )
    device = process_device(config.device, processes)
    dtype = DTYPES[config.dtype]
    if config.num_threads is not None and device.type == "cpu":
        torch.set_num_threads(config.num_threads)
    task.setup(device, dtype)
    checkpoints = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    signature = {"training": config.signature(), **task.signature()} if checkpoints else {}
    sampler, val_episodes = _episodes(task, config)
    optimiser = torch.optim.AdamW(
        task.param_groups(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(config, s))
    state = _LoopState()
    rng_state: dict[str, torch.Tensor] | None = None
    latest = checkpointing.latest_checkpoint(checkpoints) if checkpoints else None
    if latest is not None:
        state, rng_state = _load_checkpoint(
            latest, signature, task, optimiser, scheduler, sampler, device, rank
        )
        logger.info("Resuming from %s (step %d of %d)", latest, state.step, config.max_steps)
    resumed_from = state.step
    note = task.start(val_episodes)
    _log_start(task, config, device, world, len(val_episodes), note)
    local = config.batch_episodes // world  # this process's episodes of each step
    micro = local // config.grad_accum_steps
    started = time.perf_counter() - state.seconds
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if rng_state is None:
            torch.manual_seed(config.seed + 2 + rank)  # dropout differs between processes
        else:
            checkpointing.set_rng_state(rng_state, device)
        bar = tqdm(
            range(state.step + 1, config.max_steps + 1),
            desc=f"train {task.name}",
            initial=state.step,
            total=config.max_steps,
            disable=not (config.progress and processes.is_main),
            mininterval=2.0,
        )
        for step in bar:
            _train_step(task, config, sampler, optimiser, processes, local, micro, device, state)
            scheduler.step()
            state.step = step
            if step % config.eval_every == 0 or step == config.max_steps:
                row = _validate(task, val_episodes, state, optimiser, device, processes, started)
                shown = row.get("val_accuracy", task.selection_score(row))
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{shown:.4f}")
            if checkpoints is not None and _checkpoint_due(config, step):
                state.seconds = time.perf_counter() - started
                _save_checkpoint(
                    checkpoints, config, signature, state, task, optimiser, scheduler, sampler,
                    device, processes,
                )  # fmt: skip
    if state.best_state is not None:
        task.restore(state.best_state)
    logger.info(
        "Kept the weights of step %d (best validation score %.4f)",
        state.best_step,
        state.best_score,
    )
    return LoopResult(state.history, state.best_step, resumed_from)


def _episodes(task: TrainingTask, config: LoopConfig) -> tuple[EpisodeSampler, EvaluationEpisodes]:
    """The training-episode sampler and the fixed validation episodes (seeded from the config)."""
    sampler = EpisodeSampler(
        task.train_rows,
        task.objective_ids,
        config.num_targets,
        config.min_context,
        config.max_context,
        seed=config.seed,
        device=task.sample_device,
    )
    val_episodes = make_evaluation_episodes(
        task.val_rows,
        task.objective_ids,
        config.val_episodes_per_objective,
        config.num_targets,
        config.max_context,
        seed=config.seed + 1,
    )
    return sampler, val_episodes


def _checkpoint_due(config: LoopConfig, step: int) -> bool:
    every = config.checkpoint_every
    return bool(every) and (step % every == 0 or step == config.max_steps)


def _log_start(
    task: TrainingTask,
    config: LoopConfig,
    device: torch.device,
    world: int,
    val_episodes: int,
    note: str,
) -> None:
    logger.info(
        "Training %s for %d steps on %s (%s, %d process(es)): %d episodes x %d targets per "
        "step, context %d-%d, %d micro-batch(es) per process; %d validation episodes%s",
        task.name,
        config.max_steps,
        device,
        config.dtype,
        world,
        config.batch_episodes,
        config.num_targets,
        config.min_context,
        config.max_context,
        config.grad_accum_steps,
        val_episodes,
        note,
    )


def _train_step(
    task: TrainingTask,
    config: LoopConfig,
    sampler: EpisodeSampler,
    optimiser: torch.optim.Optimizer,
    processes: Processes,
    local: int,
    micro: int,
    device: torch.device,
    state: _LoopState,
) -> None:
    """One optimiser step: this process's micro-batches, the all-reduce, clipping, AdamW."""
    episodes = sampler.sample(config.batch_episodes)  # the same on every process
    task.prepare(episodes)
    optimiser.zero_grad(set_to_none=True)
    stats: dict[str, Any] = {}
    start = processes.index * local
    for lo in range(start, start + local, micro):
        with task.autocast():
            loss, micro_stats = task.loss(episodes.slice(lo, lo + micro), config.batch_episodes)
        loss.backward()
        for key, value in micro_stats.items():
            stats[key] = stats.get(key, 0.0) + value
    trainable = task.trainable()
    if processes.count > 1:
        all_reduce_gradients(trainable)
        values = torch.tensor([float(v) for v in stats.values()], dtype=torch.float64)
        totals = all_reduce_sum(values, device)
        stats = dict(zip(stats, totals.tolist(), strict=True))
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
    optimiser.step()
    for key, value in stats.items():
        scale = task.stat_scale.get(key)
        share = value if scale is None else value / scale
        state.running[key] = state.running.get(key, 0.0) + share
    state.running_steps += 1


def _validate(
    task: TrainingTask,
    val_episodes: EvaluationEpisodes,
    state: _LoopState,
    optimiser: torch.optim.Optimizer,
    device: torch.device,
    processes: Processes,
    started: float,
) -> dict[str, float]:
    """Score the validation episodes, keep the best weights, add a history row (returned)."""
    scores = task.validate(val_episodes)
    if processes.count > 1:  # every process keeps the same best step
        import torch.distributed as dist

        values = torch.tensor(list(scores.values()), dtype=torch.float64, device=device)
        dist.broadcast(values, 0)
        scores = dict(zip(scores, values.tolist(), strict=True))
    score = task.selection_score(scores)
    if score < state.best_score:
        state.best_score, state.best_step = score, state.step
        state.best_state = task.snapshot()
    count = max(state.running_steps, 1)
    row = {
        "step": state.step,
        **{f"train_{k}": float(v) / count for k, v in state.running.items()},
        **scores,
        "lr": optimiser.param_groups[0]["lr"],
        "seconds": time.perf_counter() - started,
    }
    state.history.append(row)
    state.running = {}
    state.running_steps = 0
    log = logger.info if processes.is_main else logger.debug
    shown = [f"{k.replace('_', ' ')} {v:.4f}" for k, v in row.items() if k not in _NOT_LOGGED]
    log("step %d: %s", state.step, ", ".join(shown))
    return row


_NOT_LOGGED = ("step", "lr", "seconds")


# -- data parallel ------------------------------------------------------------------------------


def _rng_tensors(device: torch.device, processes: Processes) -> dict[str, torch.Tensor]:
    """Every process's RNG states (a collective call), as ``rng.<rank>.torch|cuda``."""
    local = checkpointing.rng_tensors(device)
    if processes.count == 1:
        return {f"rng.0.{k}": v for k, v in local.items()}
    import torch.distributed as dist

    gathered: list[Any] = [None] * processes.count
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in local.items()})
    return {f"rng.{rank}.{k}": v for rank, states in enumerate(gathered) for k, v in states.items()}


# -- checkpoints --------------------------------------------------------------------------------


def _save_checkpoint(
    directory: Path,
    config: LoopConfig,
    signature: dict[str, Any],
    state: _LoopState,
    task: TrainingTask,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    sampler: EpisodeSampler,
    device: torch.device,
    processes: Processes,
) -> Path:
    """Write ``step-<N>/`` atomically, then drop checkpoints beyond ``keep_checkpoints``.

    Every process calls it (the RNG states are gathered); the main process writes.
    """
    rng = _rng_tensors(device, processes)
    target = checkpointing.step_directory(directory, state.step)
    if not processes.is_main:
        processes.wait()
        return target
    optimiser_tensors, param_groups = checkpointing.optimizer_tensors(optimiser)
    running_tensors = {k: v for k, v in state.running.items() if isinstance(v, torch.Tensor)}
    tensors: dict[str, torch.Tensor] = {
        **rng,
        "sampler.generator": sampler.generator.get_state(),
        **optimiser_tensors,
        **checkpointing.with_prefix("best.", state.best_state or {}),
        **checkpointing.with_prefix("running.", running_tensors),
        **task.state_tensors(),
    }
    meta = {
        "signature": signature,
        "history": state.history,
        "best_step": state.best_step,
        "best_score": state.best_score if math.isfinite(state.best_score) else None,
        "has_best_state": state.best_state is not None,
        "running": {k: v for k, v in state.running.items() if k not in running_tensors},
        "running_order": list(state.running),
        "running_steps": state.running_steps,
        "seconds": state.seconds,
        "optimizer_param_groups": param_groups,
        "scheduler": scheduler.state_dict(),
        "processes": processes.count,
    }
    checkpointing.write_checkpoint(
        directory, state.step, tensors, meta, keep=config.keep_checkpoints, extra=task.write_extra
    )
    processes.wait()
    return target


def _load_checkpoint(
    path: Path,
    signature: dict[str, Any],
    task: TrainingTask,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    sampler: EpisodeSampler,
    device: torch.device,
    rank: int = 0,
) -> tuple[_LoopState, dict[str, torch.Tensor]]:
    """Restore everything :func:`_save_checkpoint` wrote; returns the loop state and RNG states.

    Raises:
        ConfigError: the checkpoint was made from other inputs or in another format.
    """
    meta, tensors = checkpointing.read_checkpoint(path, signature)
    task.load_state(tensors, path)
    checkpointing.load_optimizer(optimiser, tensors, meta["optimizer_param_groups"])
    scheduler.load_state_dict(meta["scheduler"])
    sampler.generator.set_state(tensors["sampler.generator"])
    running_tensors = {
        k: v.to(device) for k, v in checkpointing.strip_prefix("running.", tensors).items()
    }
    running = {k: running_tensors.get(k, meta["running"].get(k)) for k in meta["running_order"]}
    best = checkpointing.strip_prefix("best.", tensors)
    state = _LoopState(
        step=int(meta["step"]),
        history=meta["history"],
        best_step=int(meta["best_step"]),
        best_score=math.inf if meta["best_score"] is None else float(meta["best_score"]),
        best_state=best if meta["has_best_state"] else None,
        running=running,
        running_steps=int(meta["running_steps"]),
        seconds=float(meta["seconds"]),
    )
    rng = checkpointing.strip_prefix(f"rng.{rank}.", tensors)
    if not rng:
        logger.warning(
            "%s was written by %d process(es); process %d starts a fresh dropout RNG stream",
            path,
            meta.get("processes", 1),
            rank,
        )
        fresh = torch.Generator().manual_seed(int(meta["step"]) * 1000 + rank)
        return state, {"torch": fresh.get_state()}
    return state, rng
