"""Win-rates and steering gaps pair answers by prompt, whatever the row order of the scores.

The baseline's reward varies a lot from prompt to prompt (a prompt-specific
offset) and each model answer is the baseline's plus a small known delta, so
only a by-prompt pairing recovers the deltas. The rows are shuffled, so the
model's rows and the baseline's rows list the prompts in different orders:
a pairing by row position would difference unrelated prompts (the offsets,
tens to hundreds of reward units apart) and give other values, see
:func:`test_a_pairing_by_position_would_give_other_values`.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from steerable_alignment.evaluation.generation import (
    _bootstrap_se,
    _paired_diff,
    steering_gap_rows,
    win_rate_rows,
)

OBJECTIVES = ["h", "o"]
REPLICATES, SEED = 200, 3
#: The prompts answered by every policy and user (listed out of order on purpose).
SHARED = [11, 3, 7, 20, 5]
ONLY_BASE, ONLY_NP_H, ONLY_NP_O = 42, 99, 77  # prompts one side lacks
#: Per objective, the prompt-specific reward of the baseline's answer.
OFFSET = {
    "h": {11: 50.0, 3: -20.0, 7: 130.0, 20: 5.0, 5: 77.0, 42: 1000.0, 99: -1000.0, 77: 400.0},
    "o": {11: -8.0, 3: 64.0, 7: 2.0, 20: -96.0, 5: 31.0, 42: -500.0, 99: 500.0, 77: -300.0},
}
#: (user, objective, num_context) -> the NP policy's reward minus the baseline's, per
#: prompt of SHARED (None: the NP policy has no answer for that prompt).
EFFECT = {
    ("h", "h", 0): [1.5, -2.0, 0.0, 0.25, 0.5],
    ("h", "o", 0): [3.0, 3.0, 3.0, 3.0, 3.0],
    ("o", "o", 0): [-1.0, -1.0, 4.0, 0.0, 0.0],
    ("o", "h", 0): [0.0, 0.0, 0.0, 0.0, 0.0],
    ("h", "h", 2): [2.0, 2.0, -1.0, 3.0, 4.0],
    ("h", "o", 2): [-1.0, -2.0, -3.0, -4.0, -5.0],
    ("o", "o", 2): [1.0, 2.0, 0.5, None, -8.0],
    ("o", "h", 2): [0.5, 0.5, 0.5, None, 0.5],
}


def _row(model: str, prompt: int, user: str, c: int, effect: dict[str, float]) -> dict:
    rewards = {f"reward_{k}": OFFSET[k][prompt] + effect.get(k, 0.0) for k in OBJECTIVES}
    return {"model": model, "prompt_id": prompt, "user": user, "num_context": c, **rewards}


def _scores(shuffle_seed: int = 0) -> pd.DataFrame:
    rows = []
    for user in OBJECTIVES:
        for c in (0, 2):
            for prompt in [*SHARED, ONLY_BASE]:
                rows.append(_row("base", prompt, user, c, {}))
            for i, prompt in enumerate(SHARED):
                effect = {k: EFFECT[(user, k, c)][i] for k in OBJECTIVES}
                if None in effect.values():
                    continue
                rows.append(_row("np", prompt, user, c, effect))
            only = ONLY_NP_H if user == "h" else ONLY_NP_O
            rows.append(_row("np", only, user, c, {}))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=shuffle_seed, ignore_index=True)


def _by_prompt(values: dict[int, float]) -> torch.Tensor:
    """Per-prompt values in prompt order (the order the functions pair and bootstrap in)."""
    return torch.tensor([values[p] for p in sorted(values)], dtype=torch.float64)


def _deltas(user: str, objective: str, c: int) -> dict[int, float]:
    """NP minus baseline, by prompt, on the prompts both answered."""
    effects = EFFECT[(user, objective, c)]
    return {p: e for p, e in zip(SHARED, effects, strict=True) if e is not None}


def _gaps(k: str, j: str, c: int) -> dict[int, float]:
    """Objective-k reward of the k-user's answer minus the j-user's, by shared prompt."""
    a, b = EFFECT[(k, k, c)], EFFECT[(j, k, c)]
    return {
        p: x - y for p, x, y in zip(SHARED, a, b, strict=True) if x is not None and y is not None
    }


def test_the_table_really_lists_prompts_in_different_orders():
    scores = _scores()
    np_h = scores[
        (scores["model"] == "np") & (scores["user"] == "h") & (scores["num_context"] == 0)
    ]
    base = scores[
        (scores["model"] == "base") & (scores["user"] == "h") & (scores["num_context"] == 0)
    ]
    assert np_h["prompt_id"].tolist() != base["prompt_id"].tolist()
    assert sorted(np_h["prompt_id"]) == sorted([*SHARED, ONLY_NP_H])


def test_paired_differences_are_the_per_prompt_deltas():
    scores = _scores()
    user = {"user": "h", "num_context": 0}
    diff = _paired_diff(scores, {"model": "np", **user}, {"model": "base", **user}, "reward_h")
    # prompts 3, 5, 7, 11, 20 (42: baseline only, 99: np only, both dropped)
    assert diff.tolist() == [-2.0, 0.5, 0.0, 1.5, 0.25]
    assert diff.dtype == torch.float64


@pytest.mark.parametrize("shuffle_seed", [0, 1])
def test_win_rates_equal_the_per_prompt_values(shuffle_seed):
    rows = {
        (r["objective"], r["num_context"]): r
        for r in win_rate_rows(_scores(shuffle_seed), "np", "base", OBJECTIVES, REPLICATES, SEED)
    }
    assert set(rows) == {("h", 0), ("h", 2), ("o", 0), ("o", 2)}
    # by hand: h@0 deltas 1.5, -2, 0, .25, .5 -> wins 1, 0, ½, 1, 1
    expected = {
        ("h", 0): (3.5 / 5, 0.25 / 5, 5),
        ("o", 0): (2.0 / 5, 2.0 / 5, 5),  # -1, -1, 4, 0, 0 -> 0, 0, 1, ½, ½
        ("h", 2): (4.0 / 5, 10.0 / 5, 5),  # 2, 2, -1, 3, 4
        ("o", 2): (3.0 / 4, -4.5 / 4, 4),  # 1, 2, .5, -8 (prompt 20 unanswered)
    }
    for (k, c), (win_rate, reward_diff, n) in expected.items():
        row = rows[(k, c)]
        assert row["n_prompts"] == n
        assert row["win_rate"] == pytest.approx(win_rate, abs=1e-12)
        assert row["reward_diff"] == pytest.approx(reward_diff, abs=1e-12)
        deltas = _by_prompt(_deltas(k, k, c))
        wins = (deltas > 0).double() + 0.5 * (deltas == 0).double()
        assert row["win_rate_se"] == _bootstrap_se(wins, REPLICATES, SEED)
        assert row["reward_diff_se"] == _bootstrap_se(deltas, REPLICATES, SEED)
        assert row["reward_diff_se"] > 0


@pytest.mark.parametrize("shuffle_seed", [0, 1])
def test_steering_gaps_equal_the_per_prompt_values(shuffle_seed):
    rows = {
        (r["objective"], r["context_objective"], r["num_context"]): r
        for r in steering_gap_rows(_scores(shuffle_seed), "np", OBJECTIVES, REPLICATES, SEED)
    }
    # prompts 99 (h-user only) and 77 (o-user only) are dropped; at c = 2 so is 20
    expected = {
        ("h", "o", 0): (0.25 / 5, 5),  # 1.5, -2, 0, .25, .5 minus 0
        ("o", "h", 0): (-13.0 / 5, 5),  # -1, -1, 4, 0, 0 minus 3
        ("h", "o", 2): (5.0 / 4, 4),  # 2, 2, -1, 4 minus .5
        ("o", "h", 2): (6.5 / 4, 4),  # 1, 2, .5, -8 minus -1, -2, -3, -5
    }
    assert set(rows) == set(expected)
    for (k, j, c), (gap, n) in expected.items():
        row = rows[(k, j, c)]
        assert row["n_prompts"] == n
        assert row["gap"] == pytest.approx(gap, abs=1e-12)
        assert row["gap_se"] == _bootstrap_se(_by_prompt(_gaps(k, j, c)), REPLICATES, SEED)


def test_a_pairing_by_position_would_give_other_values():
    """The fixture is sensitive: row-position pairing (after the shuffle) is far off."""
    scores = _scores()

    def rewards(model: str) -> pd.Series:
        keep = (scores["model"] == model) & (scores["user"] == "h") & (scores["num_context"] == 0)
        return scores.loc[keep, "reward_h"].reset_index(drop=True)

    by_position = (rewards("np") - rewards("base")).to_numpy()  # 6 rows each
    wins = ((by_position > 0) + 0.5 * (by_position == 0)).mean()
    assert wins != pytest.approx(3.5 / 5)
    assert by_position.mean() != pytest.approx(0.25 / 5, abs=1.0)
    row = next(
        r
        for r in win_rate_rows(scores, "np", "base", ["h"], REPLICATES, SEED)
        if r["num_context"] == 0
    )
    assert row["win_rate"] == pytest.approx(3.5 / 5) and row["n_prompts"] == 5


def test_no_shared_prompt_gives_no_row():
    scores = _scores()
    scores = scores[~((scores["model"] == "base") & (scores["num_context"] == 2))]
    rows = win_rate_rows(scores, "np", "base", OBJECTIVES, REPLICATES, SEED)
    assert {r["num_context"] for r in rows} == {0}
