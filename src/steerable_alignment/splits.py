"""Data splits, their fractions and the prompt key splits group by (no heavy imports)."""

from __future__ import annotations

import math
from collections.abc import Mapping

SPLITS = ("train", "validation", "test")


def check_split_fractions(split_fractions: Mapping[str, float]) -> tuple[float, float, float]:
    """``(train, validation, test)`` fractions: keys exactly the splits, >= 0, summing to 1.

    Raises:
        ValueError: otherwise (callers add the parameter's name).
    """
    if set(split_fractions) != set(SPLITS):
        raise ValueError(f"expected keys {list(SPLITS)}, got {sorted(split_fractions)}")
    values = tuple(float(split_fractions[s]) for s in SPLITS)
    if any(v < 0 for v in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"fractions must be >= 0 and sum to 1, got {dict(zip(SPLITS, values))} "
            f"(sum {sum(values):.4f})"
        )
    return values  # type: ignore[return-value]


def normalise_prompt(text: str) -> str:
    """A prompt's grouping key: whitespace runs collapsed to one space, stripped, casefolded.

    The same question typed twice with other spacing or capitals is one
    prompt: it lands in one split, and the evaluation bootstrap resamples it
    as one cluster.
    """
    return " ".join(str(text).split()).casefold()
