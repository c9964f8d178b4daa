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
    assert params["synthetic_data"]["threshold"] == 0.5  # as design_reward assumes
    # Choices and the conflict flag, re-derived from the option values alone
    # with DESIGN.md §4's rewards (exact ties have probability zero here).
    for row in pairs.itertuples():
        choice_0 = int(design_reward(0, row.option_b) > design_reward(0, row.option_a))
        choice_1 = int(design_reward(1, row.option_b) > design_reward(1, row.option_a))
        assert (row.choice_user_0, row.choice_user_1) == (choice_0, choice_1), row.pair_id
        assert row.is_conflicting == (choice_0 != choice_1), row.pair_id
    # The users disagree on half of all pairs (both options above 0.5, or
    # one on each side with a + b > 1): P = 1/4 + 1/2 * 1/2.
    assert pairs["is_conflicting"].mean() == pytest.approx(0.5, abs=0.07)


def design_reward(user: int, y: float) -> float:
    """DESIGN.md §4: user 0 values y below 0.5 and 2y above; user 1 y below and 1 - y above."""
    if y < 0.5:
        return y
    return 2 * y if user == 0 else 1 - y


# Options (a, b), each user's rewards (r(a), r(b)) worked out by hand from
# DESIGN.md §4, the choices they imply (1 = b) and whether the users conflict.
HAND_PAIRS = [
    (0.2, 0.4, (0.2, 0.4), (0.2, 0.4), (1, 1), False),  # both below 0.5: one ordering
    (0.2, 0.7, (0.2, 1.4), (0.2, 0.3), (1, 1), False),  # one each side, a + b < 1
    (0.4, 0.7, (0.4, 1.4), (0.4, 0.3), (1, 0), True),  # one each side, a + b > 1
    (0.6, 0.8, (1.2, 1.6), (0.4, 0.2), (1, 0), True),  # both above: opposite orderings
    (0.9, 0.3, (1.8, 0.3), (0.1, 0.3), (0, 1), True),
    (0.9, 0.05, (1.8, 0.05), (0.1, 0.05), (0, 0), False),
]


@pytest.mark.parametrize(("a", "b", "rewards_0", "rewards_1", "choices", "conflicting"), HAND_PAIRS)
def test_choices_and_conflict_on_hand_computed_pairs(
    a, b, rewards_0, rewards_1, choices, conflicting
):
    import torch

    from steerable_alignment.synthetic.task import choice_probabilities, user_rewards

    rewards = user_rewards(torch.tensor([a, b], dtype=torch.float64))  # (2 options, 2 users)
    assert rewards[:, 0].tolist() == pytest.approx(rewards_0)
    assert rewards[:, 1].tolist() == pytest.approx(rewards_1)
    prob_b = choice_probabilities(torch.tensor([[a, b]], dtype=torch.float64))[0]  # (2 users,)
    assert prob_b.tolist() == [float(c) for c in choices]
    assert bool(prob_b[0] != prob_b[1]) == conflicting


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
