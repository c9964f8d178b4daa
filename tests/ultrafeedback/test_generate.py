import re

import numpy as np
import pytest

from steerable_alignment.ultrafeedback import topics as tp
from steerable_alignment.ultrafeedback.generate import (
    NOT_AVAILABLE,
    OBJECTIVES,
    generate_records,
    max_prompts,
)

RATINGS = {str(r) for r in range(1, 6)}


@pytest.fixture(scope="module")
def records():
    return generate_records(n_prompts=400, completions_per_prompt=4, seed=0)


def _ratings(records) -> np.ndarray:
    """(P, C, 4) integer ratings (records without "N/A")."""
    return np.array(
        [
            [[int(c["annotations"][k]["Rating"]) for k in OBJECTIVES] for c in r["completions"]]
            for r in records
        ]
    )


def test_records_have_ultrafeedback_raw_schema(records):
    assert len(records) == 400
    for record in records[:50]:
        assert isinstance(record["instruction"], str) and record["instruction"]
        assert len(record["completions"]) == 4
        for completion in record["completions"]:
            assert isinstance(completion["response"], str)
            assert set(completion["annotations"]) == set(OBJECTIVES)
            for k in OBJECTIVES:
                assert completion["annotations"][k]["Rating"] in RATINGS
    assert len({r["instruction"] for r in records}) == 400  # distinct prompts
    assert len({r["source"] for r in records}) >= 15  # varied topics


def test_responses_are_short(records):
    words = np.array([len(c["response"].split()) for r in records for c in r["completions"]])
    assert 30 <= np.median(words) <= 70
    assert np.mean((words >= 25) & (words <= 75)) > 0.95
    assert words.max() < 100


def test_reproducible_from_seed():
    a = generate_records(30, 4, seed=7, na_fraction=0.1)
    assert a == generate_records(30, 4, seed=7, na_fraction=0.1)
    assert a != generate_records(30, 4, seed=8, na_fraction=0.1)


def test_helpfulness_and_honesty_conflict(records):
    ratings = _ratings(records)  # (P, 4, K)
    i, j = np.triu_indices(4, k=1)
    help_sign = np.sign(ratings[:, j, 0] - ratings[:, i, 0])  # (P, 6)
    honesty_sign = np.sign(ratings[:, j, 1] - ratings[:, i, 1])
    untied = (help_sign != 0) & (honesty_sign != 0)
    conflict = np.mean(help_sign[untied] != honesty_sign[untied])
    assert untied.sum() > 0.4 * untied.size
    assert conflict >= 0.35


def test_text_carries_the_rated_qualities(records):
    completions = [c for r in records for c in r["completions"]]
    texts = [c["response"] for c in completions]
    ratings = _ratings(records).reshape(-1, len(OBJECTIVES))  # (M, K)
    helpfulness, honesty, truthfulness = ratings[:, 0], ratings[:, 1], ratings[:, 2]

    hedges = re.compile("|".join(re.escape(h) for h in tp.HEDGES + tp.UNCERTAIN_CLOSINGS))
    n_hedges = np.array([len(hedges.findall(t)) for t in texts])
    assert np.corrcoef(n_hedges, honesty)[0, 1] > 0.4
    assert np.corrcoef(n_hedges, helpfulness)[0, 1] < -0.1  # the trade-off

    all_steps = [s for topic in tp.TOPICS for s in topic.steps]
    n_steps = np.array([sum(s in t for s in all_steps) for t in texts])
    assert np.corrcoef(n_steps, helpfulness)[0, 1] > 0.4

    wrong_facts = [wrong for topic in tp.TOPICS for _, wrong in topic.facts]
    has_wrong = np.array([any(w in t.lower() for w in map(str.lower, wrong_facts)) for t in texts])
    assert 0.2 < has_wrong.mean() < 0.8
    assert truthfulness[~has_wrong].mean() - truthfulness[has_wrong].mean() > 1.5


def test_not_available_ratings():
    records = generate_records(200, 4, seed=1, na_fraction=0.2)
    values = [
        c["annotations"][k]["Rating"]
        for r in records
        for c in r["completions"]
        for k in c["annotations"]
    ]
    share = np.mean([v == NOT_AVAILABLE for v in values])
    assert 0.15 < share < 0.25
    assert set(values) <= RATINGS | {NOT_AVAILABLE}


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="n_prompts"):
        generate_records(max_prompts() + 1)
    with pytest.raises(ValueError, match="na_fraction"):
        generate_records(10, na_fraction=1.0)
    assert max_prompts() >= 3000
