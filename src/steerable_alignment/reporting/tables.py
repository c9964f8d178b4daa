"""Long metric tables reshaped for reading: one row per model, one column per context size."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: Placeholder of a cell with no value (a model not scored at that context size).
MISSING = "—"


def mean_se_by_context(
    table: pd.DataFrame,
    index: Sequence[str],
    value: str,
    se: str,
    *,
    scale: float = 100.0,
    decimals: int = 2,
    signed: bool = False,
) -> pd.DataFrame:
    """``value ± se`` (times ``scale``) with one column per ``num_context``.

    Args:
        table: long rows with the ``index`` columns, ``num_context``, ``value`` and ``se``;
            at most one row per (index, num_context).
        index: the label columns kept as the first columns, in this order.
        scale: 100 turns fractions into percentages.
        signed: prefix positive means with ``+`` (differences).

    Returns:
        The ``index`` columns, then one string column per context size (its name the
        size), rows sorted by the labels.

    Raises:
        ValueError: a column is missing, or two rows share an (index, num_context) key.
    """
    index = list(index)
    needed = [*index, "num_context", value, se]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"Columns {missing} not in the table; it has {list(table.columns)}")
    keys = [*index, "num_context"]
    duplicated = table.duplicated(keys)
    if duplicated.any():
        first = table.loc[duplicated, keys].iloc[0].to_dict()
        raise ValueError(f"Several rows for {first}: one row per {keys} expected")
    wide = table.pivot(index=index, columns="num_context", values=[value, se]).sort_index()
    sizes = sorted(table["num_context"].unique())
    sign = "+" if signed else ""

    def cell(mean: float, error: float) -> str:
        if pd.isna(mean):
            return MISSING
        text = f"{mean * scale:{sign}.{decimals}f}"
        return text if pd.isna(error) else f"{text} ± {error * scale:.{decimals}f}"

    out = wide.index.to_frame(index=False)
    for n in sizes:
        out[str(int(n))] = [cell(m, s) for m, s in zip(wide[(value, n)], wide[(se, n)])]
    return out
