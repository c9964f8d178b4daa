"""DPO training of a policy with the one loop (``training/loop.py``), framework-free.

The task (DESIGN.md §2-3): episodes are rows of tokenised pairs; NP-DPO's
context encoder reads the first ``n`` targets of an episode as embeddings
(context ⊆ targets) and conditions every target on the latent. The DPO loss
is taken on every target, chosen and rejected given by the episode user's
choice (plus, with ``nll_weight > 0``, the chosen response's
length-normalised NLL: DPO+NLL), summed over a micro-batch's pairs as its
share of the step's mean; the loss and the validation scores are the
policy's own (:mod:`steerable_alignment.policy.episode_loss`). Only the trainable
weights (LoRA, FiLM, encoder) are optimised, kept and checkpointed; bf16
autocast applies on CUDA only. Reference log-probs are computed once per
(pair, side) and cached (:class:`ReferenceLogps`), part of every checkpoint.
Validation: the DPO loss of targets outside the context, averaged over
``val_context_sizes`` (it selects the kept weights, whatever ``nll_weight``),
the implicit-reward accuracy and the chosen responses' per-token NLL.

A checkpoint (``<checkpoint_dir>/step-<NNNNNNNN>/``, the loop's format)
also holds ``trainable/``: the trainable weights, loadable onto the base
model with :func:`load_policy`. Its signature covers the configurations,
the data, the base weights, the encoder's warm start, the given reference
log-probs and the prefix states.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from steerable_alignment.episodes.sampler import EvaluationEpisodes, TrainingEpisodes
from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy.checkpoint import load_trainable, save_trainable
from steerable_alignment.policy.episode_loss import episode_dpo_loss, validate_policy
from steerable_alignment.policy.model import base_weights_digest, tensors_digest
from steerable_alignment.policy.pairs import (
    PolicyData,
    ReferenceLogps,
)
from steerable_alignment.runtime.devices import cuda_autocast
from steerable_alignment.training.config import LoopConfig
from steerable_alignment.training.loop import check_split_sizes, run

if TYPE_CHECKING:
    from steerable_alignment.policy.model import PolicyModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyTrainingConfig(LoopConfig):
    """Hyper-parameters of one DPO training run (``params:<variant>.training``).

    The loop's settings (:class:`LoopConfig`) with the policies' defaults, and:

    Attributes:
        beta: β_dpo of the DPO loss (DESIGN.md §2).
        nll_weight: λ >= 0 of the chosen response's length-normalised NLL added
            to each pair's DPO loss (DPO+NLL, Pang et al. 2024;
            :func:`~steerable_alignment.policy.dpo.dpo_loss`); 0 is plain DPO.
        context_lr: learning rate of NP-DPO's context path — the FiLM layers and
            the context encoder, which start from scratch — (None: ``lr``);
            the LoRA adapters keep ``lr``. The schedule scales both.
        batch_size: sequences per forward pass for reference log-probs and validation.

    ``dtype`` autocasts on CUDA only; the CPU always computes in float32.
    """

    SIGNATURE_DEFAULTS: ClassVar[dict[str, Any]] = {"nll_weight": 0.0}

    lr: float = 1e-5
    grad_clip: float | None = 1.0
    beta: float = 0.05
    nll_weight: float = 0.0
    context_lr: float | None = None
    batch_size: int = 16

    def validate(self, prefix: str = "training") -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""
        super().validate(prefix)

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(f"Parameter '{prefix}.{key}': {message}")

        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise fail("batch_size", f"must be a positive integer, got {self.batch_size!r}")
        if self.batch_size <= 0:
            raise fail("batch_size", f"must be a positive integer, got {self.batch_size!r}")
        if not self.beta > 0:
            raise fail("beta", f"must be > 0, got {self.beta}")
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


TRAINABLE_DIR = "trainable"


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


def _check_data(policy: PolicyModel, data: PolicyData, config: PolicyTrainingConfig) -> None:
    """Fail before any work when the data cannot train this policy with this config."""
    if policy.config.uses_context:
        if data.embeddings is None:
            raise ConfigError(
                f"a {policy.config.type} policy reads context embeddings but the data has none "
                "(the data set's 'features' from the embedding pipeline)"
            )
        policy.check_context_embeddings(data.embeddings)
    sizes = {split: len(rows) for split, rows in data.splits.items()}
    check_split_sizes(config, sizes, "tokenised pairs")


class PolicyTask:
    """A DPO policy on tokenised pairs: the loop's :class:`~.loop.TrainingTask` for policies."""

    def __init__(
        self,
        policy: PolicyModel,
        data: PolicyData,
        config: PolicyTrainingConfig,
        reference: ReferenceLogps,
    ) -> None:
        self.policy, self.data, self.config, self.reference = policy, data, config, reference
        self.name = policy.config.type
        self.train_rows, self.val_rows = data.splits["train"], data.splits["validation"]
        self.objective_ids = data.objective_ids(config.objectives or data.objectives)
        self.sample_device = torch.device("cpu")  # rows index CPU tensors
        pairs = config.batch_episodes * config.num_targets
        self.stat_scale = {"accuracy": pairs, "chosen_nll": pairs}

    def setup(self, device: torch.device, dtype: torch.dtype) -> None:
        if dtype != torch.float32 and device.type != "cuda":
            logger.warning(
                "training.dtype=%s applies on CUDA only; the CPU runs float32", self.config.dtype
            )
        self.device, self.dtype = device, dtype
        self.policy.to(device)

    def signature(self) -> dict[str, Any]:
        """Beside the configuration and the data: the base model's weights (a sampled
        digest, so another model of the same architecture or another dtype is refused),
        the context encoder's warm start, the reference log-probs given at the start and
        the cached prefix states."""
        policy, data = self.policy, self.data
        sequences = data.sequences
        prefix = None
        if sequences.prefix_states is not None:
            prefix = {
                "blocks": int(sequences.prefix_blocks),
                "digest": tensors_digest({"states": sequences.prefix_states}),
            }
        return {
            "policy": policy.config.to_dict(),
            "base_model": policy.base_fingerprint,
            "base_weights": base_weights_digest(policy),
            "warm_start": policy.warm_start_digest,
            "reference": reference_digest(self.reference),
            "prefix_states": prefix,
            "data": {
                "pairs": len(data),
                "objectives": list(data.objectives),
                "digest": data_digest(data),
            },
        }

    def param_groups(self) -> list[dict[str, Any]]:
        return _param_groups(self.policy, self.config)

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.policy.trainable_parameters().values())

    def _reference_fn(self, batch: Any) -> torch.Tensor:
        with cuda_autocast(self.device, self.dtype):
            return self.policy.reference_logps(batch)

    def _ensure_reference(self, rows: torch.Tensor) -> int:
        return self.reference.ensure(
            rows, self._reference_fn, self.data.sequences, self.config.batch_size, self.device
        )

    def start(self, val_episodes: EvaluationEpisodes) -> str:
        computed = self._ensure_reference(val_episodes.rows.flatten())
        self.policy.train()
        return f" ({computed} reference pairs computed)"

    def prepare(self, episodes: TrainingEpisodes) -> None:
        self._ensure_reference(episodes.rows.flatten())

    def autocast(self) -> contextlib.AbstractContextManager:
        return cuda_autocast(self.device, self.dtype)

    def loss(self, episodes: TrainingEpisodes, total: int) -> tuple[torch.Tensor, dict[str, Any]]:
        out = episode_dpo_loss(
            self.policy,
            self.data,
            self.reference,
            episodes,
            self.config.beta,
            self.device,
            self.config.nll_weight,
        )
        loss = out.loss.float().sum() / (total * self.config.num_targets)
        stats = {
            "loss": float(loss.detach()),
            "accuracy": float(out.accuracy.sum()),
            "chosen_nll": float(out.chosen_nll.sum()),
        }
        return loss, stats

    def validate(self, episodes: EvaluationEpisodes) -> dict[str, float]:
        scores = validate_policy(
            self.policy,
            self.data,
            self.reference,
            episodes,
            self.config.val_context_sizes,
            self.config.beta,
            self.config.batch_size,
            self.device,
            self.dtype,
        )
        self.policy.train()
        return {
            "val_loss": scores.loss,
            "val_accuracy": scores.accuracy,
            "val_chosen_nll": scores.chosen_nll,
        }

    def selection_score(self, scores: Mapping[str, float]) -> float:
        return scores["val_loss"]  # the DPO loss alone, whatever training.nll_weight

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.policy.trainable_parameters().items()}

    def restore(self, weights: Mapping[str, torch.Tensor]) -> None:
        on_device = {k: v.to(self.device) for k, v in weights.items()}
        self.policy.load_state_dict(on_device, strict=False)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "reference.values": self.reference.values,
            "reference.known": self.reference.known.to(torch.uint8),
        }

    def load_state(self, tensors: Mapping[str, torch.Tensor], folder: Path) -> None:
        load_trainable(self.policy, folder / TRAINABLE_DIR)
        self.reference.values.copy_(tensors["reference.values"])
        self.reference.known.copy_(tensors["reference.known"].bool())

    def write_extra(self, folder: Path) -> None:
        save_trainable(self.policy, folder / TRAINABLE_DIR)


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
    reference = reference or ReferenceLogps.empty(len(data))
    if len(reference) != len(data):
        raise ValueError(f"reference log-probs have {len(reference)} rows, the data {len(data)}")
    result = run(PolicyTask(policy, data, config, reference), config)
    return PolicyTrainingResult(
        policy, result.history, result.best_step, reference, result.resumed_from
    )
