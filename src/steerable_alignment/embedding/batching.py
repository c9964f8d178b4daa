"""Token-budget batching over length-sorted texts (no padding to ``max_length``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_order(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Indices that sort texts longest first (ties keep their order): (n,) int64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.argsort(-lengths, kind="stable").astype(np.int64)


def token_budget_batches(lengths: Sequence[int] | np.ndarray, budget: int) -> list[np.ndarray]:
    """Split texts into batches whose padded size stays within a token budget.

    Texts are sorted longest first, then cut greedily so that
    ``len(batch) * max(lengths[batch]) <= budget`` (the padded tensor size).
    A text longer than the budget gets a batch of its own.

    Args:
        lengths: (n,) tokens of each text.
        budget: most padded tokens in one batch.

    Returns:
        Index arrays into ``lengths``; together a permutation of ``range(n)``.
        Scatter results back with ``out[batch] = result`` to restore the order.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = length_order(lengths)
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)  # sorted: the first is the longest
        size = max(budget // longest, 1)
        batches.append(order[start : start + size])
        start += size
    return batches
