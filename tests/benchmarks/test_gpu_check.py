"""benchmarks/gpu_check.py at tiny sizes on the CPU: it works before a GPU is lent."""

import os
import re
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_the_device_check_runs_every_part_at_tiny_sizes_on_the_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "gpu_check.py"),
            "--size",
            "tiny",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("device cpu, torch ")
    assert re.search(r"^\[embedding\] \d+ tokens/s, MFU \d\.\d\d$", out, re.MULTILINE)
    assert re.search(r"^\[bf16\] .*nats/token \(tolerance 0\.05\): ok$", out, re.MULTILINE)
    for design in ("btl_dpo", "np_dpo"):  # dpo_step.py's table rows
        assert re.search(rf"^\[dpo\] {design} +\d+\.\d+ ", out, re.MULTILINE), out
    assert "[dpo] np_dpo / btl_dpo: step" in out


def test_asking_for_cuda_without_it_is_a_clear_usage_error():
    import torch

    if torch.cuda.is_available():
        return
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "this machine has no CUDA" in result.stderr
