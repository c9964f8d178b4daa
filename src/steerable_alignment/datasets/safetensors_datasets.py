"""Kedro datasets for tensors and reward models stored as safetensors.

Both are versionable, write to a temporary name and rename (a crash never
leaves a half-written file under the real name), and never unpickle: a
safetensors file is a JSON header plus raw tensor bytes. torch and
safetensors are imported inside ``load``/``save`` so that building the
catalog stays fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from steerable_alignment.datasets.base import LocalVersionedDataset

#: Header-metadata prefix of the ``str`` entries of a tensors file; the same as
#: ``embedding.shards.TEXT_PREFIX`` (this module stays free of torch at import).
TEXT_PREFIX = "text:"
MODEL_FORMAT = "steerable-alignment/reward-model"
MODEL_FORMAT_VERSION = "1"


class _SafetensorsFileDataset(LocalVersionedDataset):
    """Shared plumbing: one safetensors file, atomic writes, clear errors."""

    def _read(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Tensors and header metadata of the file to load."""
        from safetensors import SafetensorError
        from safetensors.torch import load as load_tensors

        path = Path(self._get_load_path())
        if not path.is_file():
            raise DatasetError(f"{path}: no such file")
        raw = path.read_bytes()
        try:
            tensors = load_tensors(raw)
            metadata = _header_metadata(raw)
        except (SafetensorError, ValueError) as err:
            raise DatasetError(
                f"{path}: not a valid safetensors file (truncated or corrupted?): {err}"
            ) from err
        return tensors, metadata

    def _write(self, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
        from safetensors.torch import save as save_tensors

        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = save_tensors(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual mode
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _header_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (a JSON object)."""
    if len(raw) < 8:
        raise ValueError("file shorter than the 8-byte header length")
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    return header.get("__metadata__") or {}


class TensorDictDataset(_SafetensorsFileDataset):
    """A ``dict[str, torch.Tensor]`` in one safetensors file.

    ``str`` entries (the features' ``embedding`` settings, JSON) are kept in
    the header metadata as ``text:<key>`` and loaded back as strings.

    Example catalog entry::

        synthetic.features:
          type: steerable_alignment.datasets.TensorDictDataset
          filepath: data/04_feature/synthetic/features.safetensors
    """

    def load(self) -> dict[str, Any]:
        tensors, metadata = self._read()
        texts = {k[len(TEXT_PREFIX) :]: v for k, v in metadata.items() if k.startswith(TEXT_PREFIX)}
        return {**tensors, **texts}

    def save(self, data: dict[str, Any]) -> None:
        import torch

        if not isinstance(data, dict) or not all(
            isinstance(v, (torch.Tensor, str)) for v in data.values()
        ):
            raise DatasetError(
                f"{self._filepath}: expected a dict of tensors (and str entries), got {type(data)}"
            )
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        texts = {f"{TEXT_PREFIX}{k}": v for k, v in data.items() if isinstance(v, str)}
        self._write(tensors, {"format": "steerable-alignment/tensors", **texts})

    def preview(self) -> dict[str, Any]:
        """Shapes and dtypes (kedro-viz metadata panel), and the ``str`` entries."""
        tensors, metadata = self._read()
        shown: dict[str, Any] = {k: f"{tuple(v.shape)} {v.dtype}" for k, v in tensors.items()}
        shown.update(
            {k[len(TEXT_PREFIX) :]: v for k, v in metadata.items() if k.startswith(TEXT_PREFIX)}
        )
        return shown


class RewardModelDataset(_SafetensorsFileDataset):
    """A preference model: its weights plus its config (JSON in the header).

    Loading rebuilds the model class named by the config and loads the
    weights strictly; nothing is unpickled.
    """

    def load(self) -> Any:
        from steerable_alignment.models.config import RewardModelConfig
        from steerable_alignment.models.reward_models import build_model

        tensors, metadata = self._read()
        path = self._get_load_path()
        if metadata.get("format") != MODEL_FORMAT or "config" not in metadata:
            raise DatasetError(
                f"{path}: not a steerable-alignment reward model (no config in the header)"
            )
        try:
            config = RewardModelConfig.from_params(json.loads(metadata["config"]))
            model = build_model(config)
            model.load_state_dict(tensors, strict=True)
            model.trained_with = json.loads(metadata.get("trained_with", "{}"))
        except (ValueError, RuntimeError, KeyError) as err:
            raise DatasetError(f"{path}: weights do not match their config: {err}") from err
        return model.eval()

    def save(self, data: Any) -> None:
        config = getattr(data, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            raise DatasetError(f"{self._filepath}: expected a model with a `config`, got {data!r}")
        metadata = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "config": json.dumps(config.to_dict()),
            # What it was trained with (max_context, the features' embedding settings):
            # steer and the pipelines check these instead of today's parameters.
            "trained_with": json.dumps(getattr(data, "trained_with", None) or {}),
        }
        self._write(data.state_dict(), metadata)
