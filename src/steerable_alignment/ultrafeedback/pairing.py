"""Build the pairs table from the normalised raw table (DESIGN.md §4), and split it by prompt.

:func:`build_pairs`: every unordered pair of completions of a record;
pairs with identical responses, a missing rating or a tie on the
configured objectives dropped; all conflicting pairs plus a fraction of the
others kept; split by prompt, prompts compared after normalising
whitespace and case.
What each rule dropped is counted
(:class:`~steerable_alignment.ultrafeedback.counts.PairCounts`) and
logged, and a split the rules leave empty is an
:class:`~steerable_alignment.ultrafeedback.counts.EmptySplitError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from steerable_alignment.splits import SPLITS, check_split_fractions, normalise_prompt
from steerable_alignment.ultrafeedback.counts import (
    KEPT_CODE,
    RULE_LABELS,
    RULES,
    EmptySplitError,
    PairCounts,
    RawDataError,
)
from steerable_alignment.ultrafeedback.ratings import check_objectives


def _prompt_pairs(prompt_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of rows sharing a prompt, by index arithmetic.

    Args:
        prompt_id: (C,) prompt of each row, sorted (rows of a prompt adjacent).

    Returns:
        ``(first, second)`` (P,) row indices, ``first < second``, in row order.
    """
    starts = np.flatnonzero(np.r_[True, prompt_id[1:] != prompt_id[:-1]])  # (G,)
    sizes = np.diff(np.r_[starts, prompt_id.size])  # (G,)
    firsts, seconds = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for m in np.unique(sizes[sizes >= 2]):  # one block per group size, not per prompt
        group_starts = starts[sizes == m]  # (G_m,)
        i, j = np.triu_indices(m, k=1)  # (m(m-1)/2,)
        firsts.append((group_starts[:, None] + i[None, :]).ravel())  # (G_m * m(m-1)/2,)
        seconds.append((group_starts[:, None] + j[None, :]).ravel())
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    order = np.lexsort((second, first))
    return first[order], second[order]


def _split_codes(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """(n,) split code (index into SPLITS) of n items, in random order, sizes by rounding."""
    bounds = np.floor(np.cumsum(fractions) * n + 0.5).astype(np.int64)
    bounds[-1] = n
    codes = np.empty(n, dtype=np.int64)
    codes[rng.permutation(n)] = np.searchsorted(bounds, np.arange(n), side="right")
    return codes


def _empty_split_message(
    counts: PairCounts, split: str, fractions: Mapping[str, float], ties_in_split: dict[str, int]
) -> str:
    """Why ``split`` has no pairs: the rule that emptied it, with counts and a remedy."""
    row = counts.by_split[split]
    where = f"UltraFeedback data set '{counts.name}' (objectives {counts.objectives})"
    if row["candidates"] == 0:
        return (
            f"{where}: split '{split}' has no pairs: no prompt with two or more completions "
            f"was assigned to it ({counts.prompts} such prompts in all, split_fractions "
            f"{dict(fractions)}). Nothing was written; use more raw data."
        )
    dropped = {rule: row[rule] for rule in RULES if row[rule]}
    rule = max(dropped, key=dropped.__getitem__)
    detail = {
        "identical_responses": "the two responses are the same text",
        "missing_ratings": f"a rating is missing or unusable on one side "
        f"(pairs missing each objective, all splits: {counts.missing_by_objective}; the raw "
        f"data's log lists the unusable values)",
        "ties": f"equal ratings on a configured objective (pairs tied on each: {ties_in_split}); "
        f"use fewer objectives or more data",
        "non_conflicting_dropped": f"the objectives agree and non_conflicting_fraction is "
        f"{counts.non_conflicting_fraction:g}; raise it or use more data",
    }[rule]
    others = ", ".join(f"{RULE_LABELS[r]} {n}" for r, n in dropped.items() if r != rule)
    return (
        f"{where}: split '{split}' has no pairs left: the rules dropped all "
        f"{row['candidates']} candidate pairs of its {row['prompts']} prompts; emptied by the "
        f"rule '{RULE_LABELS[rule]}' ({dropped[rule]} pairs: {detail})"
        + (f"; other rules: {others}" if others else "")
        + ". Nothing was written."
    )


def build_pairs(
    raw: pd.DataFrame,
    objectives: Sequence[str],
    non_conflicting_fraction: float = 0.0,
    split_fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    name: str = "pairs",
) -> pd.DataFrame:
    """Build the pairs table of DESIGN.md §4 (:func:`build_pairs_with_counts` without the counts).

    Raises:
        ValueError: on an unknown objective (listing the valid ones) or a bad fraction.
        RawDataError: when ``raw`` lacks a column.
        EmptySplitError: when the rules leave a split (with a fraction > 0) without pairs.
    """
    pairs, _ = build_pairs_with_counts(
        raw, objectives, non_conflicting_fraction, split_fractions, seed, name
    )
    return pairs


def build_pairs_with_counts(
    raw: pd.DataFrame,
    objectives: Sequence[str],
    non_conflicting_fraction: float = 0.0,
    split_fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    name: str = "pairs",
) -> tuple[pd.DataFrame, PairCounts]:
    """Build the pairs table of DESIGN.md §4 from the normalised raw table.

    Candidates are every unordered pair of completions of a record; which one
    is ``a`` is random. Rules, in order (:data:`RULES`), drop a pair when:

    1. its two responses are the same text after stripping surrounding
       whitespace (the label between them is noise);
    2. a configured objective's rating is missing (NaN) on either side;
    3. a configured objective's ratings are equal (a tie);
    4. the configured objectives agree (non-conflicting) and it is not among
       the ``non_conflicting_fraction`` of those drawn at random.

    ``choice_<k>`` is 1 when ``b`` has the higher rating for ``k``; a pair is
    conflicting when the configured objectives do not all choose the same side.
    Prompts are grouped after normalising whitespace and case
    (:func:`normalise_prompt`; the table keeps the original text), and every
    prompt with a candidate pair is assigned to train/validation/test *before*
    the rules, from its own random stream: so a prompt repeated in the source
    never straddles two splits, the same ``seed`` puts a prompt in the same
    split for every choice of objectives, and what each rule dropped is
    counted per split. The counts are logged at INFO.

    Args:
        raw: the normalised raw table (:func:`raw_columns`).
        objectives: configured objectives, a subset of :data:`OBJECTIVES`.
        non_conflicting_fraction: share of the non-conflicting pairs kept, in [0, 1].
        split_fractions: ``{"train", "validation", "test"}`` fractions of the
            prompts; default 0.8 / 0.1 / 0.1.
        seed: seed of the split, side and subsample draws.
        name: the data set's name (e.g. ``hh``), for the log and errors.

    Returns:
        The pairs table: one row per pair: ``pair_id`` (int64, 0..N-1),
        ``prompt_id``, ``prompt``, ``response_a``, ``response_b``,
        ``completion_idx_a``, ``completion_idx_b``, per objective
        ``reward_a_<k>``, ``reward_b_<k>`` (float64 ratings) and ``choice_<k>``
        (int64), ``split`` and ``is_conflicting`` (bool); and the counts.

    Raises:
        ValueError: on an unknown objective (listing the valid ones) or a bad
            fraction.
        RawDataError: when ``raw`` lacks a column.
        EmptySplitError: when the rules leave a split whose fraction is > 0
            without pairs (names the data set, the split and the rule); raised
            after logging the counts and before building the table.
    """
    objectives = check_objectives(objectives)
    fractions = check_split_fractions(
        split_fractions or {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    if not 0.0 <= non_conflicting_fraction <= 1.0:
        raise ValueError(
            f"non_conflicting_fraction must be in [0, 1], got {non_conflicting_fraction}"
        )
    rating_columns = [f"rating_{k}" for k in objectives]
    needed = ["prompt_id", "prompt", "completion_idx", "response", *rating_columns]
    missing_columns = [c for c in needed if c not in raw.columns]
    if missing_columns:
        raise RawDataError(f"Raw table: missing column(s) {missing_columns}; expected {needed}")
    split_rng, side_rng, sample_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )

    prompt_id = raw["prompt_id"].to_numpy(dtype=np.int64)
    rows = np.lexsort((raw["completion_idx"].to_numpy(), prompt_id))  # (C,) sorted row order
    sorted_first, sorted_second = _prompt_pairs(prompt_id[rows])  # (P0,) positions in rows
    first, second = rows[sorted_first], rows[sorted_second]  # (P0,) rows of raw

    # Prompt groups (normalised text) and their splits, drawn before any rule. Groups
    # are taken in the order of their first candidate pair (by prompt_id), so the
    # split does not depend on the order of the raw table's rows.
    text_code, texts = pd.factorize(raw["prompt"].astype("str"))  # (C,) per raw row
    normalised = np.asarray([normalise_prompt(t) for t in texts.tolist()], dtype=object)
    group_code, groups = pd.factorize(normalised)  # per distinct text
    pair_group = group_code[text_code[first]]  # (P0,)
    used_groups, first_pair = np.unique(pair_group, return_index=True)  # (G,)
    group_split = np.zeros(len(groups), dtype=np.int64)
    group_split[used_groups[np.argsort(first_pair)]] = _split_codes(
        used_groups.size, fractions, split_rng
    )
    pair_split = group_split[pair_group]  # (P0,) split code of each candidate

    swap = side_rng.random(first.size) < 0.5
    row_a, row_b = np.where(swap, second, first), np.where(swap, first, second)  # (P0,)

    # Rules, in order; reason = index into RULES of the rule that drops a pair, or KEPT_CODE.
    response_code, _ = pd.factorize(raw["response"].astype("str").str.strip())  # (C,)
    identical = response_code[first] == response_code[second]  # (P0,)
    ratings = raw[rating_columns].to_numpy(dtype=np.float64)  # (C, K)
    reward_a, reward_b = ratings[row_a], ratings[row_b]  # (P0, K)
    missing_k = np.isnan(reward_a) | np.isnan(reward_b)  # (P0, K)
    has_missing = ~identical & missing_k.any(axis=1)
    tied_k = reward_a == reward_b  # (P0, K), False where NaN
    tied = ~identical & ~has_missing & tied_k.any(axis=1)
    usable = ~(identical | has_missing | tied)
    choices = (reward_b > reward_a).astype(np.int64)  # (P0, K)
    conflicting = choices.min(axis=1) != choices.max(axis=1)
    candidates = np.flatnonzero(usable & ~conflicting)
    n_sampled = int(np.floor(non_conflicting_fraction * candidates.size + 0.5))
    keep = usable & conflicting
    keep[sample_rng.choice(candidates, size=n_sampled, replace=False)] = True
    reason = np.select(
        [identical, has_missing, tied, ~keep], np.arange(len(RULES)), default=KEPT_CODE
    )  # (P0,)

    per_split = np.bincount(
        pair_split * (KEPT_CODE + 1) + reason, minlength=len(SPLITS) * (KEPT_CODE + 1)
    ).reshape(len(SPLITS), KEPT_CODE + 1)  # (3, rules + kept)
    prompts_per_split = np.bincount(group_split[used_groups], minlength=len(SPLITS))
    by_split = {
        split: {
            "prompts": int(prompts_per_split[s]),
            "candidates": int(per_split[s].sum()),
            **{rule: int(per_split[s, r]) for r, rule in enumerate(RULES)},
            "kept": int(per_split[s, KEPT_CODE]),
        }
        for s, split in enumerate(SPLITS)
    }
    sizes = np.bincount(np.unique(prompt_id, return_inverse=True)[1])
    counts = PairCounts(
        name=name,
        objectives=objectives,
        non_conflicting_fraction=float(non_conflicting_fraction),
        records=int(sizes.size),
        records_without_pairs=int((sizes < 2).sum()),
        prompts=int(used_groups.size),
        prompt_texts_merged=int(len(texts) - len(groups)),
        candidates=int(first.size),
        identical_responses=int(identical.sum()),
        missing_ratings=int(has_missing.sum()),
        missing_by_objective={
            k: int(n) for k, n in zip(objectives, missing_k[has_missing].sum(axis=0))
        },
        ties=int(tied.sum()),
        ties_by_objective={k: int(n) for k, n in zip(objectives, tied_k[tied].sum(axis=0))},
        conflicting=int((usable & conflicting).sum()),
        non_conflicting=int(candidates.size),
        non_conflicting_dropped=int(candidates.size - n_sampled),
        kept=int(keep.sum()),
        by_split=by_split,
    )
    counts.log()
    for s, split in enumerate(SPLITS):
        if fractions[s] > 0 and by_split[split]["kept"] == 0:
            in_split = tied & (pair_split == s)
            ties_in_split = {k: int(n) for k, n in zip(objectives, tied_k[in_split].sum(axis=0))}
            raise EmptySplitError(
                _empty_split_message(counts, split, dict(zip(SPLITS, fractions)), ties_in_split)
            )

    kept = np.flatnonzero(keep)  # (N,)
    row_a, row_b = row_a[kept], row_b[kept]
    prompts = raw["prompt"].to_numpy(dtype=object)
    responses = raw["response"].to_numpy(dtype=object)
    completion_idx = raw["completion_idx"].to_numpy(dtype=np.int64)
    columns: dict[str, Any] = {
        "pair_id": np.arange(kept.size, dtype=np.int64),
        "prompt_id": prompt_id[row_a],
        "prompt": prompts[row_a],
        "response_a": responses[row_a],
        "response_b": responses[row_b],
        "completion_idx_a": completion_idx[row_a],
        "completion_idx_b": completion_idx[row_b],
    }
    for o, k in enumerate(objectives):
        columns[f"reward_a_{k}"] = reward_a[kept, o]
        columns[f"reward_b_{k}"] = reward_b[kept, o]
        columns[f"choice_{k}"] = choices[kept, o]
    columns["split"] = np.asarray(SPLITS, dtype=object)[pair_split[kept]]
    columns["is_conflicting"] = conflicting[kept]
    pairs = pd.DataFrame(columns)
    text_columns = ["prompt", "response_a", "response_b", "split"]
    pairs[text_columns] = pairs[text_columns].astype("str")  # also when there are no pairs
    return pairs, counts
