"""Headline numbers of the metrics tables, as flat ``{name: value}`` dicts (no Kedro, no MLflow).

The experiment tracker logs them (``hooks.TrackingHook``); the spec comes from
the ``tracking.headline`` parameters: for each table, the columns that name a
row (``keys``) and the columns whose numbers are logged (``values``). One
number per row and value column, named ``<table>/<key>:<cell>/…/<column>``,
e.g. ``reward_metrics/dataset:hh/model:nppl_mixed/objective:all/num_context:10/accuracy``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError

# MLflow's metric names: alphanumerics, underscores, dashes, periods, spaces, colons, slashes.
_NOT_ALLOWED = re.compile(r"[^0-9A-Za-z_\-. :/]")


@dataclasses.dataclass(frozen=True)
class HeadlineSpec:
    """Which columns of one table name a row and which hold its headline numbers."""

    keys: tuple[str, ...]
    values: tuple[str, ...]

    @classmethod
    def from_params(cls, block: Any, prefix: str) -> HeadlineSpec:
        """Read ``{keys: [...], values: [...]}``; anything else raises ``ConfigError``."""
        if not isinstance(block, Mapping):
            raise ConfigError(
                f"{prefix}: expected a mapping with 'keys' and 'values', got {block!r}"
            )
        unknown = sorted(set(block) - {"keys", "values"})
        if unknown:
            raise ConfigError(f"{prefix}: unknown key(s) {unknown}; expected 'keys' and 'values'")
        lists = {}
        for field in ("keys", "values"):
            value = block.get(field, [] if field == "keys" else None)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(
                    f"{prefix}.{field}: expected a list of column names, got {value!r}"
                )
            lists[field] = tuple(value)
        if not lists["values"]:
            raise ConfigError(f"{prefix}.values: name at least one column to log")
        return cls(keys=lists["keys"], values=lists["values"])


def headline_specs(params: Any, prefix: str = "tracking.headline") -> dict[str, HeadlineSpec]:
    """Every table's spec from the ``tracking.headline`` block (``None``: none)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of table name to spec, got {params!r}")
    return {str(n): HeadlineSpec.from_params(b, f"{prefix}.{n}") for n, b in params.items()}


def _segment(text: Any) -> str:
    return _NOT_ALLOWED.sub("_", str(text))


def headline_metrics(table: pd.DataFrame, name: str, spec: HeadlineSpec) -> dict[str, float]:
    """One number per row and value column of ``table`` (missing values left out).

    Raises:
        ValueError: ``table`` lacks a column the spec names, or two rows share
            the same keys (their numbers would overwrite each other).
    """
    missing = [c for c in (*spec.keys, *spec.values) if c not in table.columns]
    if missing:
        raise ValueError(
            f"tracking.headline.{name}: table '{name}' has no column(s) {missing} "
            f"(it has {list(table.columns)})"
        )
    if spec.keys and table.duplicated(list(spec.keys)).any():
        raise ValueError(
            f"tracking.headline.{name}: the keys {list(spec.keys)} do not name one row each; "
            "add the column(s) that tell the rows apart"
        )
    metrics: dict[str, float] = {}
    rows = table[list(spec.keys) + list(spec.values)].itertuples(index=False, name=None)
    for row in rows:
        cells, numbers = row[: len(spec.keys)], row[len(spec.keys) :]
        stem = "/".join([_segment(name), *(f"{k}:{_segment(c)}" for k, c in zip(spec.keys, cells))])
        for column, number in zip(spec.values, numbers):
            if number is None or (isinstance(number, float) and math.isnan(number)):
                continue
            metrics[f"{stem}/{_segment(column)}"] = float(number)
    return metrics
