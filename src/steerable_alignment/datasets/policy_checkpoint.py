"""A Kedro dataset for a DPO policy's trainable weights (LoRA, FiLM, context encoder).

The folder is the one :func:`steerable_alignment.policy.save_trainable` writes
(``trainable.safetensors`` + ``policy.json`` with the policy config and the
base model's name and fingerprint), plus ``training.json`` (β_dpo and the
training facts). It never holds the base weights: load the base model
(``base_policy``) and call :meth:`TrainedPolicy.build` — or
:func:`steerable_alignment.policy.load_policy` on the folder. Writes go to a
temporary sibling folder renamed into place; nothing is unpickled. torch is
imported inside ``load``/``save`` so building the catalog stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from steerable_alignment.datasets.base import LocalVersionedDataset

TRAINING_FILE = "training.json"


class PolicyCheckpointDataset(LocalVersionedDataset):
    """A :class:`~steerable_alignment.policy.checkpoint.TrainedPolicy` in one folder.

    Example catalog entry::

        "{dataset}.{variant}.policy":
          type: steerable_alignment.datasets.PolicyCheckpointDataset
          filepath: data/06_models/{dataset}/{variant}/policy
    """

    def _found(self, path: Path) -> bool:
        from steerable_alignment.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE

        return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()

    def load(self) -> Any:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from steerable_alignment.models.config import ConfigError
        from steerable_alignment.policy.checkpoint import (
            WEIGHTS_FILE,
            TrainedPolicy,
            read_checkpoint_config,
        )

        path = Path(self._get_load_path())
        try:
            config, record = read_checkpoint_config(path)
            state = load_file(str(path / WEIGHTS_FILE))
            training = json.loads((path / TRAINING_FILE).read_text())
        except (FileNotFoundError, ConfigError, SafetensorError, KeyError, ValueError) as err:
            raise DatasetError(f"{path}: not a readable policy checkpoint: {err}") from err
        return TrainedPolicy(
            config=config,
            base_model_name=record["name"],
            base_fingerprint=record["fingerprint"],
            state=state,
            beta=float(training["beta"]),
            info=training.get("info", {}),
        )

    def save(self, data: Any) -> None:
        from steerable_alignment.policy.base_model import atomic_directory
        from steerable_alignment.policy.checkpoint import save_trainable

        for attribute in ("config", "base_fingerprint", "trainable_parameters", "beta"):
            if not hasattr(data, attribute):
                raise DatasetError(
                    f"{self._filepath}: expected a TrainedPolicy, got {type(data).__name__} "
                    f"(no '{attribute}')"
                )
        path = Path(self._get_save_path())
        info = dict(getattr(data, "info", {}) or {})
        with atomic_directory(path) as tmp:
            save_trainable(data, tmp)
            (tmp / TRAINING_FILE).write_text(
                json.dumps({"beta": float(data.beta), "info": info}, indent=2, sort_keys=True)
                + "\n"
            )
