"""The rating rules: which objectives there are, and which rating values count.

A rating is UltraFeedback's ``annotations.<k>.Rating``: a number in
:data:`RATING_RANGE` (1-5), possibly written as text; anything else
(``"N/A"``, other text, a number out of range, missing) is unusable and
reads as NaN, with up to ``MAX_EXAMPLES`` distinct examples kept per objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from steerable_alignment.ultrafeedback.counts import MAX_EXAMPLES
from steerable_alignment.ultrafeedback.generate import OBJECTIVES

RATING_RANGE = (1.0, 5.0)  # UltraFeedback's scale; anything else is unusable


def parse_rating(value: Any) -> float | None:
    """A rating as a float in 1-5, or None when it is not one.

    Numbers and numeric text (``"4"``, ``" 2 "``) are ratings; ``"N/A"``,
    other text, booleans, lists and numbers outside 1-5 are not.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    low, high = RATING_RANGE
    return number if math.isfinite(number) and low <= number <= high else None


def parse_ratings(values: list[Any]) -> tuple[np.ndarray, int, int, list[str]]:
    """Raw rating values -> (float64 ratings with NaN, n missing, n invalid, invalid examples)."""
    parsed = np.full(len(values), np.nan)
    cache: dict[str, float | None] = {}
    missing = invalid = 0
    examples: list[str] = []
    for i, value in enumerate(values):
        if value is None:
            missing += 1
            continue
        if isinstance(value, str):  # the common case: "1".."5", "N/A"
            if value not in cache:
                cache[value] = parse_rating(value)
            rating = cache[value]
        else:
            rating = parse_rating(value)
        if rating is None:
            invalid += 1
            if len(examples) < MAX_EXAMPLES and repr(value) not in examples:
                examples.append(repr(value))
        else:
            parsed[i] = rating
    return parsed, missing, invalid, examples


def check_objectives(objectives: Sequence[str]) -> list[str]:
    """Validate objective names.

    Raises:
        ValueError: on an empty list, a duplicate, or an unknown objective
            (the message lists the valid ones).
    """
    objectives = list(objectives)
    unknown = [k for k in objectives if k not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; valid objectives: {list(OBJECTIVES)}")
    if not objectives:
        raise ValueError(f"at least one objective is needed; valid objectives: {list(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must be distinct, got {objectives}")
    return objectives
