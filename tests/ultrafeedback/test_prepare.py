import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerable_alignment.contracts import check_pairs
from steerable_alignment.ultrafeedback.generate import OBJECTIVES, generate_records
from steerable_alignment.ultrafeedback.prepare import (
    RawDataError,
    build_pairs,
    load_raw,
    normalise_records,
    raw_columns,
)

HH = ["helpfulness", "honesty"]
NAN = float("nan")


def _raw(rows):
    """A normalised raw table from (prompt_id, completion_idx, helpfulness, honesty) rows."""
    frame = pd.DataFrame(rows, columns=["prompt_id", "completion_idx", "h", "o"])
    return pd.DataFrame(
        {
            "prompt_id": frame["prompt_id"].astype("int64"),
            "prompt": [f"prompt {p}" for p in frame["prompt_id"]],
            "completion_idx": frame["completion_idx"].astype("int64"),
            "response": [f"answer {p}.{c}" for p, c in zip(frame.prompt_id, frame.completion_idx)],
            "rating_helpfulness": frame["h"].astype(float),
            "rating_honesty": frame["o"].astype(float),
            "rating_truthfulness": NAN,  # not configured: ignored
            "rating_instruction_following": 3.0,
        }
    )


# Prompt 0: every pair conflicts. Prompt 1: (0, 1) agree (non-conflicting), (0, 2)
# conflict, (1, 2) tie on helpfulness. Prompt 2: a missing honesty rating.
# Rows are shuffled on purpose: the order of the raw table must not matter.
HAND_MADE = _raw(
    [
        (1, 2, 4, 1),
        (0, 0, 1, 5),
        (0, 1, 3, 3),
        (2, 1, 1, 2),
        (1, 0, 2, 2),
        (0, 2, 5, 1),
        (1, 1, 4, 4),
        (2, 0, 3, NAN),
    ]
)
# (prompt, lower idx, higher idx) -> choices (helpfulness, honesty), 1 = higher idx preferred.
CONFLICTING = {(0, 0, 1): (1, 0), (0, 0, 2): (1, 0), (0, 1, 2): (1, 0), (1, 0, 2): (1, 0)}
NON_CONFLICTING = {(1, 0, 1): (1, 1)}


def _as_unordered(pairs: pd.DataFrame) -> dict[tuple[int, int, int], tuple[int, int]]:
    """Pairs keyed by (prompt, lower idx, higher idx) with choices for the higher idx."""
    out = {}
    for row in pairs.itertuples():
        swapped = row.completion_idx_a > row.completion_idx_b
        low, high = sorted((row.completion_idx_a, row.completion_idx_b))
        choices = (row.choice_helpfulness, row.choice_honesty)
        out[(row.prompt_id, low, high)] = tuple(1 - c if swapped else c for c in choices)
        # The responses and rewards travel with their side.
        assert row.response_a == f"answer {row.prompt_id}.{row.completion_idx_a}"
        assert row.response_b == f"answer {row.prompt_id}.{row.completion_idx_b}"
        assert row.choice_helpfulness == int(row.reward_b_helpfulness > row.reward_a_helpfulness)
    return out


def test_pairs_of_a_hand_made_sample():
    pairs = build_pairs(HAND_MADE, HH, non_conflicting_fraction=0.0, seed=0)
    check_pairs(pairs, HH, "hand_made")
    assert _as_unordered(pairs) == CONFLICTING
    assert pairs["is_conflicting"].all()
    assert pairs["pair_id"].tolist() == list(range(len(pairs)))
    assert pairs["pair_id"].dtype == np.int64 and pairs["choice_honesty"].dtype == np.int64


def test_non_conflicting_pairs_kept_by_fraction():
    pairs = build_pairs(HAND_MADE, HH, non_conflicting_fraction=1.0, seed=0)
    assert _as_unordered(pairs) == CONFLICTING | NON_CONFLICTING
    agreeing = (pairs["prompt_id"] == 1) & (
        pairs["completion_idx_a"] + pairs["completion_idx_b"] == 1
    )
    assert pairs["is_conflicting"].tolist() == (~agreeing).tolist()


def test_single_objective_never_conflicts():
    pairs = build_pairs(HAND_MADE, ["helpfulness"], non_conflicting_fraction=1.0, seed=0)
    # Ties on helpfulness: (1, 1, 2). Missing honesty does not matter here.
    assert len(pairs) == 6 and not pairs["is_conflicting"].any()


@pytest.fixture(scope="module")
def generated_raw():
    return load_raw("generated", n_prompts=300, completions_per_prompt=4, seed=0, na_fraction=0.02)


def test_split_by_prompt(generated_raw):
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    pairs = build_pairs(generated_raw, HH, 0.3, fractions, seed=1)
    assert (pairs.groupby("prompt")["split"].nunique() == 1).all()
    assert (pairs.groupby("prompt_id")["split"].nunique() == 1).all()
    prompts_per_split = pairs.groupby("split")["prompt"].nunique()
    n_prompts = pairs["prompt"].nunique()
    assert prompts_per_split["train"] == round(0.8 * n_prompts)
    assert abs(prompts_per_split["validation"] - 0.1 * n_prompts) <= 1  # cumulative rounding
    assert prompts_per_split.sum() == n_prompts
    assert 0.3 < pairs["choice_helpfulness"].mean() < 0.7  # sides are randomised
    assert 0.3 < (pairs["completion_idx_a"] > pairs["completion_idx_b"]).mean() < 0.7


def test_repeated_prompt_text_stays_in_one_split():
    raw = _raw([(p, c, c + 1, 4 - c) for p in range(40) for c in range(3)])
    raw["prompt"] = [f"prompt {p % 10}" for p in raw["prompt_id"]]  # 4 records per text
    pairs = build_pairs(raw, HH, seed=3)
    assert (pairs.groupby("prompt")["split"].nunique() == 1).all()


def test_reproducible_from_seed(generated_raw):
    a = build_pairs(generated_raw, HH, 0.2, seed=5)
    pd.testing.assert_frame_equal(a, build_pairs(generated_raw, HH, 0.2, seed=5))
    assert not a.equals(build_pairs(generated_raw, HH, 0.2, seed=6))


def test_generated_data_conflicts(generated_raw):
    everything = build_pairs(generated_raw, HH, non_conflicting_fraction=1.0, seed=0)
    assert everything["is_conflicting"].mean() >= 0.35
    hht = build_pairs(generated_raw, HH + ["truthfulness"], seed=0)
    assert len(hht) > 0 and hht["is_conflicting"].all()


def test_unknown_objective_lists_the_valid_ones(generated_raw):
    with pytest.raises(ValueError, match="kindness") as error:
        build_pairs(generated_raw, ["helpfulness", "kindness"])
    for k in OBJECTIVES:
        assert k in str(error.value)


def test_raw_table_schema(generated_raw):
    assert list(generated_raw.columns) == raw_columns()
    assert generated_raw["prompt_id"].dtype == np.int64
    assert generated_raw["completion_idx"].dtype == np.int64
    assert all(generated_raw[f"rating_{k}"].dtype == np.float64 for k in OBJECTIVES)
    assert generated_raw["prompt_id"].nunique() == 300 and len(generated_raw) == 1200


def _rating(value):
    return {k: {"Rating": value} for k in OBJECTIVES}


MESSY_RECORDS = [
    {"instruction": "Q0", "completions": [{"response": "A", "annotations": _rating("4")}]},
    {"instruction": "Q1", "completions": []},  # no completions
    {"instruction": "Q2"},  # completions missing
    {"instruction": "", "completions": [{"response": "B", "annotations": _rating("3")}]},
    {
        "instruction": "Q4",
        "completions": [
            {"response": "C", "annotations": {**_rating("5"), "honesty": {"Rating": "N/A"}}},
            {"response": "", "annotations": _rating("2")},  # empty response
            {"response": "D"},  # no annotations at all
            {"response": "E", "annotations": _rating(" 2 ")},
        ],
    },
]


def test_skipped_records_and_ratings_are_counted(caplog):
    frame, counts = normalise_records(MESSY_RECORDS, name="messy")
    assert frame["prompt"].tolist() == ["Q0", "Q4", "Q4", "Q4"]
    assert frame["prompt_id"].tolist() == [0, 4, 4, 4]
    assert frame["completion_idx"].tolist() == [0, 0, 2, 3]
    assert frame["response"].tolist() == ["A", "C", "D", "E"]
    assert frame["rating_helpfulness"].tolist()[:1] + frame["rating_helpfulness"].tolist()[3:] == [
        4.0,
        2.0,
    ]
    assert np.isnan(frame["rating_honesty"].iloc[1]) and np.isnan(frame["rating_honesty"].iloc[2])
    assert counts.records == 5
    assert counts.records_without_completions == 2
    assert counts.records_without_instruction == 1
    assert counts.completions == 5
    assert counts.completions_without_response == 1
    assert counts.unusable_ratings == {
        "helpfulness": 1,
        "honesty": 2,
        "truthfulness": 1,
        "instruction_following": 1,
    }
    with caplog.at_level(logging.INFO):
        counts.log("messy")
    assert "2 skipped without completions" in caplog.text


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("records", [MESSY_RECORDS, generate_records(20, 4, seed=2)])
def test_local_jsonl_and_parquet_match_in_memory_records(tmp_path, records):
    expected, _ = normalise_records(records)
    _write_jsonl(tmp_path / "raw.jsonl", records)
    from_jsonl = load_raw("local", local_path=tmp_path / "raw.jsonl")
    pd.testing.assert_frame_equal(from_jsonl, expected)
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    table = pa.table({"instruction": [r.get("instruction") for r in records]}).append_column(
        "completions", pa.array([r.get("completions") for r in records])
    )
    pq.write_table(table, parquet_dir / "raw.parquet")
    from_parquet = load_raw("local", local_path=parquet_dir)
    pd.testing.assert_frame_equal(from_parquet, expected)


def test_local_files_are_read_in_order_and_ids_run_on(tmp_path):
    records = generate_records(10, 4, seed=3)
    _write_jsonl(tmp_path / "part-0.jsonl", records[:4])
    _write_jsonl(tmp_path / "part-1.jsonl", records[4:])
    expected, _ = normalise_records(records)
    frame = load_raw("local", local_path=str(tmp_path / "part-*.jsonl"))
    pd.testing.assert_frame_equal(frame, expected)


def test_raw_file_without_instruction_names_file_and_column(tmp_path):
    path = tmp_path / "no_instruction.jsonl"
    _write_jsonl(path, [{"prompt": "Q", "completions": [{"response": "A"}]}])
    with pytest.raises(RawDataError, match=r"no_instruction\.jsonl.*'instruction'"):
        load_raw("local", local_path=path)


def test_local_path_without_files(tmp_path):
    with pytest.raises(RawDataError, match="No raw UltraFeedback files"):
        load_raw("local", local_path=tmp_path / "*.jsonl")


def test_hub_source_loads_openbmb_ultrafeedback(monkeypatch):
    import datasets

    records = generate_records(5, 4, seed=4)
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return datasets.Dataset.from_list(records)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    frame = load_raw("hub")
    assert calls == [("openbmb/UltraFeedback", (), {"split": "train"})]
    pd.testing.assert_frame_equal(frame, normalise_records(records)[0])


def test_unknown_source():
    with pytest.raises(ValueError, match="generated"):
        load_raw("ftp")
