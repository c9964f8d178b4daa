import copy
import warnings

import pandas as pd
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
from steerable_alignment.pipelines.ultrafeedback.pipeline import dataset_pipeline
from steerable_alignment.ultrafeedback.counts import EmptySplitError
from steerable_alignment.ultrafeedback.reading import raw_columns
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
        assert len(pairs) > 20
        assert (pairs.groupby("prompt")["split"].nunique() == 1).all()
        assert set(pairs["split"]) == {"train", "validation", "test"}


ALL_TRAIN = {"train": 1.0, "validation": 0.0, "test": 0.0}


def _hand_made_raw(rows: list[tuple[int, int, float, float, float]]) -> pd.DataFrame:
    """A raw table from (prompt, completion, helpfulness, honesty, truthfulness) rows."""
    return pd.DataFrame(
        {
            "prompt_id": [r[0] for r in rows],
            "prompt": [f"Question {r[0]}?" for r in rows],
            "completion_idx": [r[1] for r in rows],
            "response": [f"Answer {r[0]}.{r[1]}" for r in rows],
            "rating_helpfulness": [float(r[2]) for r in rows],
            "rating_honesty": [float(r[3]) for r in rows],
            "rating_truthfulness": [float(r[4]) for r in rows],
            "rating_instruction_following": 3.0,
        }
    ).astype({"prompt_id": "int64", "completion_idx": "int64"})


def _run_pair_building(raw: pd.DataFrame, **override) -> DataCatalog:
    """Run hh and hht pair building (the namespaced pipelines) on a given raw table."""
    params = copy.deepcopy(project_parameters())
    for dataset in OBJECTIVES:
        params["ultrafeedback"][dataset].update(override)
    outputs = tuple(f"{d}.pairs" for d in OBJECTIVES)
    catalog = memory_catalog(params, keep=outputs, ultrafeedback_raw=raw)
    pipeline = dataset_pipeline("hh") + dataset_pipeline("hht")
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_is_conflicting_on_hand_made_ratings():
    # Ratings chosen so the answer is known: prompt 0 -- (0, 1) conflicts on HH;
    # (0, 2) agrees on all three; (1, 2) agrees on HH, disagrees on truthfulness.
    # Prompt 1 -- (0, 1) ties on honesty; prompt 2 -- (0, 1) ties on truthfulness only.
    raw = _hand_made_raw(
        [
            (0, 0, 2, 4, 2),
            (0, 1, 4, 2, 5),
            (0, 2, 5, 5, 4),
            (1, 0, 1, 3, 1),
            (1, 1, 5, 3, 5),
            (2, 0, 1, 5, 3),
            (2, 1, 4, 1, 3),
        ]
    )
    expected = {
        "hh": {(0, 0, 1): True, (0, 0, 2): False, (0, 1, 2): False, (2, 0, 1): True},
        "hht": {(0, 0, 1): True, (0, 0, 2): False, (0, 1, 2): True},
    }
    catalog = _run_pair_building(raw, non_conflicting_fraction=1.0, split_fractions=ALL_TRAIN)
    for dataset, objectives in OBJECTIVES.items():
        pairs = catalog.load(f"{dataset}.pairs")
        check_pairs(pairs, objectives, f"{dataset}.pairs")
        low = pairs[["completion_idx_a", "completion_idx_b"]].min(axis=1)
        high = pairs[["completion_idx_a", "completion_idx_b"]].max(axis=1)
        got = dict(zip(zip(pairs["prompt_id"], low, high), pairs["is_conflicting"]))
        assert got == expected[dataset], dataset
    conflicting_only = _run_pair_building(raw, split_fractions=ALL_TRAIN)
    hht = conflicting_only.load("hht.pairs")
    assert sorted(zip(hht["prompt_id"], hht["completion_idx_a"] + hht["completion_idx_b"])) == [
        (0, 1),
        (0, 3),
    ]


def test_a_split_emptied_by_ties_fails_before_writing():
    # Every pair ties on truthfulness: HH builds, HHT has nothing left in any split.
    rows = [(p, c, c + 1, 4 - c, 3) for p in range(30) for c in range(3)]
    catalog = memory_catalog(
        project_parameters(), keep=("hh.pairs", "hht.pairs"), ultrafeedback_raw=_hand_made_raw(rows)
    )
    with pytest.raises(EmptySplitError) as error:
        SequentialRunner().run(dataset_pipeline("hh") + dataset_pipeline("hht"), catalog)
    message = str(error.value)
    assert "data set 'hht'" in message and "split 'train'" in message
    assert "rule 'tie'" in message and "'truthfulness': 72" in message  # 24 train prompts x 3
    assert not catalog.exists("hht.pairs")


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
