import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest

from steerable_alignment.contracts import check_pairs
from steerable_alignment.splits import normalise_prompt
from steerable_alignment.ultrafeedback.counts import EmptySplitError, RawDataError
from steerable_alignment.ultrafeedback.generate import OBJECTIVES, generate_records
from steerable_alignment.ultrafeedback.pairing import build_pairs, build_pairs_with_counts
from steerable_alignment.ultrafeedback.ratings import parse_rating
from steerable_alignment.ultrafeedback.reading import (
    load_raw,
    load_raw_with_counts,
    normalise_records,
    raw_columns,
)

HH = ["helpfulness", "honesty"]
HHT = ["helpfulness", "honesty", "truthfulness"]
NAN = float("nan")
ALL_TRAIN = {"train": 1.0, "validation": 0.0, "test": 0.0}


def _raw(rows, prompts=None):
    """A normalised raw table from (prompt_id, completion_idx, help, honesty[, truth]) rows."""
    rows = [tuple(r) + (3.0,) * (5 - len(r)) for r in rows]
    frame = pd.DataFrame(rows, columns=["prompt_id", "completion_idx", "h", "o", "t"])
    return pd.DataFrame(
        {
            "prompt_id": frame["prompt_id"].astype("int64"),
            "prompt": [prompts[p] if prompts else f"prompt {p}" for p in frame["prompt_id"]],
            "completion_idx": frame["completion_idx"].astype("int64"),
            "response": [f"answer {p}.{c}" for p, c in zip(frame.prompt_id, frame.completion_idx)],
            "rating_helpfulness": frame["h"].astype(float),
            "rating_honesty": frame["o"].astype(float),
            "rating_truthfulness": frame["t"].astype(float),
            "rating_instruction_following": 3.0,  # not configured: ignored
        }
    )


# Hand-made ratings, so the expected pairs are known without running the code's
# formulas. Rows: (prompt, completion, helpfulness, honesty, truthfulness).
# Prompt 0: every pair conflicts. Prompt 1: (0, 1) agree on HH, (0, 2)
# conflict, (1, 2) tie on helpfulness. Prompt 2: a missing honesty rating.
# Prompt 3: every pair agrees on HH; on truthfulness (0, 1) and (0, 2) disagree.
# Rows are shuffled on purpose: the order of the raw table must not matter.
HAND_MADE = _raw(
    [
        (1, 2, 4, 1, 3),
        (0, 0, 1, 5, 3),
        (3, 2, 5, 5, 2),
        (0, 1, 3, 3, 4),
        (3, 1, 4, 4, 1),
        (2, 1, 1, 2, 3),
        (1, 0, 2, 2, 2),
        (0, 2, 5, 1, 5),
        (1, 1, 4, 4, 1),
        (3, 0, 2, 2, 5),
        (2, 0, 3, NAN, 3),
    ]
)
# (prompt, lower idx, higher idx) -> (choices: 1 = the higher idx preferred, is_conflicting)
HH_CONFLICTING = {
    (0, 0, 1): ((1, 0), True),
    (0, 0, 2): ((1, 0), True),
    (0, 1, 2): ((1, 0), True),
    (1, 0, 2): ((1, 0), True),
}
HH_AGREEING = {
    (1, 0, 1): ((1, 1), False),
    (3, 0, 1): ((1, 1), False),
    (3, 0, 2): ((1, 1), False),
    (3, 1, 2): ((1, 1), False),
}
HHT_ALL = {
    (0, 0, 1): ((1, 0, 1), True),
    (0, 0, 2): ((1, 0, 1), True),
    (0, 1, 2): ((1, 0, 1), True),
    (1, 0, 1): ((1, 1, 0), True),  # agrees on HH, not on truthfulness
    (1, 0, 2): ((1, 0, 1), True),
    (3, 0, 1): ((1, 1, 0), True),
    (3, 0, 2): ((1, 1, 0), True),
    (3, 1, 2): ((1, 1, 1), False),
}


def _as_unordered(pairs: pd.DataFrame, objectives) -> dict:
    """Pairs keyed by (prompt, lower idx, higher idx): (choices for the higher idx, conflicting)."""
    out = {}
    for row in pairs.to_dict("records"):
        swapped = row["completion_idx_a"] > row["completion_idx_b"]
        low, high = sorted((row["completion_idx_a"], row["completion_idx_b"]))
        choices = tuple(
            1 - row[f"choice_{k}"] if swapped else row[f"choice_{k}"] for k in objectives
        )
        out[(row["prompt_id"], low, high)] = (choices, bool(row["is_conflicting"]))
        # The responses travel with their side.
        assert row["response_a"] == f"answer {row['prompt_id']}.{row['completion_idx_a']}"
        assert row["response_b"] == f"answer {row['prompt_id']}.{row['completion_idx_b']}"
    return out


def test_pairs_of_a_hand_made_sample():
    pairs = build_pairs(HAND_MADE, HH, 0.0, ALL_TRAIN, seed=0)
    check_pairs(pairs, HH, "hand_made")
    assert _as_unordered(pairs, HH) == HH_CONFLICTING
    assert pairs["pair_id"].tolist() == list(range(len(pairs)))
    assert pairs["pair_id"].dtype == np.int64 and pairs["choice_honesty"].dtype == np.int64
    # Rewards travel with their side: a's rating is the one of completion_idx_a.
    rating = HAND_MADE.set_index(["prompt_id", "completion_idx"])["rating_helpfulness"]
    expected = [rating[(p, c)] for p, c in zip(pairs["prompt_id"], pairs["completion_idx_a"])]
    assert pairs["reward_a_helpfulness"].tolist() == expected


def test_non_conflicting_pairs_kept_by_fraction():
    pairs = build_pairs(HAND_MADE, HH, 1.0, ALL_TRAIN, seed=0)
    assert _as_unordered(pairs, HH) == HH_CONFLICTING | HH_AGREEING


def test_is_conflicting_on_three_objectives():
    pairs = build_pairs(HAND_MADE, HHT, 1.0, ALL_TRAIN, seed=1)
    assert _as_unordered(pairs, HHT) == HHT_ALL
    conflicting = build_pairs(HAND_MADE, HHT, 0.0, ALL_TRAIN, seed=1)
    assert _as_unordered(conflicting, HHT) == {k: v for k, v in HHT_ALL.items() if v[1]}


def test_single_objective_never_conflicts():
    pairs = build_pairs(HAND_MADE, ["helpfulness"], 1.0, ALL_TRAIN, seed=0)
    # Ties on helpfulness: (1, 1, 2). The missing honesty rating does not matter here.
    assert len(pairs) == 9 and not pairs["is_conflicting"].any()


def test_counts_of_every_rule_on_a_hand_made_sample(caplog):
    # Prompt 4: completions 0 and 1 are the same text up to surrounding whitespace
    # (and would conflict); 0 and 2 tie on honesty and truthfulness; 1 and 2
    # conflict. Prompt 5 has a single completion.
    extra = _raw([(4, 0, 5, 1, 2), (4, 1, 1, 5, 4), (4, 2, 3, 1, 2), (5, 0, 4, 4, 4)])
    extra.loc[:1, "response"] = ["Same answer.", "  Same answer.\n"]
    raw = pd.concat([HAND_MADE, extra], ignore_index=True)
    with caplog.at_level(logging.INFO, logger="steerable_alignment.ultrafeedback"):
        pairs, counts = build_pairs_with_counts(raw, HHT, 0.0, ALL_TRAIN, seed=0, name="hht")
    assert counts.records == 6 and counts.records_without_pairs == 1
    assert counts.candidates == 13  # 3 + 3 + 1 + 3 + 3
    assert counts.identical_responses == 1  # (4, 0, 1)
    assert counts.missing_ratings == 1  # (2, 0, 1)
    assert counts.missing_by_objective == {"helpfulness": 0, "honesty": 1, "truthfulness": 0}
    assert counts.ties == 2  # (1, 1, 2) on helpfulness; (4, 0, 2) on honesty and truthfulness
    assert counts.ties_by_objective == {"helpfulness": 1, "honesty": 1, "truthfulness": 1}
    assert counts.non_conflicting == 1 and counts.non_conflicting_dropped == 1  # (3, 1, 2)
    assert counts.conflicting == 8 and counts.kept == 8 == len(pairs)
    assert counts.dropped() == {
        "identical_responses": 1,
        "missing_ratings": 1,
        "ties": 2,
        "non_conflicting_dropped": 1,
    }
    assert counts.by_split["train"] == {
        "prompts": 5,
        "candidates": 13,
        "identical_responses": 1,
        "missing_ratings": 1,
        "ties": 2,
        "non_conflicting_dropped": 1,
        "kept": 8,
    }
    assert counts.by_split["test"]["candidates"] == 0
    assert "Pairs 'hht'" in caplog.text and "identical responses 1 (7.7%)" in caplog.text
    assert "ties 2 (15.4%) {'helpfulness': 1, 'honesty': 1, 'truthfulness': 1}" in caplog.text

    _, hh = build_pairs_with_counts(raw, HH, 0.5, ALL_TRAIN, seed=0)
    assert hh.ties == 2 and hh.ties_by_objective == {"helpfulness": 1, "honesty": 1}
    assert hh.non_conflicting == 4 and hh.non_conflicting_dropped == 2  # half, rounded
    assert hh.conflicting == 5 and hh.kept == 7


def test_identical_responses_are_dropped_even_when_they_would_conflict():
    raw = _raw([(0, 0, 1, 5), (0, 1, 5, 1), (0, 2, 3, 4)])
    raw["response"] = ["Paris.", "\tParis.  ", "It is Paris."]
    pairs, counts = build_pairs_with_counts(raw, HH, 0.0, ALL_TRAIN)
    assert counts.identical_responses == 1
    kept = {tuple(sorted(p)) for p in zip(pairs["completion_idx_a"], pairs["completion_idx_b"])}
    assert kept == {(0, 2), (1, 2)}
    assert not (pairs["response_a"].str.strip() == pairs["response_b"].str.strip()).any()


def test_prompts_equal_up_to_whitespace_and_case_share_a_split():
    variants = ["Explain {}.", "  explain   {}. ", "EXPLAIN\n{}."]
    texts = {3 * i + v: variants[v].format(f"topic {i}") for i in range(40) for v in range(3)}
    raw = _raw([(p, c, c + 1, 4 - c) for p in texts for c in range(3)], prompts=texts)
    pairs, counts = build_pairs_with_counts(raw, HH, 0.0, seed=3)
    assert counts.prompts == 40 and counts.prompt_texts_merged == 80
    groups = pairs["prompt"].map(normalise_prompt)
    assert groups.nunique() == 40
    assert (pairs.groupby(groups)["split"].nunique() == 1).all()
    assert set(pairs["prompt"]) == set(texts.values())  # the original text is kept
    assert set(pairs["split"]) == {"train", "validation", "test"}


def test_normalise_prompt():
    assert normalise_prompt("  What  is\tX?\n") == "what is x?"
    assert normalise_prompt("Straße") == normalise_prompt("STRASSE")


@pytest.fixture(scope="module")
def generated_raw():
    return load_raw("generated", n_prompts=300, completions_per_prompt=4, seed=0, na_fraction=0.02)


def test_split_by_prompt(generated_raw):
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    pairs, counts = build_pairs_with_counts(generated_raw, HH, 0.3, fractions, seed=1)
    assert (pairs.groupby("prompt")["split"].nunique() == 1).all()
    assert (pairs.groupby("prompt_id")["split"].nunique() == 1).all()
    # Every prompt with a candidate pair is assigned, before the rules drop any pair.
    assert counts.prompts == 300
    prompts = {s: counts.by_split[s]["prompts"] for s in ("train", "validation", "test")}
    assert prompts == {"train": 240, "validation": 30, "test": 30}
    kept = pairs["split"].value_counts()
    assert all(kept[s] == counts.by_split[s]["kept"] for s in kept.index)
    assert sum(row["candidates"] for row in counts.by_split.values()) == counts.candidates == 1800
    assert 0.3 < pairs["choice_helpfulness"].mean() < 0.7  # sides are randomised
    assert 0.3 < (pairs["completion_idx_a"] > pairs["completion_idx_b"]).mean() < 0.7


def test_a_prompt_gets_the_same_split_for_every_objective_set(generated_raw):
    hh = build_pairs(generated_raw, HH, 0.0, seed=7)
    hht = build_pairs(generated_raw, HHT, 0.0, seed=7)
    split_hh = hh.groupby("prompt_id")["split"].first()
    split_hht = hht.groupby("prompt_id")["split"].first()
    shared = split_hh.index.intersection(split_hht.index)
    assert len(shared) > 50
    assert (split_hh[shared] == split_hht[shared]).all()


def test_reproducible_from_seed(generated_raw):
    a = build_pairs(generated_raw, HH, 0.2, seed=5)
    pd.testing.assert_frame_equal(a, build_pairs(generated_raw, HH, 0.2, seed=5))
    assert not a.equals(build_pairs(generated_raw, HH, 0.2, seed=6))


def test_generated_data_conflicts(generated_raw):
    everything = build_pairs(generated_raw, HH, non_conflicting_fraction=1.0, seed=0)
    assert everything["is_conflicting"].mean() >= 0.35
    hht = build_pairs(generated_raw, HHT, seed=0)
    assert len(hht) > 100


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


# --- Bad input: a split the rules empty --------------------------------------------------


def test_every_pair_tied_names_data_set_split_and_rule():
    raw = _raw([(p, c, 3, 5 - c) for p in range(20) for c in range(3)])  # helpfulness all 3
    with pytest.raises(EmptySplitError) as error:
        build_pairs(raw, HH, 1.0, seed=0, name="hh")
    message = str(error.value)
    assert "'hh'" in message and "split 'train'" in message
    assert "rule 'tie'" in message and "'helpfulness':" in message
    assert "Nothing was written" in message


def test_a_split_emptied_by_one_rule_is_named():
    # Splits are drawn before the rules: find which prompts land in validation,
    # then tie every pair of those prompts and only those.
    rows = [(p, c, c + 1, 3 - c) for p in range(30) for c in range(3)]
    fractions = {"train": 0.5, "validation": 0.5, "test": 0.0}
    reference = build_pairs(_raw(rows), HH, 0.0, fractions, seed=4, name="hht")
    validation = set(reference.loc[reference["split"] == "validation", "prompt_id"])
    assert 0 < len(validation) < 30
    tied_rows = [(p, c, 2, o) if p in validation else (p, c, h, o) for p, c, h, o in rows]
    raw = _raw(tied_rows)
    with pytest.raises(EmptySplitError, match=r"'hht'.*split 'validation'.*rule 'tie'"):
        build_pairs(raw, HH, 0.0, fractions, seed=4, name="hht")
    # Agreeing instead of tied: emptied by the fraction rule.
    agreeing_rows = [
        (p, c, c + 1, c + 1) if p in validation else (p, c, h, o) for p, c, h, o in rows
    ]
    with pytest.raises(
        EmptySplitError,
        match=r"split 'validation'.*rule 'non-conflicting.*non_conflicting_fraction",
    ):
        build_pairs(_raw(agreeing_rows), HH, 0.0, fractions, seed=4, name="hht")
    # With every non-conflicting pair kept, the same data is fine.
    assert len(build_pairs(_raw(agreeing_rows), HH, 1.0, fractions, seed=4)) == 90


def test_identical_responses_emptying_a_split_is_named():
    raw = _raw([(0, 0, 1, 5), (0, 1, 5, 1)])
    raw["response"] = "The same text."
    with pytest.raises(EmptySplitError, match=r"split 'train'.*rule 'identical responses'"):
        build_pairs(raw, HH, 0.0, ALL_TRAIN, name="hh")


def test_too_few_prompts_for_a_split():
    with pytest.raises(EmptySplitError, match=r"split 'validation' has no pairs: no prompt"):
        build_pairs(_raw([(0, 0, 1, 5), (0, 1, 5, 1)]), HH, 0.0, name="hh")


# --- The raw reader -----------------------------------------------------------------------


def _rating(value):
    return {k: {"Rating": value} for k in OBJECTIVES}


def _completion(response, value="3", **annotations):
    return {"response": response, "annotations": {**_rating(value), **annotations}}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_records_with_zero_to_three_completions(tmp_path):
    records = [
        {"instruction": "Q0", "completions": []},  # skipped, counted
        {"instruction": "Q1", "completions": [_completion("A", "4")]},  # no pair possible
        {"instruction": "Q2", "completions": [_completion("B", "4"), _completion("C", "2")]},
        {
            "instruction": "Q3",
            "completions": [_completion("D", "1"), _completion("E", "3"), _completion("F", "5")],
        },
        {"instruction": "Q4"},  # completions missing: skipped, counted
    ]
    frame, counts = load_raw_with_counts(
        "local", local_path=_write_jsonl(tmp_path / "r.jsonl", records)
    )
    assert counts.records == 5 and counts.records_without_completions == 2
    assert counts.completions_per_record == {0: 2, 1: 1, 2: 1, 3: 1}
    assert frame["prompt"].tolist() == ["Q1", "Q2", "Q2", "Q3", "Q3", "Q3"]
    assert frame["prompt_id"].tolist() == [1, 2, 2, 3, 3, 3]
    pairs, pair_counts = build_pairs_with_counts(frame, ["helpfulness"], 1.0, ALL_TRAIN)
    assert pair_counts.records_without_pairs == 1 and pair_counts.candidates == 4 == len(pairs)


def test_unusable_and_missing_ratings_are_counted(tmp_path):
    records = [
        {
            "instruction": "Q0",
            "completions": [
                _completion("A", "4", honesty={"Rating": "N/A", "Rationale": "n/a"}),
                _completion("B", "2", instruction_following={"Rating": "Rating: 4"}),
                _completion("C", 5, instruction_following={"Rating": " 3 "}),
                _completion("D", "4", instruction_following={"Rating": "10"}),
                {"response": "E", "annotations": {"helpfulness": {"Rating": "3"}}},  # 3 missing
                {"response": "F", "annotations": {**_rating("2"), "truthfulness": {"Type": ["1"]}}},
            ],
        }
    ]
    path = _write_jsonl(tmp_path / "r.jsonl", records)
    frame, counts = load_raw_with_counts("local", local_path=path)
    assert frame["rating_helpfulness"].tolist() == [4.0, 2.0, 5.0, 4.0, 3.0, 2.0]
    assert np.isnan(frame["rating_honesty"]).tolist() == [True, False, False, False, True, False]
    assert frame["rating_instruction_following"].tolist()[2] == 3.0
    following = np.isnan(frame["rating_instruction_following"]).tolist()
    assert following == [False, True, False, True, True, False]
    assert counts.invalid_ratings == {
        "helpfulness": 0,
        "honesty": 1,
        "truthfulness": 0,
        "instruction_following": 2,
    }
    assert counts.missing_ratings == {
        "helpfulness": 0,
        "honesty": 1,
        "truthfulness": 2,
        "instruction_following": 1,
    }
    assert counts.invalid_examples["instruction_following"] == ["'Rating: 4'", "'10'"]
    assert counts.unusable_ratings["honesty"] == 2
    # A completion lacking an objective is skipped only where that objective is used.
    _, hh = build_pairs_with_counts(frame, HH, 1.0, ALL_TRAIN)
    assert hh.candidates == 15 and hh.missing_ratings == 9  # pairs touching A or E
    assert hh.missing_by_objective == {"helpfulness": 0, "honesty": 9}
    _, helpful = build_pairs_with_counts(frame, ["helpfulness"], 1.0, ALL_TRAIN)
    assert helpful.missing_ratings == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4", 4.0),
        (" 2 ", 2.0),
        (3, 3.0),
        (4.5, 4.5),
        ("N/A", None),
        ("", None),
        ("0", None),
        ("10", None),
        ("nan", None),
        (True, None),
        (["4"], None),
        (None, None),
    ],
)
def test_parse_rating(value, expected):
    assert parse_rating(value) == expected


def test_type_field_as_list_or_string_reads(tmp_path, caplog):
    # UltraFeedback's `Type` is a list of codes or the string "None": Arrow's JSON
    # reader infers one type per field and cannot read such a file at all.
    records = [
        {
            "instruction": "Q0",
            "completions": [
                _completion("A", "4", truthfulness={"Rating": "4", "Type": ["1", "2"]})
            ],
        },
        {
            "instruction": "Q1",
            "completions": [
                _completion("B", "3", truthfulness={"Rating": "5", "Type": "None"}),
                _completion("C", "1"),
            ],
        },
    ]
    path = _write_jsonl(tmp_path / "mixed.jsonl", records)
    with pytest.raises(pa.ArrowInvalid, match="changed from array to string"):
        pj.read_json(path)  # the quirk this fixture reproduces
    with caplog.at_level(logging.INFO, logger="steerable_alignment.ultrafeedback"):
        frame = load_raw("local", local_path=path)
    assert frame["rating_truthfulness"].tolist() == [4.0, 5.0, 1.0]
    assert frame["response"].tolist() == ["A", "B", "C"]
    assert "3 completions" in caplog.text


def test_fields_not_used_are_not_parsed(tmp_path):
    # overall_score is 10 in older revisions, a float in newer ones; neither matters.
    records = generate_records(6, 3, seed=5)
    scores = [10, 9.5, "10", None, {"odd": 1}, [7]]
    dirty = []
    for record, score in zip(records, scores):
        completions = [
            {**c, "overall_score": score, "fine-grained_score": score, "critique": score}
            for c in record["completions"]
        ]
        dirty.append({**record, "models": score, "completions": completions})
    clean = load_raw("local", local_path=_write_jsonl(tmp_path / "clean.jsonl", records))
    odd = load_raw("local", local_path=_write_jsonl(tmp_path / "odd.jsonl", dirty))
    pd.testing.assert_frame_equal(odd, clean)


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
    helpfulness = frame["rating_helpfulness"].tolist()
    assert helpfulness[:2] + helpfulness[3:] == [4.0, 5.0, 2.0] and np.isnan(helpfulness[2])
    assert np.isnan(frame["rating_honesty"].iloc[1]) and np.isnan(frame["rating_honesty"].iloc[2])
    assert counts.records == 5
    assert counts.records_without_completions == 2
    assert counts.records_without_instruction == 1
    assert counts.completions == 5
    assert counts.completions_without_response == 1
    assert counts.missing_ratings == dict.fromkeys(OBJECTIVES, 1)  # D
    assert counts.invalid_ratings == {**dict.fromkeys(OBJECTIVES, 0), "honesty": 1}  # C
    with caplog.at_level(logging.INFO):
        counts.log("messy")
    assert "skipped 1 without instruction and 2 without completions" in caplog.text
    assert "'honesty': [\"'N/A'\"]" in caplog.text


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


def test_json_array_file(tmp_path):
    records = generate_records(4, 2, seed=1)
    (tmp_path / "raw.json").write_text(json.dumps(records))
    pd.testing.assert_frame_equal(
        load_raw("local", local_path=tmp_path / "raw.json"), normalise_records(records)[0]
    )


def test_local_files_are_read_in_order_and_ids_run_on(tmp_path):
    records = generate_records(10, 4, seed=3)
    _write_jsonl(tmp_path / "part-0.jsonl", records[:4])
    _write_jsonl(tmp_path / "part-1.jsonl", records[4:])
    expected, _ = normalise_records(records)
    frame, counts = load_raw_with_counts("local", local_path=str(tmp_path / "part-*.jsonl"))
    pd.testing.assert_frame_equal(frame, expected)
    assert counts.records == 10 and counts.completions_per_record == {4: 10}


def test_raw_file_without_instruction_names_file_and_column(tmp_path):
    path = tmp_path / "no_instruction.jsonl"
    _write_jsonl(path, [{"prompt": "Q", "completions": [{"response": "A"}]}])
    with pytest.raises(RawDataError, match=r"no_instruction\.jsonl.*'instruction'"):
        load_raw("local", local_path=path)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"instruction": "Q", "completions": [', r"bad\.jsonl', line 2: not valid JSON"),
        ('["Q"]', r"bad\.jsonl', line 2: expected a record"),
        ('{"instruction": 7, "completions": []}', r"line 2, column 'instruction': expected text"),
        ('{"instruction": "Q", "completions": "None"}', r"line 2, column 'completions'"),
        (
            '{"instruction": "Q", "completions": [{"response": 1}]}',
            r"line 2, column 'completions.response'",
        ),
    ],
)
def test_malformed_json_lines_name_file_line_and_column(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(MESSY_RECORDS[0]) + "\n" + line + "\n")
    with pytest.raises(RawDataError, match=needle):
        load_raw("local", local_path=path)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_a_local_file_without_completions_names_the_file_and_the_column(tmp_path, suffix):
    records = [{k: v for k, v in r.items() if k != "completions"} for r in generate_records(3)]
    path = tmp_path / f"raw.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    with pytest.raises(RawDataError) as raised:
        load_raw("local", local_path=path)
    assert str(path) in str(raised.value) and "'completions'" in str(raised.value)


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
