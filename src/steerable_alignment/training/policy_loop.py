"""DPO training of a policy on preference episodes (DESIGN.md §2-3), framework-free.

Every optimiser step draws ``batch_episodes`` fresh episodes: a user type
(an objective, uniformly from the configured ones), ``num_targets`` distinct
pairs of the train split labelled with that user's choices, and a context
size ``n`` uniform in ``[min_context, max_context]``; the first ``n``
targets are the context (NP convention: context ⊆ targets), read by NP-DPO's
context encoder as embeddings. The DPO loss is taken on every target, with
chosen and rejected given by the user's choice (plus, with ``nll_weight > 0``,
the chosen response's length-normalised NLL: DPO+NLL, :func:`dpo_loss`), and
averaged over the step's pairs; the step's episodes are split into
``grad_accum_steps`` micro-batches whose gradients add up to the full batch's.

Around that: AdamW on the trainable weights only (LoRA, FiLM, encoder),
optional warm-up/cosine schedule, bf16 autocast on CUDA only, validation
loss (the DPO loss of targets outside the context, averaged over
``val_context_sizes``), implicit-reward accuracy and the chosen responses'
per-token NLL every ``eval_every`` steps on fixed seeded validation
episodes, the best-by-validation-loss weights kept (the DPO loss alone,
whatever ``nll_weight``), reference log-probs computed once per (pair, side) and cached
(:class:`ReferenceLogps`), and checkpoints every ``checkpoint_every`` steps
from which a run started again with the same configuration resumes and ends
exactly as an uninterrupted run would.

Checkpoints (``<checkpoint_dir>/step-<NNNNNNNN>/``, written atomically):

- ``trainable/``: the current trainable weights (:func:`save_trainable`,
  loadable onto the base model with :func:`load_policy`);
- ``state.safetensors``: optimiser moments, RNG and sampler states, the
  reference cache, the best weights so far;
- ``state.json``: step, history, best step/loss, scheduler and optimiser
  hyper-parameters, and the run's signature (configs, base model, data
  digest) checked on resume.

Nothing is unpickled (the format is :mod:`steerable_alignment.training.checkpointing`,
shared with the reward-model loop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from tqdm.auto import tqdm

from steerable_alignment.episodes.sampler import make_evaluation_episodes, sample_distinct
from steerable_alignment.episodes.scoring import score_targets
from steerable_alignment.episodes.sizes import too_small_hint
from steerable_alignment.models.config import ConfigError, config_from_params
from steerable_alignment.policy.checkpoint import save_trainable
from steerable_alignment.policy.dpo import DPOOutput, chosen_nll, dpo_loss
from steerable_alignment.policy.logps import response_token_counts
from steerable_alignment.policy.model import base_weights_digest, tensors_digest
from steerable_alignment.policy.scoring import context_latents, episode_pair_logps
from steerable_alignment.policy_data.pairs import (
    PolicyData,
    ReferenceLogps,
    episode_choices,
    pair_sequences,
)
from steerable_alignment.runtime.devices import DTYPES, cuda_autocast, resolve_device
from steerable_alignment.runtime.distributed import Processes, current_processes
from steerable_alignment.training import checkpointing
from steerable_alignment.training.loop import LR_SCHEDULES, _lr_factor

if TYPE_CHECKING:
    from steerable_alignment.policy.model import PolicyModel

logger = logging.getLogger(__name__)

TRAINABLE_DIR = "trainable"
#: Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = ("progress", "num_threads", "checkpoint_dir", "keep_checkpoints")
#: Settings added after checkpoints were first written, with the default that
#: reproduces the older runs: left out of the signature at that default, so
#: those checkpoints still resume.
SIGNATURE_DEFAULTS = {"nll_weight": 0.0}


@dataclass(frozen=True)
class PolicyTrainingConfig:
    """Hyper-parameters of one DPO training run (``params:<variant>.training``).

    Attributes:
        objectives: user types episodes are drawn from (None: all of the data's).
        max_steps: optimiser steps.
        batch_episodes: B, episodes per optimiser step.
        grad_accum_steps: micro-batches per step (B must be a multiple); the
            gradients add up to those of the whole step.
        num_targets: T, target pairs per episode (the DPO loss is on all of them).
        min_context, max_context: range of the context size (context ⊆ targets).
        beta: β_dpo of the DPO loss (DESIGN.md §2).
        nll_weight: λ >= 0 of the chosen response's length-normalised NLL added
            to each pair's DPO loss (DPO+NLL, Pang et al. 2024;
            :func:`~steerable_alignment.policy.dpo.dpo_loss`); 0 is plain DPO.
        lr, weight_decay, betas: AdamW settings (trainable weights only).
        context_lr: learning rate of NP-DPO's context path — the FiLM layers and
            the context encoder, which start from scratch — (None: ``lr``);
            the LoRA adapters keep ``lr``. The schedule scales both.
        lr_schedule: ``constant`` or ``cosine`` (to ``min_lr_ratio``·lr);
            ``warmup_steps`` of linear warm-up.
        grad_clip: max gradient norm (None: no clipping).
        eval_every: validate every this many steps (and at the last step).
        val_episodes_per_objective: fixed validation episodes per objective.
        val_context_sizes: context sizes averaged in the validation loss
            (targets are never in the context).
        batch_size: sequences per forward pass for reference log-probs and validation.
        checkpoint_every: write a resumable checkpoint every this many steps
            (and at the last step); 0 turns checkpoints off.
        checkpoint_dir: where checkpoints go (None: no checkpoints).
        keep_checkpoints: how many of the latest checkpoints to keep.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: autocast dtype on CUDA (``float32``, ``bfloat16``, ``float16``);
            the CPU always computes in float32.
        num_threads: torch intra-op threads on the CPU (None: leave as is).
        seed: seeds episodes, validation episodes and dropout.
        progress: show a progress bar.
    """

    objectives: tuple[str, ...] | None = None
    max_steps: int = 100
    batch_episodes: int = 2
    grad_accum_steps: int = 1
    num_targets: int = 11
    min_context: int = 0
    max_context: int = 10
    beta: float = 0.05
    nll_weight: float = 0.0
    lr: float = 1e-5
    context_lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    eval_every: int = 50
    val_episodes_per_objective: int = 8
    val_context_sizes: tuple[int, ...] = (0, 3, 10)
    batch_size: int = 16
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 1
    device: str = "auto"
    dtype: str = "float32"
    num_threads: int | None = None
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], prefix: str = "training"
    ) -> PolicyTrainingConfig:
        """Build and validate from a parameters mapping.

        Raises:
            ConfigError: naming the offending parameter.
        """
        return config_from_params(cls, params, prefix, ("objectives", "betas", "val_context_sizes"))

    def validate(self, prefix: str = "training") -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(f"Parameter '{prefix}.{key}': {message}")

        positive = ["max_steps", "batch_episodes", "grad_accum_steps", "num_targets"]
        positive += ["eval_every", "val_episodes_per_objective", "batch_size", "keep_checkpoints"]
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
        for key in ("beta", "lr"):
            if not getattr(self, key) > 0:
                raise fail(key, f"must be > 0, got {getattr(self, key)}")
        weight = self.nll_weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise fail("nll_weight", f"must be a number >= 0, got {weight!r}")
        if self.context_lr is not None and not self.context_lr > 0:
            raise fail("context_lr", f"must be > 0 or null, got {self.context_lr}")
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


@dataclass(frozen=True)
class PolicyEpisodes:
    """A batch of training episodes as pair rows.

    Attributes:
        rows: (B, T) long target pair rows; the first ``num_context[b]`` are
            the context of episode b.
        objective: (B,) long objective column of each episode's user.
        num_context: (B,) long context size of each episode.
    """

    rows: torch.Tensor
    objective: torch.Tensor
    num_context: torch.Tensor

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def slice(self, start: int, stop: int) -> PolicyEpisodes:
        return PolicyEpisodes(
            self.rows[start:stop], self.objective[start:stop], self.num_context[start:stop]
        )


class PolicyEpisodeSampler:
    """Fresh training episodes on index tensors, reproducible from a seed (DESIGN.md §3).

    Args:
        split_rows: (P,) long rows of the split to draw from.
        objective_ids: (K',) long objective columns users are drawn from.
        num_targets: T pairs per episode.
        min_context, max_context: the context size is uniform in this range.
        seed: seeds the sampler's own generator.
    """

    def __init__(
        self,
        split_rows: torch.Tensor,
        objective_ids: torch.Tensor,
        num_targets: int,
        min_context: int,
        max_context: int,
        seed: int,
    ) -> None:
        self.split_rows = split_rows.cpu()
        self.objective_ids = objective_ids.cpu()
        self.num_targets = num_targets
        self.min_context = min_context
        self.max_context = max_context
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> PolicyEpisodes:
        g = self.generator
        picks = sample_distinct(
            len(self.split_rows), (batch_size, self.num_targets), g, torch.device("cpu")
        )  # (B, T)
        pick = torch.randint(len(self.objective_ids), (batch_size,), generator=g)
        num_context = torch.randint(
            self.min_context, self.max_context + 1, (batch_size,), generator=g
        )
        return PolicyEpisodes(self.split_rows[picks], self.objective_ids[pick], num_context)


def episode_dpo_loss(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    episodes: PolicyEpisodes,
    beta: float,
    device: torch.device,
    nll_weight: float = 0.0,
) -> DPOOutput:
    """The DPO (+ ``nll_weight`` · chosen NLL) loss of every target of training episodes.

    Chosen/rejected follow the episode user's choice; NP-DPO conditions every
    target of an episode on the latent of its context (the first
    ``num_context`` targets). The chosen NLL is normalised by the number of
    tokens the chosen log-prob sums (:func:`response_token_counts`: the
    response and its end-of-turn token).

    Returns:
        A :class:`DPOOutput` over the B·T targets, episode-major (with gradients;
        ``chosen_nll`` always reported).
    """
    rows = episodes.rows  # (B, T)
    num_episodes, num_targets = rows.shape
    choices = data.choices[rows, episodes.objective.unsqueeze(1)]  # (B, T)
    z = None
    if policy.config.uses_context:
        slots = int(episodes.num_context.max()) if num_episodes else 0
        mask = torch.arange(slots).unsqueeze(0) < episodes.num_context.unsqueeze(1)  # (B, N)
        z = context_latents(policy, data, rows[:, :slots], choices[:, :slots], mask, device)
        z = z.repeat_interleave(num_targets, 0)  # (B·T, Z)
    flat_rows = rows.flatten()  # (B·T,)
    chosen_side = choices.flatten()  # (B·T,)
    rejected_side = 1 - chosen_side
    chosen = pair_sequences(data.sequences, flat_rows, chosen_side).to(device)
    rejected = pair_sequences(data.sequences, flat_rows, rejected_side).to(device)
    policy_chosen, policy_rejected = policy.pair_logps(chosen, rejected, z)  # (B·T,) each
    return dpo_loss(
        policy_chosen,
        policy_rejected,
        reference.gather(flat_rows, chosen_side).to(device),
        reference.gather(flat_rows, rejected_side).to(device),
        beta,
        chosen_token_counts=response_token_counts(chosen),  # (B·T,)
        nll_weight=nll_weight,
    )


#: Name prefixes of NP-DPO's context path (FiLM and the context encoder).
CONTEXT_PATH = ("film.", "context_encoder.")


def _param_groups(policy: PolicyModel, config: PolicyTrainingConfig) -> list[dict[str, Any]]:
    """AdamW groups: the adapters at ``lr``; the context path at ``context_lr`` if set."""
    trainable = policy.trainable_parameters()
    if config.context_lr is None:
        return [{"params": list(trainable.values())}]
    context = [p for n, p in trainable.items() if n.startswith(CONTEXT_PATH)]
    adapters = [p for n, p in trainable.items() if not n.startswith(CONTEXT_PATH)]
    groups = [{"params": adapters}]
    if context:
        groups.append({"params": context, "lr": config.context_lr})
    return groups


class ValidationScores(NamedTuple):
    """What :func:`validate_policy` measures, each averaged over the context sizes.

    Attributes:
        loss: the DPO loss, ``−log σ(r_chosen − r_rejected)`` (selects the best weights).
        accuracy: implicit-reward accuracy.
        chosen_nll: per-token NLL of the chosen responses, ``−log π(y_w) / |y_w|``.
    """

    loss: float
    accuracy: float
    chosen_nll: float


def validate_policy(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    episodes: Any,
    context_sizes: tuple[int, ...],
    beta: float,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> ValidationScores:
    """DPO loss, implicit-reward accuracy and chosen NLL over ``context_sizes`` on fixed episodes.

    The loss of a target is the NLL of its implicit-reward preference,
    ``−log σ(r_chosen − r_rejected)``, exactly as
    ``score_targets(predict_policy_episodes(...))`` computes it (a test checks
    it); the chosen NLL comes from the same forward passes. A policy that
    reads no context is scored once (its value is the same at every context size).
    """
    choices = episode_choices(data, episodes)  # (E, T)
    targets = episodes.rows[:, episodes.max_context :]  # (E, T)
    counts = data.sequences.response_len[targets, choices]  # (E, T) = response_token_counts
    sizes = context_sizes if policy.config.uses_context else context_sizes[:1]
    losses, accuracies, nlls = [], [], []
    with cuda_autocast(device, dtype):
        for n in sizes:
            logps = _episode_pair_logps(policy, data, episodes, n, batch_size, device)
            flat = targets.flatten()
            ref = torch.stack(
                [
                    reference.gather(flat, torch.zeros_like(flat)),
                    reference.gather(flat, torch.ones_like(flat)),
                ],
                1,
            ).reshape(logps.shape)  # (E, T, 2)
            rewards = beta * (logps.double() - ref.double())  # (E, T, 2)
            prob_b = torch.sigmoid(rewards[..., 1] - rewards[..., 0])  # (E, T)
            correct, nll = score_targets(prob_b, choices)
            chosen = logps.gather(-1, choices.unsqueeze(-1)).squeeze(-1)  # (E, T)
            losses.append(float(nll.mean()))
            accuracies.append(float(correct.mean()))
            nlls.append(float(chosen_nll(chosen.double(), counts).mean()))
    count = len(sizes)
    return ValidationScores(sum(losses) / count, sum(accuracies) / count, sum(nlls) / count)


@torch.no_grad()
def _episode_pair_logps(
    policy: PolicyModel,
    data: PolicyData,
    episodes: Any,
    num_context: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """(E, T, 2) policy log-probs of every scored target, in eval mode: the forward
    passes of ``predict_policy_episodes`` (the same helper), keeping the log-probs."""
    was_training = policy.training
    policy.eval()
    try:
        return episode_pair_logps(policy, data, episodes, num_context, batch_size, device)
    finally:
        policy.train(was_training)


@dataclass
class PolicyTrainingResult:
    """The trained policy (best validation weights loaded) and its history.

    Attributes:
        policy: the policy holding its best validation weights.
        history: one dict per validation (step, train_loss — the loss
            minimised, DPO + nll_weight · chosen NLL —, train_accuracy,
            train_chosen_nll, val_loss — the DPO loss, which selects the
            best step —, val_accuracy, val_chosen_nll, lr, seconds).
        best_step: the step whose weights were kept.
        reference: the reference log-probs computed (or given).
        resumed_from: the step a checkpoint resumed from (0: a fresh run).
    """

    policy: PolicyModel
    history: list[dict[str, float]]
    best_step: int
    reference: ReferenceLogps
    resumed_from: int = 0


@dataclass
class _LoopState:
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    running_loss: float = 0.0
    running_accuracy: float = 0.0
    running_chosen_nll: float = 0.0
    running_steps: int = 0
    seconds: float = 0.0


def data_digest(data: PolicyData) -> str:
    """A short hash of the tokens, choices and splits a run trains on."""
    digest = hashlib.sha256()
    for tensor in (
        data.sequences.pair_id,
        data.sequences.input_ids,
        data.sequences.response_start,
        data.sequences.response_len,
        data.choices,
        *(data.splits[s] for s in sorted(data.splits)),
    ):
        digest.update(tensor.contiguous().numpy().tobytes())
    if data.embeddings is not None:
        digest.update(data.embeddings.float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def reference_digest(reference: ReferenceLogps | None) -> str | None:
    """A short hash of the reference log-probs given to a run (those known at its start)."""
    if reference is None:
        return None
    known = reference.known.bool()
    values = torch.where(known[:, None], reference.values, torch.zeros_like(reference.values))
    return tensors_digest({"values": values, "known": known}, max_values=1 << 40)


def _signature(
    config: PolicyTrainingConfig,
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps | None = None,
) -> dict:
    """What a checkpoint was made from; a resumed or returned run must match it exactly.

    Beside the configurations and the data: the base model's weights (a
    sampled digest, so another model of the same architecture or another
    dtype is refused), the context encoder's warm start, the reference
    log-probs given at the start and the cached prefix states.
    """
    training = {
        k: v
        for k, v in config.to_dict().items()
        if k not in RESUMABLE_CHANGES
        and not (k in SIGNATURE_DEFAULTS and v == SIGNATURE_DEFAULTS[k])
    }
    sequences = data.sequences
    prefix = None
    if sequences.prefix_states is not None:
        prefix = {
            "blocks": int(sequences.prefix_blocks),
            "digest": tensors_digest({"states": sequences.prefix_states}),
        }
    return {
        "training": training,
        "policy": policy.config.to_dict(),
        "base_model": policy.base_fingerprint,
        "base_weights": base_weights_digest(policy),
        "warm_start": policy.warm_start_digest,
        "reference": reference_digest(reference),
        "prefix_states": prefix,
        "data": {
            "pairs": len(data),
            "objectives": list(data.objectives),
            "digest": data_digest(data),
        },
    }


def _check_data(policy: PolicyModel, data: PolicyData, config: PolicyTrainingConfig) -> None:
    """Fail before any work when the data cannot train this policy with this config."""
    if policy.config.uses_context:
        if data.embeddings is None:
            raise ConfigError(
                f"a {policy.config.type} policy reads context embeddings but the data has none "
                "(the data set's 'features' from the embedding pipeline)"
            )
        policy.check_context_embeddings(data.embeddings)
    needed = {
        "train": config.num_targets,
        "validation": config.max_context + config.num_targets,
    }
    for split, count in needed.items():
        rows = data.splits.get(split, torch.empty(0, dtype=torch.long))
        if len(rows) < count:
            hint = too_small_hint(
                len(rows),
                config.max_context,
                config.num_targets,
                context_in_targets=split == "train",
            )
            raise ConfigError(
                f"Parameters 'training.num_targets'/'training.max_context': an episode needs "
                f"{count} distinct pairs but the {split} split has {len(rows)} tokenised "
                f"pairs{hint}"
            )


def train_policy(
    policy: PolicyModel,
    data: PolicyData,
    config: PolicyTrainingConfig,
    reference: ReferenceLogps | None = None,
) -> PolicyTrainingResult:
    """Train a DPO policy on episodes of ``data``'s train split (module docstring).

    Args:
        policy: a fresh :class:`PolicyModel` (trained in place).
        data: the tokenised pairs, choices, splits and context embeddings.
        config: the training configuration.
        reference: precomputed reference log-probs (rows of ``data``; NaN
            where unknown); missing ones are computed when first needed.

    Returns:
        The policy holding its best validation weights, and the history.

    Raises:
        ConfigError: bad data for this policy (e.g. context embeddings whose
            size does not fit the encoder), a split too small, or a
            checkpoint made with another configuration.
    """
    _check_data(policy, data, config)
    processes = current_processes(config.device)
    world, rank = processes.count, processes.index
    if config.batch_episodes % (config.grad_accum_steps * world):
        raise ConfigError(
            f"Parameter 'training.batch_episodes': {config.batch_episodes} episodes per step "
            f"must split evenly over {world} process(es) x {config.grad_accum_steps} "
            "micro-batch(es) ('training.grad_accum_steps')"
        )
    device = _process_device(config.device, processes)
    dtype = DTYPES[config.dtype]
    if dtype != torch.float32 and device.type != "cuda":
        logger.warning("training.dtype=%s applies on CUDA only; the CPU runs float32", config.dtype)
    if config.num_threads is not None and device.type == "cpu":
        torch.set_num_threads(config.num_threads)
    objectives = config.objectives or data.objectives
    objective_ids = data.objective_ids(objectives)
    reference = reference or ReferenceLogps.empty(len(data))
    if len(reference) != len(data):
        raise ValueError(f"reference log-probs have {len(reference)} rows, the data {len(data)}")
    policy.to(device)
    sampler = PolicyEpisodeSampler(
        data.splits["train"],
        objective_ids,
        config.num_targets,
        config.min_context,
        config.max_context,
        seed=config.seed,
    )
    val_episodes = make_evaluation_episodes(
        data.splits["validation"],
        objective_ids,
        config.val_episodes_per_objective,
        config.num_targets,
        config.max_context,
        seed=config.seed + 1,
    )
    trainable = policy.trainable_parameters()
    optimiser = torch.optim.AdamW(
        _param_groups(policy, config),
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(config, step))
    signature = _signature(config, policy, data, reference)
    state = _LoopState()
    checkpoints = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    latest = checkpointing.latest_checkpoint(checkpoints) if checkpoints else None
    rng_state: dict[str, torch.Tensor] | None = None
    if latest is not None:
        state, rng_state = _load_checkpoint(
            latest, signature, policy, optimiser, scheduler, sampler, reference, device, rank
        )
        logger.info("Resuming from %s (step %d of %d)", latest, state.step, config.max_steps)
    resumed_from = state.step

    def reference_fn(batch: Any) -> torch.Tensor:
        with cuda_autocast(device, dtype):
            return policy.reference_logps(batch)

    computed = reference.ensure(
        val_episodes.rows.flatten(), reference_fn, data.sequences, config.batch_size, device
    )
    logger.info(
        "Training a %s policy for %d steps on %s (%s, %d process(es)): %d episodes x %d targets "
        "per step, context %d-%d, %d micro-batch(es) per process; %d validation episodes (%d "
        "reference pairs computed)",
        policy.config.type,
        config.max_steps,
        device,
        config.dtype if device.type == "cuda" else "float32",
        world,
        config.batch_episodes,
        config.num_targets,
        config.min_context,
        config.max_context,
        config.grad_accum_steps,
        len(val_episodes),
        computed,
    )
    devices = [device] if device.type == "cuda" else []
    local = config.batch_episodes // world  # this process's episodes of each step
    micro = local // config.grad_accum_steps
    pairs_per_step = config.batch_episodes * config.num_targets
    started = time.perf_counter() - state.seconds
    with torch.random.fork_rng(devices=devices):
        if rng_state is None:
            torch.manual_seed(config.seed + 2 + rank)  # dropout differs between processes
        else:
            checkpointing.set_rng_state(rng_state, device)
        policy.train()
        bar = tqdm(
            range(state.step + 1, config.max_steps + 1),
            desc=f"train {policy.config.type}",
            initial=state.step,
            total=config.max_steps,
            disable=not (config.progress and processes.is_main),
            mininterval=2.0,
        )
        for step in bar:
            episodes = sampler.sample(config.batch_episodes)  # the same on every process
            reference.ensure(
                episodes.rows.flatten(), reference_fn, data.sequences, config.batch_size, device
            )
            optimiser.zero_grad(set_to_none=True)
            totals = torch.zeros(3, dtype=torch.float64)  # loss, correct pairs, chosen NLL
            for start in range(rank * local, (rank + 1) * local, micro):
                with cuda_autocast(device, dtype):
                    out = episode_dpo_loss(
                        policy,
                        data,
                        reference,
                        episodes.slice(start, start + micro),
                        config.beta,
                        device,
                        config.nll_weight,
                    )
                    loss = out.loss.float().sum() / pairs_per_step
                loss.backward()
                totals += torch.tensor(
                    [float(loss.detach()), float(out.accuracy.sum()), float(out.chosen_nll.sum())]
                )
            if world > 1:
                _all_reduce_gradients(list(trainable.values()))
                totals = _all_reduce_sum(totals, device)
            step_loss, step_correct, step_chosen_nll = totals.tolist()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(list(trainable.values()), config.grad_clip)
            optimiser.step()
            scheduler.step()
            state.step = step
            state.running_loss += float(step_loss)
            state.running_accuracy += float(step_correct) / pairs_per_step
            state.running_chosen_nll += float(step_chosen_nll) / pairs_per_step
            state.running_steps += 1
            if step % config.eval_every == 0 or step == config.max_steps:
                _validate(
                    policy,
                    data,
                    reference,
                    val_episodes,
                    config,
                    state,
                    optimiser,
                    device,
                    dtype,
                    started,
                    processes,
                )
                last = state.history[-1]
                bar.set_postfix(loss=f"{last['train_loss']:.4f}", val=f"{last['val_loss']:.4f}")
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
                    policy,
                    optimiser,
                    scheduler,
                    sampler,
                    reference,
                    device,
                    processes,
                )
    if state.best_state is not None:
        policy.load_state_dict({k: v.to(device) for k, v in state.best_state.items()}, strict=False)
    logger.info(
        "Kept the weights of step %d (best validation loss %.4f)", state.best_step, state.best_loss
    )
    return PolicyTrainingResult(policy, state.history, state.best_step, reference, resumed_from)


def _validate(
    policy: PolicyModel,
    data: PolicyData,
    reference: ReferenceLogps,
    val_episodes: Any,
    config: PolicyTrainingConfig,
    state: _LoopState,
    optimiser: torch.optim.Optimizer,
    device: torch.device,
    dtype: torch.dtype,
    started: float,
    processes: Processes,
) -> None:
    val_loss, val_acc, val_chosen_nll = validate_policy(
        policy,
        data,
        reference,
        val_episodes,
        config.val_context_sizes,
        config.beta,
        config.batch_size,
        device,
        dtype,
    )
    if processes.count > 1:  # every process keeps the same best step
        import torch.distributed as dist

        scores = torch.tensor(
            [val_loss, val_acc, val_chosen_nll], dtype=torch.float64, device=device
        )
        dist.broadcast(scores, 0)
        val_loss, val_acc, val_chosen_nll = scores.tolist()
    policy.train()
    if val_loss < state.best_loss:  # the DPO loss alone, whatever training.nll_weight
        state.best_loss, state.best_step = val_loss, state.step
        state.best_state = {
            k: v.detach().cpu().clone() for k, v in policy.trainable_parameters().items()
        }
    count = max(state.running_steps, 1)
    state.history.append(
        {
            "step": state.step,
            "train_loss": state.running_loss / count,
            "train_accuracy": state.running_accuracy / count,
            "train_chosen_nll": state.running_chosen_nll / count,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "val_chosen_nll": val_chosen_nll,
            "lr": optimiser.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
    )
    state.running_loss = state.running_accuracy = state.running_chosen_nll = 0.0
    state.running_steps = 0
    log = logger.info if processes.is_main else logger.debug
    log(
        "step %d: train loss %.4f, val loss %.4f, val implicit-reward accuracy %.4f, "
        "val chosen NLL %.4f per token",
        state.step,
        state.history[-1]["train_loss"],
        val_loss,
        val_acc,
        val_chosen_nll,
    )


# -- checkpoints --------------------------------------------------------------------------------


def _process_device(name: str, processes: Processes) -> torch.device:
    """The config's device; under a launcher with CUDA, this process's own GPU."""
    if processes.count > 1 and name != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", processes.local_index)
        if name.startswith("cuda:"):
            logger.warning(
                "training.device=%s ignored: process %d uses %s", name, processes.index, device
            )
        torch.cuda.set_device(device)
        return device
    return resolve_device(name)


def _all_reduce_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of ``values`` over every process (a CPU tensor back)."""
    import torch.distributed as dist

    values = values.to(device)
    dist.all_reduce(values)
    return values.cpu()


def _all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every process's gradients (one flat all-reduce); each process held its share of
    the step's loss, so the sums are the whole step's gradients.

    A parameter no process touched keeps ``grad = None`` (as in one process),
    so the optimiser skips it everywhere alike.
    """
    import torch.distributed as dist

    device = params[0].device
    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float() for p in params]
    )  # (sum of numel,)
    dist.all_reduce(flags)
    dist.all_reduce(flat)
    offset = 0
    for param, flag in zip(params, flags.tolist(), strict=True):
        size = param.numel()
        param.grad = flat[offset : offset + size].view_as(param).to(param.dtype) if flag else None
        offset += size


def _rng_tensors(device: torch.device, processes: Processes) -> dict[str, torch.Tensor]:
    """Every process's RNG states (a collective call), as ``rng.<rank>.torch|cuda``."""
    local = checkpointing.rng_tensors(device)
    if processes.count == 1:
        return {f"rng.0.{k}": v for k, v in local.items()}
    import torch.distributed as dist

    gathered: list[Any] = [None] * processes.count
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in local.items()})
    return {f"rng.{rank}.{k}": v for rank, states in enumerate(gathered) for k, v in states.items()}


def _save_checkpoint(
    directory: Path,
    config: PolicyTrainingConfig,
    signature: dict[str, Any],
    state: _LoopState,
    policy: PolicyModel,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    sampler: PolicyEpisodeSampler,
    reference: ReferenceLogps,
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
    tensors: dict[str, torch.Tensor] = {
        **rng,
        "sampler.generator": sampler.generator.get_state(),
        "reference.values": reference.values,
        "reference.known": reference.known.to(torch.uint8),
        **optimiser_tensors,
        **checkpointing.with_prefix("best.", state.best_state or {}),
    }
    meta = {
        "signature": signature,
        "history": state.history,
        "best_step": state.best_step,
        "best_loss": state.best_loss if math.isfinite(state.best_loss) else None,
        "has_best_state": state.best_state is not None,
        "running": [state.running_loss, state.running_accuracy, state.running_steps],
        "running_chosen_nll": state.running_chosen_nll,
        "seconds": state.seconds,
        "optimizer_param_groups": param_groups,
        "scheduler": scheduler.state_dict(),
        "processes": processes.count,
    }
    checkpointing.write_checkpoint(
        directory,
        state.step,
        tensors,
        meta,
        keep=config.keep_checkpoints,
        extra=lambda folder: save_trainable(policy, folder / TRAINABLE_DIR),
    )
    processes.wait()
    return target


def _load_checkpoint(
    path: Path,
    signature: dict[str, Any],
    policy: PolicyModel,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    sampler: PolicyEpisodeSampler,
    reference: ReferenceLogps,
    device: torch.device,
    rank: int = 0,
) -> tuple[_LoopState, dict[str, torch.Tensor] | None]:
    """Restore everything :func:`_save_checkpoint` wrote; returns the loop state and RNG states.

    Raises:
        ConfigError: the checkpoint was made with another configuration or data.
    """
    from steerable_alignment.policy.checkpoint import load_trainable

    meta, tensors = checkpointing.read_checkpoint(path, signature)
    load_trainable(policy, path / TRAINABLE_DIR)
    checkpointing.load_optimizer(optimiser, tensors, meta["optimizer_param_groups"])
    scheduler.load_state_dict(meta["scheduler"])
    sampler.generator.set_state(tensors["sampler.generator"])
    reference.values.copy_(tensors["reference.values"])
    reference.known.copy_(tensors["reference.known"].bool())
    best = checkpointing.strip_prefix("best.", tensors)
    running_loss, running_accuracy, running_steps = meta["running"]
    state = _LoopState(
        step=int(meta["step"]),
        history=meta["history"],
        best_step=int(meta["best_step"]),
        best_loss=math.inf if meta["best_loss"] is None else float(meta["best_loss"]),
        best_state=best if meta["has_best_state"] else None,
        running_loss=float(running_loss),
        running_accuracy=float(running_accuracy),
        running_chosen_nll=float(meta.get("running_chosen_nll", 0.0)),  # older checkpoints
        running_steps=int(running_steps),
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
