"""A training run killed with SIGKILL while it writes a checkpoint after every step, then
started again, ends bit for bit as an uninterrupted run: the reward model and the policy.

The in-process tests (``test_loop_resume.py``, ``test_policies.py``) stop a run at a
chosen step; here the operating system kills it wherever it is, mid-write included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from steerable_alignment.training.checkpointing import checkpoint_steps
from tests.conftest import PROJECT_ROOT
from tests.models.tiny_causal_lm import save_tiny_causal_lm
from tests.training.kill_resume_child import POLICY_STEPS, REWARD_STEPS

CHILD = [sys.executable, "-m", "tests.training.kill_resume_child"]


def _environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def _run(*args: str) -> dict:
    subprocess.run([*CHILD, *args], cwd=PROJECT_ROOT, env=_environment(), check=True, timeout=600)
    return json.loads(Path(args[2] + ".json").read_text())


def _last_step(directory: Path) -> int:
    steps = checkpoint_steps(directory)
    return int(steps[-1].name.split("-")[1]) if steps else 0


def _kill_after(args: list[str], directory: Path, step: int) -> int:
    """Start the run, SIGKILL it once a checkpoint of ``step`` or later exists; the last step."""
    child = subprocess.Popen([*CHILD, *args], cwd=PROJECT_ROOT, env=_environment())
    try:
        deadline = time.monotonic() + 600
        while _last_step(directory) < step:
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    return _last_step(directory)


@pytest.mark.parametrize("kind", ["reward", "policy"])
def test_a_run_killed_by_the_system_and_started_again_ends_as_an_uninterrupted_one(kind, tmp_path):
    extra = [str(save_tiny_causal_lm(tmp_path / "base"))] if kind == "policy" else []
    steps = REWARD_STEPS if kind == "reward" else POLICY_STEPS
    full = tmp_path / "full.safetensors"
    assert _run(kind, str(tmp_path / "full"), str(full), *extra)["resumed_from"] == 0

    directory = tmp_path / "killed"
    out = tmp_path / "resumed.safetensors"
    args = [kind, str(directory), str(out), *extra]
    killed_at = _kill_after(args, directory, steps // 4)
    assert 0 < killed_at < steps and not out.exists()

    resumed_from = _run(*args)["resumed_from"]
    assert resumed_from == killed_at  # the last complete checkpoint
    left, right = load_file(full), load_file(out)
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].equal(right[name]), name
    # a checkpoint the kill interrupted leaves no folder behind once the run has gone on
    assert [p.name for p in directory.iterdir()] == [f"step-{steps:08d}"]


def test_a_write_a_kill_left_unfinished_is_removed_by_the_next_one(tmp_path):
    import torch

    from steerable_alignment.training.checkpointing import write_checkpoint

    leftover = tmp_path / ".step-00000003.x1y2.tmp"  # what atomic_directory had begun
    leftover.mkdir(parents=True)
    (leftover / "state.safetensors").write_bytes(b"half")
    write_checkpoint(tmp_path, 4, {"w": torch.zeros(2)}, {"signature": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000004"]
