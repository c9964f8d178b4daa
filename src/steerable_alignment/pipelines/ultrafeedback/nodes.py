"""Nodes of the ``ultrafeedback`` pipeline: raw data -> pairs tables (DESIGN.md §4).

Thin wrappers over :mod:`steerable_alignment.ultrafeedback`: they validate
their parameters (a :class:`ConfigError` naming the parameter, before any
work) and call the framework-free core, imported inside the functions so that
``kedro`` commands stay fast.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError

logger = logging.getLogger(__name__)

SOURCE_PREFIX = "ultrafeedback.source"
SOURCE_KEYS = ("kind", "hub_id", "local_path", "generated")
GENERATED_KEYS = ("n_prompts", "completions_per_prompt", "seed", "na_fraction")
PAIRS_KEYS = ("name", "objectives", "non_conflicting_fraction", "split_fractions", "seed")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_keys(params: Any, prefix: str, known: tuple[str, ...]) -> None:
    if not isinstance(params, Mapping):
        raise ConfigError(f"Parameter '{prefix}': expected a mapping, got {params!r}")
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"Parameter '{prefix}' has unknown key(s) {unknown}; valid keys: {list(known)}"
        )


def check_source_params(source: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``ultrafeedback.source`` and return :func:`load_raw`'s arguments.

    Raises:
        ConfigError: naming the first invalid parameter.
    """
    from steerable_alignment.ultrafeedback.generate import max_prompts
    from steerable_alignment.ultrafeedback.reading import SOURCES

    _check_keys(source, SOURCE_PREFIX, SOURCE_KEYS)
    kind = source.get("kind")
    if kind not in SOURCES:
        raise ConfigError(
            f"Parameter '{SOURCE_PREFIX}.kind': expected one of {list(SOURCES)}, got {kind!r}"
        )
    arguments: dict[str, Any] = {"source": kind}
    for key in ("hub_id", "local_path"):
        value = source.get(key)
        if value is None and kind == {"hub_id": "hub", "local_path": "local"}[key]:
            raise ConfigError(f"Parameter '{SOURCE_PREFIX}.{key}': needed by kind '{kind}'")
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"Parameter '{SOURCE_PREFIX}.{key}': expected a non-empty string, got {value!r}"
                )
            arguments[key] = value
    generated = source.get("generated") or {}
    prefix = f"{SOURCE_PREFIX}.generated"
    _check_keys(generated, prefix, GENERATED_KEYS)
    limits = {"n_prompts": (1, max_prompts()), "completions_per_prompt": (2, 64)}
    for key, (low, high) in limits.items():
        value = generated.get(key)
        if value is not None and (not _is_int(value) or not low <= value <= high):
            raise ConfigError(
                f"Parameter '{prefix}.{key}': expected an integer in [{low}, {high}], got {value!r}"
            )
    seed = generated.get("seed")
    if seed is not None and not _is_int(seed):
        raise ConfigError(f"Parameter '{prefix}.seed': expected an integer, got {seed!r}")
    na_fraction = generated.get("na_fraction")
    if na_fraction is not None and (not _is_number(na_fraction) or not 0 <= na_fraction < 1):
        raise ConfigError(
            f"Parameter '{prefix}.na_fraction': expected a number in [0, 1), got {na_fraction!r}"
        )
    arguments.update({k: v for k, v in generated.items() if v is not None})
    return arguments


def check_pairs_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one data set's block (``ultrafeedback.<name>``); :func:`build_pairs` arguments.

    Raises:
        ConfigError: naming the first invalid parameter.
    """
    from steerable_alignment.splits import check_split_fractions
    from steerable_alignment.ultrafeedback.ratings import check_objectives

    name = params.get("name") if isinstance(params, Mapping) else None
    prefix = (
        f"ultrafeedback.{name}" if isinstance(name, str) and name else "ultrafeedback.<data set>"
    )
    _check_keys(params, prefix, PAIRS_KEYS)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"Parameter '{prefix}.name': expected the data set's name, got {name!r}")
    objectives = params.get("objectives")
    if isinstance(objectives, str) or not isinstance(objectives, (list, tuple)):
        raise ConfigError(
            f"Parameter '{prefix}.objectives': expected a list of objectives, got {objectives!r}"
        )
    try:
        check_objectives(objectives)
    except ValueError as error:
        raise ConfigError(f"Parameter '{prefix}.objectives': {error}") from error
    fraction = params.get("non_conflicting_fraction", 0.0)
    if not _is_number(fraction) or not 0 <= fraction <= 1:
        raise ConfigError(
            f"Parameter '{prefix}.non_conflicting_fraction': expected a number in [0, 1], "
            f"got {fraction!r}"
        )
    split_fractions = params.get("split_fractions")
    if not isinstance(split_fractions, Mapping):
        raise ConfigError(
            f"Parameter '{prefix}.split_fractions': expected a mapping of train, validation "
            f"and test fractions, got {split_fractions!r}"
        )
    try:
        check_split_fractions(split_fractions)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Parameter '{prefix}.split_fractions': {error}") from error
    seed = params.get("seed", 0)
    if not _is_int(seed):
        raise ConfigError(f"Parameter '{prefix}.seed': expected an integer, got {seed!r}")
    return {
        "objectives": list(objectives),
        "non_conflicting_fraction": float(fraction),
        "split_fractions": dict(split_fractions),
        "seed": int(seed),
    }


def load_ultrafeedback_raw(source: dict[str, Any]) -> pd.DataFrame:
    """Read the configured raw source into the normalised raw table.

    Args:
        source: ``kind`` (``generated``, ``hub`` or ``local``), ``hub_id``,
            ``local_path`` and the ``generated`` block (``n_prompts``,
            ``completions_per_prompt``, ``seed``, ``na_fraction``).

    Returns:
        One row per completion (``prompt_id``, ``prompt``, ``completion_idx``,
        ``response``, ``rating_<k>`` for the four UltraFeedback objectives).
    """
    arguments = check_source_params(source)
    from steerable_alignment.ultrafeedback.reading import load_raw

    return load_raw(**arguments)


def build_preference_pairs(raw: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Build one data set's pairs table (DESIGN.md §4) from the raw table.

    Logs at INFO how many pairs each rule dropped (identical responses,
    missing ratings and ties per objective, non-conflicting pairs beyond
    ``non_conflicting_fraction``) and fails, before anything is written, when
    the rules leave a split without pairs.

    Args:
        raw: the normalised raw table.
        params: the data set's block: ``name``, ``objectives``,
            ``non_conflicting_fraction``, ``split_fractions``, ``seed``.

    Returns:
        The pairs table: ``pair_id``, prompt and responses, per objective
        ``reward_a_<k>``, ``reward_b_<k>``, ``choice_<k>``, ``split``,
        ``is_conflicting``.

    Raises:
        ConfigError: naming the first invalid parameter.
        EmptySplitError: naming the data set, the split and the rule that emptied it.
    """
    arguments = check_pairs_params(params)
    from steerable_alignment.ultrafeedback.pairing import build_pairs_with_counts

    pairs, counts = build_pairs_with_counts(raw, **arguments, name=params["name"])
    logger.info(
        "UltraFeedback '%s' (%s): %d pairs, %.1f%% conflicting; dropped by rule: %s",
        params["name"],
        ", ".join(arguments["objectives"]),
        len(pairs),
        100 * float(pairs["is_conflicting"].mean()) if len(pairs) else 0.0,
        counts.dropped(),
    )
    return pairs
