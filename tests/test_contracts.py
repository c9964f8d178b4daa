import pytest
import torch

from steerable_alignment.contracts import (
    DataContractError,
    check_same_embedding,
    embedding_of,
    to_preference_data,
)

OBJECTIVES = ["user_0", "user_1"]


def test_round_trip_to_tensors(tiny_synthetic):
    pairs, features = tiny_synthetic
    split = to_preference_data(pairs, features, OBJECTIVES, "synthetic.pairs")
    assert split.data.features.shape == (600, 2, 1)
    assert split.data.choices.shape == (600, 2)
    assert sum(len(v) for v in split.splits.values()) == 600
    assert torch.equal(split.data.choices[:, 0], torch.tensor(pairs["choice_user_0"].to_numpy()))


def test_missing_column_names_dataset_and_column(tiny_synthetic):
    pairs, features = tiny_synthetic
    with pytest.raises(DataContractError, match=r"synthetic\.pairs.*choice_user_1"):
        to_preference_data(
            pairs.drop(columns="choice_user_1"), features, OBJECTIVES, "synthetic.pairs"
        )


@pytest.mark.parametrize("bad", [2, -1, None])
def test_choice_outside_zero_one(tiny_synthetic, bad):
    pairs, features = tiny_synthetic
    broken = pairs.copy()
    broken["choice_user_0"] = broken["choice_user_0"].astype("float64")
    broken.loc[5, "choice_user_0"] = bad
    with pytest.raises(DataContractError, match=r"synthetic\.pairs.*'choice_user_0'"):
        to_preference_data(broken, features, OBJECTIVES, "synthetic.pairs")


def test_features_with_other_rows_or_ids(tiny_synthetic):
    pairs, features = tiny_synthetic
    fewer = {k: v[:-1] for k, v in features.items()}
    with pytest.raises(DataContractError, match="599 rows.*600"):
        to_preference_data(pairs, fewer, OBJECTIVES, "p", "f")
    shuffled = {**features, "pair_id": features["pair_id"].flip(0)}
    with pytest.raises(DataContractError, match="pair_id at row 0"):
        to_preference_data(pairs, shuffled, OBJECTIVES, "p", "f")
    flat = {**features, "features": features["features"][:, 0]}
    with pytest.raises(DataContractError, match=r"shape \(N, 2, D\)"):
        to_preference_data(pairs, flat, OBJECTIVES, "p", "f")
    with pytest.raises(DataContractError, match="missing tensor 'pair_id'"):
        to_preference_data(pairs, {"features": features["features"]}, OBJECTIVES, "p", "f")


def test_features_may_cover_an_ordered_subset_when_allowed(tiny_synthetic):
    pairs, features = tiny_synthetic
    keep = torch.arange(0, 600, 3)  # e.g. over-long pairs dropped by the embedding step
    subset = {k: v[keep] for k, v in features.items()}
    split = to_preference_data(pairs, subset, OBJECTIVES, "p", "f", allow_missing_features=True)
    assert split.data.features.shape[0] == 200
    expected = torch.tensor(pairs["choice_user_0"].to_numpy()[keep.numpy()])
    assert torch.equal(split.data.choices[:, 0], expected)
    assert sum(len(v) for v in split.splits.values()) == 200
    with pytest.raises(DataContractError, match="599 rows|200 rows"):
        to_preference_data(pairs, subset, OBJECTIVES, "p", "f")  # not allowed by default
    unknown = {**subset, "pair_id": subset["pair_id"] + 10_000}
    with pytest.raises(DataContractError, match="not in the pairs table"):
        to_preference_data(pairs, unknown, OBJECTIVES, "p", "f", allow_missing_features=True)
    shuffled = {k: v.flip(0) for k, v in subset.items()}
    with pytest.raises(DataContractError, match="order"):
        to_preference_data(pairs, shuffled, OBJECTIVES, "p", "f", allow_missing_features=True)


def test_embedding_settings_of_features():
    assert embedding_of({"features": torch.zeros(1, 2, 3)}, "synthetic.features") is None
    assert embedding_of({"embedding": '{"model": "m"}'}, "hh.features") == {"model": "m"}
    with pytest.raises(DataContractError, match="Dataset 'hh.features': entry 'embedding'"):
        embedding_of({"embedding": "not json"}, "hh.features")


def test_features_embedded_otherwise_than_a_model_was_trained_on_are_refused():
    trained = {"model": "minilm", "max_length": 256, "pooling": "mean"}
    check_same_embedding(trained, dict(trained), "hh.btl.reward_model", "'hh.features'")
    check_same_embedding(None, trained, "old model", "x")  # not recorded: nothing to check
    changed = {**trained, "max_length": 512, "pooling": "last"}
    with pytest.raises(DataContractError) as err:
        check_same_embedding(trained, changed, "hh.btl.reward_model", "'hh.features'", "Re-run.")
    message = str(err.value)
    assert "'hh.btl.reward_model' was trained on features embedded with other settings" in message
    assert "max_length: 256 vs 512, pooling: 'mean' vs 'last'" in message
    assert message.endswith("Re-run.")
