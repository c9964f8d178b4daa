"""Resumable training checkpoints without pickle, written by the one training loop.

A checkpoint is a folder ``<checkpoint_dir>/step-<NNNNNNNN>/`` written
atomically (a temporary sibling renamed into place, so every folder found is
complete) holding:

- ``state.safetensors``: tensors (weights, optimiser moments, RNG and
  sampler generator states, ...), flat names with dotted prefixes;
- ``state.json``: everything else (step, history, scheduler state, optimiser
  hyper-parameters) and the run's *signature*, a JSON tree of what must not
  change for a resumed run to end as an uninterrupted run would; a checkpoint
  whose signature differs is refused, naming the differing keys;
- whatever else the caller writes into the folder (``extra``).

A run killed mid-write leaves at most a hidden ``.step-<NNNNNNNN>.*`` folder,
which the next write removes (one run writes a checkpoint folder at a time).

Nothing is unpickled: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from steerable_alignment.models.config import ConfigError

logger = logging.getLogger(__name__)

#: 2: one loop for every model (``training/loop.py``); format 1 came from the two loops before it.
CHECKPOINT_FORMAT = 2
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")
OPTIMIZER_PREFIX = "optimizer."


def step_directory(directory: Path, step: int) -> Path:
    """``<directory>/step-<NNNNNNNN>``."""
    return Path(directory) / f"step-{step:08d}"


def checkpoint_steps(directory: Path) -> list[Path]:
    """The checkpoint folders of ``directory``, oldest step first ([] if it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the highest step (atomic writes: every one found is complete)."""
    steps = checkpoint_steps(directory)
    return steps[-1] if steps else None


def optimizer_tensors(optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """An optimiser's state as flat tensors ``optimizer.<param index>.<name>`` and its
    JSON-serialisable param groups."""
    state = optimiser.state_dict()
    tensors = {
        f"{OPTIMIZER_PREFIX}{index}.{key}": torch.as_tensor(value).detach().cpu()
        for index, values in state["state"].items()
        for key, value in values.items()
    }
    return tensors, state["param_groups"]


def load_optimizer(
    optimiser: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], param_groups: list
) -> None:
    """Restore what :func:`optimizer_tensors` gave (JSON turned tuples into lists)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            index, name = key[len(OPTIMIZER_PREFIX) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    groups = [dict(group) for group in param_groups]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimiser.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's global RNG state (and ``device``'s CUDA RNG state) as ``torch``/``cuda``."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_state(tensors: Mapping[str, torch.Tensor], device: torch.device) -> None:
    """Restore what :func:`rng_tensors` gave."""
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)


def with_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{prefix + name: tensor}``."""
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors whose name starts with ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A short hash of tensors' dtypes, shapes and bytes (identifies the data a run trains on)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def write_checkpoint(
    directory: Path,
    step: int,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    keep: int = 1,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``step-<step>/`` atomically, then drop all but the latest ``keep`` checkpoints.

    Args:
        directory: the run's checkpoint folder.
        step: the optimiser step the checkpoint holds.
        tensors: flat name -> tensor (saved contiguous, on the CPU).
        meta: JSON-serialisable facts; should hold the run's ``signature``.
        keep: how many checkpoints to keep.
        extra: writes more files into the (temporary) checkpoint folder.

    Returns:
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    from steerable_alignment.policy.base_model import atomic_directory

    target = step_directory(directory, step)
    payload = {"format_version": CHECKPOINT_FORMAT, "step": step, **meta}
    for leftover in Path(directory).glob(".step-*"):  # a write a killed run left unfinished
        shutil.rmtree(leftover, ignore_errors=True)
    with atomic_directory(target) as tmp:
        if extra is not None:
            extra(tmp)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp / STATE_TENSORS),
        )
        (tmp / STATE_JSON).write_text(json.dumps(payload, indent=1) + "\n")  # keeps key order
    for path in checkpoint_steps(directory)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    logger.info("Checkpoint at step %d: %s", step, target)
    return target


def read_checkpoint(
    path: Path, signature: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON facts and tensors of a checkpoint made by a run with ``signature``.

    Raises:
        ConfigError: another checkpoint format, or a run with another
            signature (the message names the differing keys).
    """
    from safetensors.torch import load_file

    meta = json.loads((path / STATE_JSON).read_text())
    if meta.get("format_version") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{path}: checkpoint format {meta.get('format_version')!r}, this code reads "
            f"{CHECKPOINT_FORMAT} (written by an older version). Use another "
            f"'training.checkpoint_dir' (or delete {Path(path).parent}) to start afresh"
        )
    check_signature(path, meta.get("signature"), signature)
    return meta, load_file(str(path / STATE_TENSORS))


def check_signature(path: Path, saved: Any, now: Any) -> None:
    """Refuse a checkpoint written by a run with another configuration or data.

    Raises:
        ConfigError: naming every differing key with its (checkpoint, now) values.
    """
    now = json.loads(json.dumps(now))  # compare as stored: tuples become lists
    if saved == now:
        return
    raise ConfigError(
        f"{path} was written by a run with another configuration or data; differences "
        f"(checkpoint, now): {differences(saved, now)}. Use another 'training.checkpoint_dir' "
        f"(or delete {Path(path).parent}) to start afresh"
    )


def differences(saved: Any, now: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> (saved, now) for every leaf where two JSON trees differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out: dict[str, Any] = {}
        for key in sorted(set(saved) | set(now)):
            out.update(differences(saved.get(key), now.get(key), f"{prefix}{key}."))
        return out
    return {} if saved == now else {prefix.rstrip("."): (saved, now)}
