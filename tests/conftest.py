"""Shared test set-up: one torch thread, no telemetry, no hub, tiny data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def tiny_synthetic():
    """A small synthetic pairs table and features (same code as the pipeline)."""
    from steerable_alignment.pipelines.synthetic_data.nodes import generate_synthetic_pairs

    params = {
        "n_pairs": 600,
        "threshold": 0.5,
        "split_fractions": {"train": 0.6, "validation": 0.2, "test": 0.2},
        "seed": 3,
    }
    return generate_synthetic_pairs(params)
