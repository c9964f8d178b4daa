"""The mixed-user slice of the ``evaluation`` pipeline on a tiny generated HH data set."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import PurePosixPath

import plotly.graph_objects as go
import pytest
import torch
from kedro.runner import SequentialRunner

from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.pipelines.evaluation import create_pipeline
from steerable_alignment.pipelines.evaluation.mixed_user_nodes import (
    MIXED_USER_COLUMNS,
    mixed_user_pipeline,
)
from steerable_alignment.pipelines.ultrafeedback.nodes import (
    build_preference_pairs,
    load_ultrafeedback_raw,
)
from steerable_alignment.pipelines.variants import MIXED_USER_DATASETS, REWARD_DATASETS
from tests.conftest import PROJECT_ROOT
from tests.pipelines.helpers import config_loader, memory_catalog

FEATURE_DIM = 16
VARIANTS = REWARD_DATASETS["hh"].variants


@pytest.fixture(scope="module")
def run():
    """`mixed_user_pipeline("hh")` on the test parameters, random features and models."""
    params = copy.deepcopy(config_loader("test")["parameters"])
    uf = params["ultrafeedback"]
    pairs = build_preference_pairs(load_ultrafeedback_raw(uf["source"]), uf["hh"])
    g = torch.Generator().manual_seed(0)
    features = {
        "pair_id": torch.tensor(pairs["pair_id"].to_numpy()),
        "features": torch.randn(len(pairs), 2, FEATURE_DIM, generator=g),  # (N, 2, D)
    }
    models = {}
    for i, variant in enumerate(VARIANTS):
        torch.manual_seed(i)
        model = params["reward_modelling"]["hh"][variant]["model"]
        config = RewardModelConfig.from_params({**model, "input_dim": FEATURE_DIM})
        models[f"hh.{variant}.reward_model"] = build_model(config)
    keep = ("hh_mixed_user_metrics", "hh.mixed_user_chart", "hh.mixed_user_episodes")
    catalog = memory_catalog(
        params, keep=keep, **{"hh.pairs": pairs, "hh.features": features}, **models
    )
    SequentialRunner().run(mixed_user_pipeline("hh"), catalog)
    return catalog, params


def test_one_row_per_model_user_and_context_size(run):
    catalog, params = run
    table = catalog.load("hh_mixed_user_metrics")
    block = params["mixed_users"]["hh"]
    assert list(table.columns) == MIXED_USER_COLUMNS
    assert set(table["model"]) == set(VARIANTS)
    assert sorted(table["weight"].unique()) == block["weights"]
    assert sorted(table["num_context"].unique()) == block["context_sizes"]
    assert len(table) == len(VARIANTS) * len(block["weights"]) * len(block["context_sizes"])
    assert not table.duplicated(["model", "user", "num_context"]).any()
    assert table["accuracy"].between(0, 1).all() and table["ece"].between(0, 1).all()
    assert (table["n_episodes"] == block["episodes_per_user"]).all()
    assert (table["dataset"] == "hh").all()


def test_chart_has_a_line_per_user_and_a_panel_per_model(run):
    catalog, params = run
    chart = catalog.load("hh.mixed_user_chart")
    assert isinstance(chart, go.Figure)
    weights = params["mixed_users"]["hh"]["weights"]
    assert len(chart.data) == len(VARIANTS) * len(weights)
    assert chart.layout.annotations[0].text == "nppl_mixed"  # NP-BTL's panel first


def test_every_model_is_scored_on_the_same_mixed_user_episodes():
    pipeline = create_pipeline()
    consumers = {n.name for n in pipeline.nodes if "hh.mixed_user_episodes" in n.inputs}
    expected = {f"hh.{v}.predict_mixed_users" for v in VARIANTS}
    assert consumers == expected | {"hh.collect_mixed_user_metrics"}
    assert MIXED_USER_DATASETS == ("hh",)
    names = {n.name for n in pipeline.nodes}
    assert not any(n.startswith("hht.") and "mixed_user" in n for n in names)
    # `kedro run --pipeline evaluation --namespaces hh` includes them.
    selected = {n.name for n in pipeline.only_nodes_with_namespaces(["hh"]).nodes}
    assert expected | {"hh.make_mixed_user_episodes", "hh.plot_mixed_user_accuracy"} <= selected


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_catalog_entries_resolve_to_their_own_files(env):
    from kedro.io import DataCatalog
    from kedro_datasets.pandas import ParquetDataset
    from kedro_datasets.plotly import JSONDataset

    from steerable_alignment.datasets import TensorDictDataset

    catalog = DataCatalog.from_config(config_loader(env)["catalog"])
    expected = {
        "hh.mixed_user_episodes": (
            TensorDictDataset,
            "data/05_model_input/hh/mixed_user_episodes.safetensors",
        ),
        "hh.nppl_mixed.mixed_user_predictions": (
            TensorDictDataset,
            "data/07_model_output/hh/nppl_mixed/mixed_user_predictions.safetensors",
        ),
        "hh_mixed_user_metrics": (
            ParquetDataset,
            "data/08_reporting/hh/mixed_user_metrics.parquet",
        ),
        "hh.mixed_user_chart": (JSONDataset, "data/08_reporting/hh_mixed_user_accuracy.json"),
    }
    used = create_pipeline().datasets()
    for name, (kind, filepath) in expected.items():
        assert name in used, name
        dataset = catalog.get(name)
        assert type(dataset) is kind, (name, type(dataset))
        assert PurePosixPath(dataset._filepath).as_posix() == filepath, name


def test_building_the_pipeline_imports_no_torch():
    code = (
        "import sys, steerable_alignment.pipelines.evaluation as p; p.create_pipeline(); "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
