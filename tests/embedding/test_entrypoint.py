"""``python -m steerable_alignment.embedding``: plain, killed and resumed, and under accelerate."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steerable_alignment.embedding import EmbeddingConfig, embed_pairs
from steerable_alignment.embedding.__main__ import main
from tests.conftest import PROJECT_ROOT
from tests.embedding.tiny_models import make_pairs

# The subprocess runs the real entry point, but sleeps after writing each shard so that
# the test can SIGKILL it between shards (the product code has no test hooks).
SLOW_ENTRY_POINT = """
import sys, time
import steerable_alignment.embedding.shards as shards
save = shards.ShardStore.save
def save_then_sleep(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(60)
shards.ShardStore.save = save_then_sleep
from steerable_alignment.embedding.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _settings(model: Path, shard_dir: Path, **extra) -> dict:
    return {
        "name": "hh",
        "model": str(model),
        "pooling": "last_token",
        "shard_size": 4,
        "shard_dir": str(shard_dir),
        "progress": False,
        "num_threads": 1,
        **extra,
    }


def _set_args(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture
def pairs_file(tmp_path):
    pairs = make_pairs(num_prompts=5, responses=4, seed=4)  # 20 texts -> 5 shards of 4
    path = tmp_path / "pairs.parquet"
    pairs.to_parquet(path)
    return pairs, path


def test_cli_writes_the_features_of_embed_pairs(tiny_llama, pairs_file, tmp_path):
    pairs, path = pairs_file
    params = tmp_path / "params.yml"
    params.write_text(
        "embedding:\n  _d: &d\n    pooling: mean\n    max_length: 64\n"
        f"  hh:\n    <<: *d\n    name: hh\n    model: {tiny_llama}\n"
    )
    out = tmp_path / "out" / "features.safetensors"
    shard_dir = tmp_path / "shards"
    code = main(
        ["--pairs", str(path), "--out", str(out), "--params", str(params), "--dataset", "hh"]
        + [
            "--set",
            "pooling=last_token",
            "--set",
            f"shard_dir={shard_dir}",
            "--set",
            "progress=false",
        ]
    )
    assert code == 0
    written = load_file(out)
    config = EmbeddingConfig.from_params(
        {"name": "hh", "model": str(tiny_llama), "pooling": "last_token", "max_length": 64}
    )
    expected = embed_pairs(pairs, config).features
    assert torch.equal(written["pair_id"], expected["pair_id"])
    torch.testing.assert_close(written["features"], expected["features"], atol=1e-6, rtol=0)


def test_cli_reports_bad_parameters(tiny_llama, pairs_file, tmp_path, caplog):
    _, path = pairs_file
    out = tmp_path / "f.safetensors"
    code = main(["--pairs", str(path), "--out", str(out), "--set", f"model={tmp_path}/none/x"])
    assert code == 2 and not out.exists()
    assert "does not exist" in caplog.text


def test_a_sigkilled_run_resumes_to_the_uninterrupted_result(tiny_llama, pairs_file, tmp_path):
    pairs, path = pairs_file
    shard_dir = tmp_path / "shards"
    settings = _settings(tiny_llama, shard_dir)
    out = tmp_path / "features.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_ENTRY_POINT, "--pairs", str(path), "--out", str(out)]
        + _set_args(settings),
        env=_env(),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (shard_dir / "shard-00000.safetensors").exists():
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no shard written within 60 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    assert [p.name for p in shard_dir.glob("shard-*")] == ["shard-00000.safetensors"]

    config = EmbeddingConfig.from_params(settings)
    resumed = embed_pairs(pairs, config)
    assert resumed.stats.shards_reused == 1
    assert resumed.stats.texts_embedded == resumed.stats.num_texts - 4
    uninterrupted = embed_pairs(
        pairs, EmbeddingConfig.from_params({**settings, "shard_dir": str(tmp_path / "fresh")})
    ).features
    assert torch.equal(resumed.features["pair_id"], uninterrupted["pair_id"])
    assert torch.equal(resumed.features["features"], uninterrupted["features"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_accelerate_processes_give_the_single_process_result(tiny_llama, pairs_file, tmp_path):
    pairs, path = pairs_file
    shard_dir = tmp_path / "shards"
    settings = _settings(tiny_llama, shard_dir, device="cpu")
    out = tmp_path / "features.safetensors"
    accelerate = Path(sys.executable).with_name("accelerate")
    # `--cpu` alone starts ONE process (accelerate needs mpirun for multi-CPU); the
    # torchrun-based launcher of `--multi_gpu` starts two, which use gloo on the CPU.
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "steerable_alignment.embedding", "--pairs", str(path), "--out", str(out),
    ] + _set_args(settings)  # fmt: skip
    result = subprocess.run(
        command, env=_env(), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "Process 0 of 2" in log and "Process 1 of 2" in log
    lines = log.splitlines()
    assert any("[rank 1]" in line and "shard 2/5" in line for line in lines)  # and 4/5
    assert any("[rank 0]" in line and "shard 3/5" in line for line in lines)  # 1/5 and 5/5
    written = load_file(out)
    single = embed_pairs(
        pairs, EmbeddingConfig.from_params({**settings, "shard_dir": str(tmp_path / "single")})
    ).features
    assert torch.equal(written["pair_id"], single["pair_id"])
    assert torch.equal(written["features"], single["features"])
