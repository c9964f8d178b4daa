"""Finished shards of embeddings on disk: atomic, fingerprinted, resumable.

A shard directory holds ``manifest.json`` (the fingerprint of the settings
and inputs) and one ``shard-<k>.safetensors`` per finished shard, each with
``index`` (n,) int64 (unique-text indices) and ``embeddings`` (n, D); its
header repeats the fingerprint hash. Files are written under a temporary
name and renamed, so a killed run leaves either a complete shard or a
``.tmp`` file that the next run removes. A shard is reused only when its
header hash matches the current fingerprint and its ``index`` is the
expected one; otherwise it is recomputed. When the manifest's fingerprint
differs, every shard in the folder is stale and is deleted first.

One job per shard directory at a time: two jobs writing the same folder
with different settings would delete each other's shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

SHARD_FORMAT = "steerable-alignment/embedding-shard"
MANIFEST = "manifest.json"
TENSORS_FORMAT = "steerable-alignment/tensors"
#: Header-metadata prefix of the ``str`` entries of a tensors file (``text:embedding``).
TEXT_PREFIX = "text:"


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """A stable SHA-256 of a JSON-serialisable fingerprint."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor | str], metadata: dict | None = None
):
    """Save tensors as safetensors atomically (the format ``TensorDictDataset`` reads).

    ``str`` entries (e.g. the features' ``embedding`` settings) go into the
    header metadata as ``text:<key>``; ``TensorDictDataset`` loads them back.
    """
    from safetensors.torch import save

    texts = {f"{TEXT_PREFIX}{k}": v for k, v in tensors.items() if isinstance(v, str)}
    payload = save(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items() if not isinstance(v, str)},
        metadata={"format": TENSORS_FORMAT, **texts, **(metadata or {})},
    )
    atomic_write_bytes(Path(path), payload)


class MemoryShardStore:
    """Shards kept in memory: the same interface as :class:`ShardStore`, no resumption."""

    def __init__(self) -> None:
        self._shards: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(self) -> None:
        """Nothing to prepare."""

    def load(self, k: int, expected_index: np.ndarray) -> torch.Tensor | None:
        """The embeddings of shard ``k``, or ``None`` if not computed."""
        shard = self._shards.get(k)
        if shard is None or not np.array_equal(shard[0].numpy(), expected_index):
            return None
        return shard[1]

    def save(self, k: int, index: np.ndarray, embeddings: torch.Tensor) -> None:
        """Keep shard ``k``."""
        self._shards[k] = (torch.from_numpy(np.asarray(index, dtype=np.int64)), embeddings)


class ShardStore:
    """Finished shards in a folder, valid only for one fingerprint.

    Args:
        directory: the shard folder (created if needed).
        fingerprint: JSON-serialisable description of everything the
            embeddings depend on (model, pooling, max_length, dtypes, texts).
    """

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.hash = fingerprint_hash(fingerprint)

    def path(self, k: int) -> Path:
        """Where shard ``k`` lives."""
        return self.directory / f"shard-{k:05d}.safetensors"

    def prepare(self) -> None:
        """Remove stale shards and leftover temporary files; write the manifest.

        Call from one process only, before any shard is computed.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob(".*.tmp"):
            logger.info("Removing %s (left by an interrupted run)", tmp.name)
            tmp.unlink(missing_ok=True)
        manifest_path = self.directory / MANIFEST
        previous = None
        if manifest_path.is_file():
            try:
                previous = json.loads(manifest_path.read_text()).get("fingerprint_hash")
            except (OSError, ValueError):
                previous = None
        shards = sorted(self.directory.glob("shard-*.safetensors"))
        if previous == self.hash:
            logger.info(
                "Shard folder %s: %d shard(s) from earlier runs", self.directory, len(shards)
            )
            return
        if shards:
            logger.warning(
                "Shard folder %s holds %d shard(s) made with other settings or inputs: "
                "deleting them",
                self.directory,
                len(shards),
            )
            for shard in shards:
                shard.unlink(missing_ok=True)
        manifest = {"format": SHARD_FORMAT, "fingerprint_hash": self.hash, **self.fingerprint}
        atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def load(self, k: int, expected_index: np.ndarray) -> torch.Tensor | None:
        """The embeddings of shard ``k`` if it exists and is valid, else ``None``."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = self.path(k)
        if not path.is_file():
            return None
        raw = path.read_bytes()
        try:
            tensors = load(raw)
            size = int.from_bytes(raw[:8], "little")
            metadata = json.loads(raw[8 : 8 + size]).get("__metadata__") or {}
        except (SafetensorError, ValueError, OSError) as err:
            logger.warning("Shard %s is unreadable (%s): recomputing it", path.name, err)
            return None
        index = tensors.get("index")
        if (
            metadata.get("fingerprint_hash") != self.hash
            or metadata.get("shard") != str(k)
            or index is None
            or "embeddings" not in tensors
            or not np.array_equal(index.numpy(), expected_index)
        ):
            logger.warning("Shard %s does not match the current run: recomputing it", path.name)
            return None
        return tensors["embeddings"]

    def save(self, k: int, index: np.ndarray, embeddings: torch.Tensor) -> None:
        """Write shard ``k`` atomically."""
        from safetensors.torch import save

        payload = save(
            {
                "index": torch.from_numpy(np.asarray(index, dtype=np.int64)),
                "embeddings": embeddings.detach().contiguous().cpu(),
            },
            metadata={"format": SHARD_FORMAT, "fingerprint_hash": self.hash, "shard": str(k)},
        )
        atomic_write_bytes(self.path(k), payload)
