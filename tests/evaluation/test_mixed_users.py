"""Users on a continuum: choices by hand, the parameters, the table on tiny artefacts."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from steerable_alignment.contracts import DataContractError
from steerable_alignment.evaluation.mixed_users import (
    MixedUserSpec,
    mixed_choice_matrix,
    mixed_choices,
    mixed_user_data,
    pair_ratings,
    user_label,
    weighted_margin,
)
from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.pipelines.evaluation.mixed_user_nodes import (
    MIXED_USER_COLUMNS,
    MixedUserEvaluation,
    collect_mixed_user_metrics,
    make_mixed_user_episodes,
    plot_mixed_user_accuracy,
    predict_mixed_users,
)
from steerable_alignment.pipelines.ultrafeedback.nodes import (
    build_preference_pairs,
    load_ultrafeedback_raw,
)
from tests.pipelines.helpers import config_loader

OBJECTIVES = ["helpfulness", "honesty"]
HH_DATA = {"name": "hh", "objectives": OBJECTIVES, "allow_missing_features": True}
FEATURE_DIM = 16


def _w(first: float) -> torch.Tensor:
    """The (K,) weights of user w over (helpfulness, honesty)."""
    return torch.tensor([first, 1.0 - first], dtype=torch.float64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Hand-made ratings (helpfulness, honesty) of options a and b.
RATINGS_A = torch.tensor([[3.0, 4.0], [5.0, 1.0], [2.0, 4.0], [5.0, 2.0]])
RATINGS_B = torch.tensor([[4.0, 3.0], [1.0, 5.0], [4.0, 1.0], [2.0, 3.0]])


@pytest.mark.parametrize(
    ("w", "expected"),
    [
        # row 0: a 3.75 vs b 3.25; row 1: 2.0 vs 4.0; row 2: 3.5 vs 1.75
        (0.25, [0, 1, 0, None]),  # row 3: 5·.25 + 2·.75 = 2.75 = 2·.25 + 3·.75, a tie
        # row 0: 3.25 vs 3.75; row 1: 4.0 vs 2.0; row 2: 2.5 vs 3.25; row 3: 4.25 vs 2.25
        (0.75, [1, 0, 1, 0]),
        (1.0, [1, 0, 1, 0]),  # helpfulness alone
        (0.0, [0, 1, 0, 1]),  # honesty alone
    ],
)
def test_a_mixed_user_picks_by_the_weighted_rating(w, expected):
    choices = mixed_choices(RATINGS_A, RATINGS_B, _w(w), _gen())
    assert choices.dtype == torch.long and choices.shape == (4,)
    for got, want in zip(choices.tolist(), expected, strict=True):
        if want is not None:
            assert got == want


def test_w_half_ties_the_conflicting_pairs_and_decides_the_others():
    margin = weighted_margin(RATINGS_A, RATINGS_B, _w(0.5))
    # (b − a)·(0.5, 0.5): rows 0 and 1 tie exactly; row 2: (2 − 3)/2; row 3: (−3 + 1)/2
    assert margin.tolist() == [0.0, 0.0, -0.5, -1.0]
    assert mixed_choices(RATINGS_A, RATINGS_B, _w(0.5), _gen())[2:].tolist() == [0, 0]


def test_a_tie_computed_in_float_is_still_a_tie():
    # w = 0.4: a = 0.4·1 + 0.6·3 and b = 0.4·4 + 0.6·1 are both 2.2, but not in float.
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[4.0, 1.0]])
    assert 0.4 * 1 + 0.6 * 3 != 0.4 * 4 + 0.6 * 1
    assert abs(float(weighted_margin(a, b, _w(0.4)))) < 1e-12
    draws = {int(mixed_choices(a, b, _w(0.4), _gen(seed))) for seed in range(20)}
    assert draws == {0, 1}  # decided by the coin, not by rounding


def test_the_coin_is_seeded_fair_and_only_used_on_ties():
    tied = torch.full((4000, 2), 3.0)  # every pair tied for every user
    first = mixed_choices(tied, tied, _w(0.5), _gen(1))
    assert torch.equal(first, mixed_choices(tied, tied, _w(0.5), _gen(1)))
    assert not torch.equal(first, mixed_choices(tied, tied, _w(0.5), _gen(2)))
    assert abs(first.double().mean().item() - 0.5) < 0.03  # 4000 fair coins: s.d. 0.008

    g = _gen(5)
    ratings_a = torch.randint(1, 6, (500, 2), generator=g).double()
    ratings_b = torch.randint(1, 6, (500, 2), generator=g).double()
    untied = weighted_margin(ratings_a, ratings_b, _w(0.25)).abs() > 1e-9
    draws = [mixed_choices(ratings_a, ratings_b, _w(0.25), _gen(s)) for s in range(5)]
    for other in draws[1:]:
        assert torch.equal(other[untied], draws[0][untied])
        assert not torch.equal(other[~untied], draws[0][~untied])


def test_pure_users_make_the_pure_choices_on_untied_pairs():
    g = _gen(9)
    ratings_a = torch.randint(1, 6, (1000, 2), generator=g).double()
    ratings_b = torch.randint(1, 6, (1000, 2), generator=g).double()
    pure = (ratings_b > ratings_a).long()  # the choice_<k> rule of ultrafeedback/pairing.py
    for k, w in ((0, 1.0), (1, 0.0)):
        choices = mixed_choices(ratings_a, ratings_b, _w(w), _gen())
        untied = ratings_a[:, k] != ratings_b[:, k]
        assert torch.equal(choices[untied], pure[untied, k])


def test_a_pure_user_ignores_the_missing_rating_of_the_other_objective():
    a = torch.tensor([[4.0, float("nan")]])
    b = torch.tensor([[2.0, 5.0]])
    assert mixed_choices(a, b, _w(1.0), _gen()).tolist() == [0]
    with pytest.raises(ValueError, match="miss a rating"):
        mixed_choices(a, b, _w(0.5), _gen())


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        (torch.tensor([0.7, 0.7], dtype=torch.float64), "sum to 1"),
        (torch.tensor([1.5, -0.5], dtype=torch.float64), ">= 0"),
        (torch.tensor([1.0], dtype=torch.float64), r"\(K,\)"),
    ],
)
def test_bad_weights_of_the_core_function_fail(weights, needle):
    with pytest.raises(ValueError, match=needle):
        mixed_choices(RATINGS_A, RATINGS_B, weights, _gen())


def test_the_choice_matrix_is_one_column_per_user_and_seeded():
    spec = MixedUserSpec(("helpfulness", "honesty"), (0.0, 0.5, 1.0))
    vectors = spec.weight_vectors(OBJECTIVES)
    choices, tied = mixed_choice_matrix(RATINGS_A, RATINGS_B, vectors, seed=3)
    assert choices.shape == tied.shape == (4, 3)
    assert torch.equal(choices, mixed_choice_matrix(RATINGS_A, RATINGS_B, vectors, seed=3)[0])
    assert tied[:, 1].tolist() == [True, True, False, False]
    assert not tied[:, [0, 2]].any()
    assert choices[:, 2].tolist() == [1, 0, 1, 0] and choices[:, 0].tolist() == [0, 1, 0, 1]


# --- parameters ------------------------------------------------------------

SPEC = {"objectives": ["helpfulness", "honesty"], "weights": [0, 0.25, 0.5, 0.75, 1]}


def test_spec_labels_and_weight_vectors():
    spec = MixedUserSpec.from_params(SPEC, "mixed_users.hh", OBJECTIVES)
    assert spec.objectives == ("helpfulness", "honesty")
    assert spec.labels == ("w=0", "w=0.25", "w=0.5", "w=0.75", "w=1")
    assert user_label(0.1 + 0.2) == "w=0.3"
    # Over the data set's objective order, whatever the order of the mix.
    hht = ["helpfulness", "honesty", "truthfulness"]
    swapped = MixedUserSpec.from_params(
        {"objectives": ["truthfulness", "helpfulness"], "weights": [0.25]}, "p", hht
    )
    [(label, vector)] = swapped.users(hht)
    assert label == "w=0.25" and vector.tolist() == [0.75, 0.0, 0.25]
    assert spec.weight_vectors(OBJECTIVES).sum(1).tolist() == [1.0] * 5


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"weights": [0, 1.5]}, r"'mixed_users\.hh\.weights'.*\[0, 1\].*1\.5"),
        ({"weights": [-0.25, 1]}, r"'mixed_users\.hh\.weights'.*-0\.25"),
        ({"weights": [0, "half"]}, r"'mixed_users\.hh\.weights'.*'half' is not a number"),
        ({"weights": [0, True]}, r"'mixed_users\.hh\.weights'.*not a number"),
        ({"weights": [float("nan")]}, r"'mixed_users\.hh\.weights'.*not a number"),
        ({"weights": []}, r"'mixed_users\.hh\.weights'.*non-empty"),
        ({"weights": [0.5, 0.5]}, r"'mixed_users\.hh\.weights'.*distinct"),
        (
            {"objectives": ["helpfulness", "truthfulness"]},
            r"'mixed_users\.hh\.objectives'.*\['truthfulness'\].*\['helpfulness', 'honesty'\]",
        ),
        ({"objectives": ["honesty"]}, r"'mixed_users\.hh\.objectives'.*two"),
        ({"objectives": "honesty"}, r"'mixed_users\.hh\.objectives'.*two"),
        ({"objectives": ["honesty", "honesty"]}, r"'mixed_users\.hh\.objectives'.*differ"),
        ({"weigths": [0, 1]}, r"'mixed_users\.hh'.*unknown key\(s\) \['weigths'\]"),
    ],
)
def test_bad_spec_parameters_name_the_parameter(change, needle):
    with pytest.raises(ConfigError, match=needle):
        MixedUserSpec.from_params({**SPEC, **change}, "mixed_users.hh", OBJECTIVES)


def _evaluation_params(**changes):
    params = copy.deepcopy(config_loader("test")["parameters"]["mixed_users"]["hh"])
    params.update(changes)
    return params


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"weights": [0, 2]}, r"'mixed_users\.hh\.weights'"),
        ({"objectives": ["helpfulness", "harmlessness"]}, r"'mixed_users\.hh\.objectives'"),
        ({"episodes_per_objective": 5}, r"'mixed_users\.hh'.*unknown.*episodes_per_objective"),
        ({"split": "dev"}, r"'mixed_users\.hh\.split'"),
        ({"context_sizes": [0, -1]}, r"'mixed_users\.hh\.context_sizes'"),
        ({"num_targets": 0}, r"'mixed_users\.hh\.num_targets'"),
        ({"bootstrap": {"replicates": 1, "cluster_by": "prompt", "seed": 0}}, "replicates"),
        ({"bootstrap": {"replicates": 9, "cluster_by": "user", "seed": 0}}, "cluster_by"),
        ({"device": "tpu"}, r"'mixed_users\.hh\.device'"),
    ],
)
def test_bad_node_parameters_fail_before_any_work(change, needle):
    with pytest.raises(ConfigError, match=needle):
        MixedUserEvaluation.from_params(_evaluation_params(**change), HH_DATA)


def test_every_environment_has_valid_mixed_user_parameters():
    for env in ("base", "test", "gpu"):
        params = config_loader(env)["parameters"]
        data = params["reward_modelling"]["hh"]["data"]
        config = MixedUserEvaluation.from_params(params["mixed_users"]["hh"], data)
        assert config.users.weights == (0.0, 0.25, 0.5, 0.75, 1.0)
        assert config.cluster_by == "prompt"


# --- the generated HH data -------------------------------------------------


@pytest.fixture(scope="module")
def hh():
    """HH pairs from the generated UltraFeedback-shaped data (as the pipeline builds
    them) and random features of size FEATURE_DIM; the first pair has no features."""
    params = copy.deepcopy(config_loader("test")["parameters"]["ultrafeedback"])
    pairs = build_preference_pairs(load_ultrafeedback_raw(params["source"]), params["hh"])
    kept = pairs["pair_id"].to_numpy()[1:]
    features = {
        "pair_id": torch.from_numpy(kept.copy()),
        "features": torch.randn(len(kept), 2, FEATURE_DIM, generator=_gen(0)),  # (N, 2, D)
    }
    return pairs, features


def test_pure_users_reproduce_the_stored_choices_of_the_generated_hh_pairs(hh):
    pairs, features = hh
    spec = MixedUserSpec.from_params(SPEC, "mixed_users.hh", OBJECTIVES)
    users = mixed_user_data(pairs, features, HH_DATA, spec, seed=0)
    aligned = pairs.iloc[1:]  # rows follow the features file
    choices = users.split.data.choices  # (P, W)
    assert choices.shape == (len(aligned), 5)
    assert users.split.data.objectives == spec.labels
    # HH keeps only pairs untied on both objectives: no coin for the pure users.
    assert not users.tied[:, [0, 4]].any()
    assert np.array_equal(choices[:, 4].numpy(), aligned["choice_helpfulness"].to_numpy())
    assert np.array_equal(choices[:, 0].numpy(), aligned["choice_honesty"].to_numpy())
    # Conflicting pairs only: the two pure users disagree on every pair, and
    # the w = 0.5 user ties wherever the two rating gaps are equal.
    assert bool((choices[:, 0] != choices[:, 4]).all())
    ratings_a, ratings_b = pair_ratings(pairs, features, HH_DATA)
    gaps = ratings_b - ratings_a  # (P, K)
    assert torch.equal(users.tied[:, 2], gaps[:, 0] == -gaps[:, 1])
    for split, rows in users.split.splits.items():
        assert (aligned["split"].to_numpy()[rows.numpy()] == split).all()


def test_misaligned_features_fail_naming_the_data_set(hh):
    pairs, features = hh
    spec = MixedUserSpec.from_params(SPEC, "mixed_users.hh", OBJECTIVES)
    shuffled = {**features, "pair_id": features["pair_id"].flip(0)}
    with pytest.raises(DataContractError, match="hh.features"):
        mixed_user_data(pairs, shuffled, HH_DATA, spec, seed=0)


def _tiny_model(model_type: str, seed: int):
    torch.manual_seed(seed)
    params = {"type": model_type, "hidden_dim": 16, "latent_dim": 4, "num_heads": 2}
    return build_model(RewardModelConfig.from_params(params, input_dim=FEATURE_DIM))


def test_the_continuum_table_on_tiny_artefacts(hh):
    pairs, features = hh
    params = _evaluation_params()
    episodes = make_mixed_user_episodes(pairs, features, HH_DATA, params)
    models = {"nppl_mixed": _tiny_model("nppl", 0), "btl_mixed": _tiny_model("btl", 1)}
    predictions = {
        name: predict_mixed_users(model, features, episodes, HH_DATA, params)
        for name, model in models.items()
    }
    table = collect_mixed_user_metrics(pairs, features, episodes, HH_DATA, params, **predictions)

    users, sizes = ("w=0", "w=0.25", "w=0.5", "w=0.75", "w=1"), (0, 1, 3)
    assert list(table.columns) == MIXED_USER_COLUMNS
    assert len(table) == len(models) * len(users) * len(sizes)
    keys = set(zip(table["model"], table["user"], table["num_context"], strict=True))
    assert keys == {(m, u, n) for m in models for u in users for n in sizes}
    assert (table["n_episodes"] == params["episodes_per_user"]).all()
    first, second = params["objectives"]
    assert (table["first_objective"] == first).all()
    assert (table["second_objective"] == second).all()
    assert dict(zip(table["user"], table["weight"], strict=False))["w=0.75"] == 0.75
    for column in ("accuracy", "ece", "tied_fraction"):
        assert table[column].between(0, 1).all(), column
    assert (table["nll"] > 0).all() and (table["accuracy_se_bootstrap"] > 0).all()
    tied = table.set_index("user")["tied_fraction"]
    assert (tied[["w=0", "w=1"]] == 0).all() and (tied["w=0.5"] > 0).all()
    # A context-free model predicts the same at every context size.
    btl = table[table["model"] == "btl_mixed"]
    assert (btl.groupby("user")["accuracy"].nunique() == 1).all()

    # Episodes: balanced over users, targets never in the context, the test split.
    assert episodes["rows"].shape == (5 * params["episodes_per_user"], 3 + 8)
    assert torch.equal(episodes["objective"].bincount(), torch.full((5,), 50))
    test_ids = set(pairs.loc[pairs["split"] == "test", "pair_id"])
    assert {int(features["pair_id"][r]) for r in episodes["rows"].flatten()} <= test_ids
    again = make_mixed_user_episodes(pairs, features, HH_DATA, params)
    assert all(torch.equal(episodes[k], again[k]) for k in episodes)

    chart = plot_mixed_user_accuracy(table)
    assert isinstance(chart, go.Figure)
    assert len(chart.data) == len(models) * len(users)
    assert [t.name for t in chart.data if t.showlegend] == list(users)


def test_predictions_refuse_episodes_of_other_features(hh):
    pairs, features = hh
    params = _evaluation_params()
    episodes = make_mixed_user_episodes(pairs, features, HH_DATA, params)
    fewer = {k: v[:-1] for k, v in features.items()}
    with pytest.raises(ConfigError, match="re-run make_mixed_user_episodes"):
        predict_mixed_users(_tiny_model("btl", 0), fewer, episodes, HH_DATA, params)


def test_too_small_a_split_names_the_parameters(hh):
    pairs, features = hh
    params = _evaluation_params(num_targets=10_000)
    with pytest.raises(ConfigError, match=r"mixed_users\.hh\.context_sizes'/'num_targets"):
        make_mixed_user_episodes(pairs, features, HH_DATA, params)


def test_episodes_and_table_round_trip_through_the_catalogs_datasets(hh, tmp_path):
    from kedro_datasets.pandas import ParquetDataset

    from steerable_alignment.datasets import TensorDictDataset

    pairs, features = hh
    params = _evaluation_params(episodes_per_user=4)
    episodes = make_mixed_user_episodes(pairs, features, HH_DATA, params)
    stored = TensorDictDataset(filepath=str(tmp_path / "mixed_user_episodes.safetensors"))
    stored.save(episodes)
    loaded = stored.load()
    assert all(torch.equal(loaded[k], episodes[k]) for k in episodes)
    assert loaded["tied"].dtype == torch.bool
    prediction = predict_mixed_users(_tiny_model("btl", 0), features, loaded, HH_DATA, params)
    table = collect_mixed_user_metrics(
        pairs, features, loaded, HH_DATA, params, btl_mixed=prediction
    )
    dataset = ParquetDataset(filepath=str(tmp_path / "mixed_user_metrics.parquet"))
    dataset.save(table)
    pd.testing.assert_frame_equal(dataset.load(), table)
