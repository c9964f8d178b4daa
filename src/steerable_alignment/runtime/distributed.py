"""Which process am I: a single process, or one of many under ``accelerate launch``/``torchrun``.

The embedding step is data-parallel: process ``r`` of ``W`` embeds shards
``r, r + W, r + 2W, ...``; after a barrier the main process merges.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Protocol

import torch

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
