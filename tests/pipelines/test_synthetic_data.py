import pytest
from kedro.runner import SequentialRunner

from steerable_alignment.contracts import pair_columns, to_preference_data
from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.synthetic_data import create_pipeline
from steerable_alignment.pipelines.synthetic_data.nodes import generate_synthetic_pairs
from tests.pipelines.helpers import memory_catalog, project_parameters


def test_pipeline_end_to_end_on_tiny_parameters():
    params = project_parameters()
    params["synthetic_data"]["n_pairs"] = 500
    catalog = memory_catalog(params)
    SequentialRunner().run(create_pipeline(), catalog)
    pairs = catalog.load("synthetic.pairs")
    features = catalog.load("synthetic.features")
    assert len(pairs) == 500
    assert set(pair_columns(["user_0", "user_1"])) <= set(pairs.columns)
    assert features["features"].shape == (500, 2, 1)
    assert pairs["split"].value_counts().to_dict() == {"train": 400, "validation": 50, "test": 50}
    to_preference_data(pairs, features, ["user_0", "user_1"])  # the contract holds
    # Conflicting = the users disagree.
    assert (pairs["is_conflicting"] == (pairs["choice_user_0"] != pairs["choice_user_1"])).all()


def test_reproducible_from_seed():
    params = project_parameters()["synthetic_data"]
    a, fa = generate_synthetic_pairs(params)
    b, fb = generate_synthetic_pairs(params)
    assert a.equals(b)
    c, _ = generate_synthetic_pairs({**params, "seed": params["seed"] + 1})
    assert not a.equals(c)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"split_fractions": {"train": 0.8, "validation": 0.1, "test": 0.2}}, "split_fractions"),
        ({"split_fractions": {"train": 0.9, "test": 0.1}}, "split_fractions"),
        ({"n_pairs": 0}, "n_pairs"),
        ({"threshold": 1.5}, "threshold"),
    ],
)
def test_bad_parameters_name_the_parameter(override, needle):
    params = {**project_parameters()["synthetic_data"], **override}
    with pytest.raises(ConfigError, match=rf"synthetic_data\.{needle}"):
        generate_synthetic_pairs(params)
