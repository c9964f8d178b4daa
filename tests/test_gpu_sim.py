"""`kedro run --env gpu` end to end on the CPU (tests/gpu_sim.py): the gpu environment works
on first contact, with the real architectures, the hub's schema and conf/gpu's settings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import gpu_sim
from tests.pipelines.helpers import config_loader
from tests.project_copy import copy_project

#: `make gpu-run`: the order whose inputs exist at each step (conf/gpu/README.md).
GPU_RUN = (
    ["synthetic_data", "ultrafeedback", "embedding"],
    ["reward_modelling"],
    ["dpo_all"],
    ["evaluation", "report"],
)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    tmp = tmp_path_factory.mktemp("gpu_sim")
    hub = gpu_sim.write_hub_copy(tmp / "openbmb_UltraFeedback")
    corpus = gpu_sim.corpus_of(hub)
    embedder = gpu_sim.save_llama3_embedder(tmp / "llama3_embedder", corpus)
    policy = gpu_sim.save_qwen25_policy(tmp / "qwen25_policy", corpus)
    runtime = gpu_sim.sim_runtime_params(config_loader("gpu")["parameters"], hub, embedder, policy)
    root = copy_project(tmp / "project", folders=("conf",))
    old_cwd = Path.cwd()
    os.chdir(root)
    started = time.perf_counter()
    try:
        bootstrap_project(root)
        for names in GPU_RUN:
            with KedroSession.create(project_path=root, env="gpu", runtime_params=runtime) as s:
                s.run(pipeline_names=names)
    finally:
        os.chdir(old_cwd)
    return root, time.perf_counter() - started


def test_the_simulated_gpu_run_goes_end_to_end(gpu_run):
    import pandas as pd
    from safetensors.torch import load_file

    root, seconds = gpu_run
    print(f"simulated gpu run (4 sessions, CPU): {seconds:.1f} s")  # noqa: T201
    raw = pd.read_parquet(root / "data/02_intermediate/ultrafeedback/raw.parquet")
    assert raw["prompt_id"].nunique() == 150  # every hub record read through datasets
    features = load_file(root / "data/04_feature/hh/features.safetensors")
    assert features["features"].shape[1:] == (2, 64)  # the Llama embedder, last-token pooling
    pairs = pd.read_parquet(root / "data/03_primary/hh/pairs.parquet")
    assert len(features["pair_id"]) == len(pairs)  # truncate: no pair dropped
    longest = pairs["response_a"].str.len().max()
    assert longest > 5000  # some texts are longer than max_length, and they are kept
    metrics = pd.read_parquet(root / "data/08_reporting/dpo_metrics.parquet")
    assert set(metrics["dataset"]) == {"hh", "hht"}  # dpo_all trained both
    samples = pd.read_parquet(root / "data/08_reporting/generation_samples.parquet")
    assert samples["response"].str.len().gt(0).any()
    assert (root / "data/08_reporting/report.html").is_file()


def test_the_base_policy_keeps_bf16_and_the_qwen_template(gpu_run):
    import json

    root, _ = gpu_run
    config = json.loads((root / "data/06_models/base_policy/config.json").read_text())
    assert config["model_type"] == "qwen2" and config.get("dtype", config.get("torch_dtype")) == (
        "bfloat16"
    )
