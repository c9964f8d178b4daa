"""Save and load a policy's trainable weights only (LoRA, FiLM, context encoder).

A checkpoint is a folder with ``trainable.safetensors`` and ``policy.json``
(the :class:`PolicyConfig`, the base model's name and architecture
fingerprint). It is loaded onto a freshly loaded base model; the base weights
are never written. Files are written under temporary names, then renamed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy.config import PolicyConfig
from steerable_alignment.policy.model import PolicyModel, base_model_fingerprint

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "trainable.safetensors"
CONFIG_FILE = "policy.json"
FORMAT_VERSION = 1


class BaseModelMismatchError(ConfigError):
    """A checkpoint was made for another base model."""


def save_trainable(policy: PolicyModel, directory: str | Path) -> Path:
    """Write the policy's trainable weights and config to ``directory``.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: param.detach().cpu().contiguous()
        for name, param in policy.trainable_parameters().items()
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "policy": policy.config.to_dict(),
        "base_model": {"name": policy.base_model_name, "fingerprint": policy.base_fingerprint},
    }
    suffix = f".tmp-{os.getpid()}"
    weights_tmp = directory / (WEIGHTS_FILE + suffix)
    config_tmp = directory / (CONFIG_FILE + suffix)
    try:
        save_file(tensors, str(weights_tmp), metadata={"format_version": str(FORMAT_VERSION)})
        config_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(weights_tmp, directory / WEIGHTS_FILE)
        os.replace(config_tmp, directory / CONFIG_FILE)
    finally:
        for tmp in (weights_tmp, config_tmp):
            tmp.unlink(missing_ok=True)
    logger.info("Saved %d trainable tensors to %s", len(tensors), directory)
    return directory


def read_checkpoint_config(directory: str | Path) -> tuple[PolicyConfig, dict[str, Any]]:
    """The policy config and the base-model record (name, fingerprint) of a checkpoint."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a policy checkpoint folder")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: checkpoint format {meta.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    config = PolicyConfig.from_params(meta["policy"], prefix=f"{path}:policy")
    return config, meta["base_model"]


def check_base_model(record: dict[str, Any], base_model: PreTrainedModel, name: str) -> None:
    """Raise :class:`BaseModelMismatchError` when ``base_model`` is not the checkpoint's base."""
    found = base_model_fingerprint(base_model)
    expected = record["fingerprint"]
    if found != expected:
        differ = {k: (expected.get(k), found.get(k)) for k in expected if expected[k] != found[k]}
        raise BaseModelMismatchError(
            f"The checkpoint was made for base model {record['name']!r} but is being loaded "
            f"onto {name!r}; they differ in (checkpoint, given): {differ}"
        )
    if record["name"] != name:
        logger.warning(
            "Checkpoint made for %r, loaded onto %r (same architecture)", record["name"], name
        )


def load_trainable(policy: PolicyModel, directory: str | Path) -> PolicyModel:
    """Load a checkpoint's trainable weights into an existing policy (in place).

    Raises:
        BaseModelMismatchError: the policy wraps another base model.
        ConfigError: the checkpoint's policy config differs from the policy's.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config, record = read_checkpoint_config(directory)
    check_base_model(record, policy.lm.get_base_model(), policy.base_model_name)
    if config != policy.config:
        ours, theirs = policy.config.to_dict(), config.to_dict()
        differ = {k: (theirs[k], ours[k]) for k in ours if ours[k] != theirs[k]}
        raise ConfigError(
            f"{directory}: the checkpoint's policy config differs from the policy's "
            f"(checkpoint, policy): {differ}"
        )
    state = load_file(str(directory / WEIGHTS_FILE))
    expected = set(policy.trainable_parameters())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"{directory / WEIGHTS_FILE} does not match the policy: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    policy.load_state_dict(state, strict=False)
    logger.info("Loaded %d trainable tensors from %s", len(state), directory)
    return policy


def load_policy(
    directory: str | Path, base_model: PreTrainedModel, base_model_name: str | None = None
) -> PolicyModel:
    """Build the checkpoint's policy around ``base_model`` and load its trainable weights.

    Args:
        directory: a folder written by :func:`save_trainable`.
        base_model: a freshly loaded base causal LM (wrapped in place).
        base_model_name: its name or path (default: ``base_model.name_or_path``).

    Raises:
        BaseModelMismatchError: ``base_model`` is not the checkpoint's base model.
    """
    config, record = read_checkpoint_config(directory)
    name = base_model_name or base_model.name_or_path or "<unnamed>"
    check_base_model(record, base_model, name)
    policy = PolicyModel(config, base_model, base_model_name=name)
    return load_trainable(policy, directory)


@dataclass(frozen=True)
class TrainedPolicy:
    """A policy's trainable weights, detached from the base model (the saved artefact).

    Duck-types what :func:`save_trainable` reads from a :class:`PolicyModel`
    (``config``, ``base_model_name``, ``base_fingerprint``,
    ``trainable_parameters()``), so it is written in the same format and the
    folder loads with :func:`load_policy`.

    Attributes:
        config: the policy's config.
        base_model_name: the base model's name or path.
        base_fingerprint: its architecture facts (checked when loading).
        state: trainable parameter name -> CPU tensor.
        beta: β_dpo it was trained with (scales the implicit reward).
        info: training facts (best step, steps, ...), JSON-serialisable.
    """

    config: PolicyConfig
    base_model_name: str
    base_fingerprint: dict[str, Any]
    state: dict[str, torch.Tensor]
    beta: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_policy(cls, policy: PolicyModel, beta: float, **info: Any) -> TrainedPolicy:
        state = {k: v.detach().cpu().clone() for k, v in policy.trainable_parameters().items()}
        return cls(
            policy.config, policy.base_model_name, dict(policy.base_fingerprint), state, beta, info
        )

    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        return self.state

    def build(self, base_model: Any, base_model_name: str | None = None) -> PolicyModel:
        """The policy around ``base_model`` (wrapped in place) with these weights.

        Raises:
            BaseModelMismatchError: ``base_model`` is not the one it was trained on.
        """
        name = base_model_name or getattr(base_model, "name_or_path", "") or "<unnamed>"
        record = {"name": self.base_model_name, "fingerprint": self.base_fingerprint}
        check_base_model(record, base_model, name)
        policy = PolicyModel(self.config, base_model, base_model_name=name)
        expected = set(policy.trainable_parameters())
        missing, unexpected = sorted(expected - set(self.state)), sorted(set(self.state) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"The trained policy's weights do not match its config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        policy.load_state_dict(self.state, strict=False)
        return policy
