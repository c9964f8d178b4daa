import copy
import warnings

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Node
from kedro.runner import SequentialRunner

from steerable_alignment.contracts import check_pairs, pair_columns
from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.ultrafeedback import create_pipeline
from steerable_alignment.pipelines.ultrafeedback.nodes import (
    build_preference_pairs,
    check_pairs_params,
    check_source_params,
    load_ultrafeedback_raw,
)
from steerable_alignment.ultrafeedback.prepare import raw_columns
from tests.pipelines.helpers import config_loader, memory_catalog, project_parameters

OBJECTIVES = {"hh": ["helpfulness", "honesty"], "hht": ["helpfulness", "honesty", "truthfulness"]}


def test_pipeline_end_to_end_on_tiny_parameters():
    params = project_parameters()
    assert params["ultrafeedback"]["source"]["generated"]["n_prompts"] == 150
    catalog = memory_catalog(params, keep=("ultrafeedback_raw",))
    SequentialRunner().run(create_pipeline(), catalog)
    raw = catalog.load("ultrafeedback_raw")
    assert list(raw.columns) == raw_columns()
    assert raw["prompt_id"].nunique() == 150 and len(raw) == 600
    for dataset, objectives in OBJECTIVES.items():
        pairs = catalog.load(f"{dataset}.pairs")
        check_pairs(pairs, objectives, f"{dataset}.pairs")
        assert set(pair_columns(objectives)) <= set(pairs.columns)
        assert len(pairs) > 20 and pairs["is_conflicting"].all()  # non_conflicting_fraction 0
        assert (pairs.groupby("prompt")["split"].nunique() == 1).all()
        assert set(pairs["split"]) == {"train", "validation", "test"}
        choices = pairs[[f"choice_{k}" for k in objectives]]
        assert ((choices.min(axis=1) != choices.max(axis=1)) == pairs["is_conflicting"]).all()


def test_namespaced_pipeline_raises_no_warning(monkeypatch):
    # Kedro warns once per process about dotted dataset names: re-arm that warning.
    monkeypatch.setattr(Node, "__dotted_dataset_name_warned__", False, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipeline = create_pipeline()
    assert {n.name for n in pipeline.nodes} == {
        "load_ultrafeedback_raw",
        "hh.build_preference_pairs",
        "hht.build_preference_pairs",
    }
    assert pipeline.outputs() == {"hh.pairs", "hht.pairs"}


def test_configuration_of_every_environment():
    base = config_loader("local")
    assert check_source_params(base["parameters"]["ultrafeedback"]["source"])["source"] == (
        "generated"
    )
    for dataset, objectives in OBJECTIVES.items():
        block = base["parameters"]["ultrafeedback"][dataset]
        assert check_pairs_params(block)["objectives"] == objectives
        assert block["name"] == dataset
    gpu = config_loader("gpu")["parameters"]["ultrafeedback"]["source"]
    assert check_source_params(gpu) == {
        "source": "hub",
        "hub_id": "openbmb/UltraFeedback",
        "local_path": "data/01_raw/ultrafeedback/*.jsonl",
        "n_prompts": 3000,
        "completions_per_prompt": 4,
        "seed": 0,
        "na_fraction": 0.01,
    }
    catalog = DataCatalog.from_config(base["catalog"])
    assert str(catalog.get("ultrafeedback_raw")._filepath).endswith(
        "data/02_intermediate/ultrafeedback/raw.parquet"
    )
    assert str(catalog.get("hh.pairs")._filepath).endswith("data/03_primary/hh/pairs.parquet")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"kind": "ftp"}, r"ultrafeedback\.source\.kind"),
        ({"colour": 1}, r"ultrafeedback\.source' has unknown key"),
        ({"kind": "local", "local_path": None}, r"ultrafeedback\.source\.local_path"),
        ({"generated": {"n_prompts": 0}}, r"ultrafeedback\.source\.generated\.n_prompts"),
        (
            {"generated": {"completions_per_prompt": 1}},
            r"ultrafeedback\.source\.generated\.completions_per_prompt",
        ),
        ({"generated": {"na_fraction": 1.5}}, r"ultrafeedback\.source\.generated\.na_fraction"),
    ],
)
def test_bad_source_parameters_name_the_parameter(override, needle):
    source = {**project_parameters()["ultrafeedback"]["source"], **override}
    with pytest.raises(ConfigError, match=needle):
        load_ultrafeedback_raw(source)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"objectives": ["helpfulness", "kindness"]}, r"ultrafeedback\.hh\.objectives"),
        ({"objectives": "helpfulness"}, r"ultrafeedback\.hh\.objectives"),
        ({"non_conflicting_fraction": 2}, r"ultrafeedback\.hh\.non_conflicting_fraction"),
        (
            {"split_fractions": {"train": 0.8, "validation": 0.1, "test": 0.2}},
            r"ultrafeedback\.hh\.split_fractions",
        ),
        ({"split_fractions": {"train": 1.0}}, r"ultrafeedback\.hh\.split_fractions"),
        ({"seed": "zero"}, r"ultrafeedback\.hh\.seed"),
        ({"extra": True}, r"ultrafeedback\.hh' has unknown key"),
    ],
)
def test_bad_pairs_parameters_name_the_parameter(override, needle):
    params = {**copy.deepcopy(project_parameters()["ultrafeedback"]["hh"]), **override}
    with pytest.raises(ConfigError, match=needle):
        build_preference_pairs(raw=None, params=params)  # fails before touching the data


def test_unknown_objective_message_lists_the_valid_ones():
    params = {**project_parameters()["ultrafeedback"]["hh"], "objectives": ["kindness"]}
    with pytest.raises(ConfigError, match="instruction_following"):
        check_pairs_params(params)
