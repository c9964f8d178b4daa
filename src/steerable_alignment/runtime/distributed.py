"""Which process am I: a single process, or one of many under ``accelerate launch``/``torchrun``.

The embedding step is data-parallel: process ``r`` of ``W`` embeds shards
``r, r + W, r + 2W, ...``; after a barrier the main process merges. The
training loop's collectives (each process's device, the gradient and
statistics all-reduce) are here too.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Protocol

import torch

from steerable_alignment.runtime.devices import resolve_device

logger = logging.getLogger(__name__)

#: How long a process may wait at a barrier for slower ones (a large model on
#: a long data set can keep one GPU busy for hours after another has finished).
BARRIER_TIMEOUT = datetime.timedelta(hours=12)


class Processes(Protocol):
    """The few collective operations the embedding step needs."""

    index: int
    count: int
    local_index: int

    @property
    def is_main(self) -> bool: ...

    def wait(self) -> None:
        """Block until every process reaches this point."""


class SingleProcess:
    """One process: index 0 of 1, barriers are no-ops."""

    index = 0
    count = 1
    local_index = 0

    @property
    def is_main(self) -> bool:
        return True

    def wait(self) -> None:
        pass


class AccelerateProcesses:
    """The processes started by ``accelerate launch`` or ``torchrun`` (via accelerate's state).

    Args:
        cpu: use the CPU (gloo backend) even if CUDA is available.
    """

    def __init__(self, cpu: bool) -> None:
        from accelerate import PartialState

        self._state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
        self.index = self._state.process_index
        self.count = self._state.num_processes
        self.local_index = self._state.local_process_index

    @property
    def is_main(self) -> bool:
        return self._state.is_main_process

    def wait(self) -> None:
        self._state.wait_for_everyone()


def launched_world_size() -> int:
    """The number of processes a launcher (accelerate, torchrun, MPI) started; 1 if none."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def current_processes(device: str) -> Processes:
    """The processes of this run, from the launcher's environment.

    Args:
        device: the ``device`` parameter; ``cpu`` (or ``auto`` without CUDA)
            selects the gloo backend.
    """
    if launched_world_size() <= 1:
        return SingleProcess()
    cpu = device == "cpu" or not torch.cuda.is_available()
    processes = AccelerateProcesses(cpu=cpu)
    logger.info("Process %d of %d (%s)", processes.index, processes.count, "cpu" if cpu else "cuda")
    return processes


def process_device(name: str, processes: Processes) -> torch.device:
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


def all_reduce_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of ``values`` over every process (a CPU float64 tensor back)."""
    import torch.distributed as dist

    values = values.double().to(device)
    dist.all_reduce(values)
    return values.cpu()


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
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
