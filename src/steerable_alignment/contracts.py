"""The data contracts of DESIGN.md §4, checked before any work starts.

Pairs table (Parquet, one row per pair): ``pair_id``, ``split``,
``is_conflicting`` and per objective ``reward_a_<k>``, ``reward_b_<k>``,
``choice_<k>``. Features (safetensors): ``pair_id (N,)`` and
``features (N, 2, D)``, rows aligned with ``pair_id``, and for text data
``embedding``: the JSON of the embedding settings that made them (model,
pooling, normalisation, input format, template, max length, overflow,
dtypes). A model trained on the features records those settings
(:func:`embedding_of`); :func:`check_same_embedding` refuses features, or a
user's context, embedded otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerable_alignment.episodes.sampler import PreferenceData
from steerable_alignment.splits import SPLITS, normalise_prompt

logger = logging.getLogger(__name__)


#: Features entry holding the embedding settings (JSON) that made them.
EMBEDDING_KEY = "embedding"


class DataContractError(ValueError):
    """An input table or file does not follow DESIGN.md §4."""


def embedding_of(features: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The embedding settings stored with ``features`` (None: not recorded, e.g. synthetic)."""
    raw = features.get(EMBEDDING_KEY)
    if raw is None:
        return None
    try:
        settings = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise DataContractError(
            f"Dataset '{name}': entry '{EMBEDDING_KEY}' must be the JSON of the embedding "
            f"settings, got {str(raw)[:80]!r}"
        ) from err
    if not isinstance(settings, dict):
        raise DataContractError(f"Dataset '{name}': entry '{EMBEDDING_KEY}' is not a JSON object")
    return settings


def check_same_embedding(
    trained: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
    model: str,
    current_name: str,
    hint: str = "",
) -> None:
    """Refuse inputs embedded with other settings than the model was trained on.

    Args:
        trained: the settings recorded with the model (None: not recorded, no check).
        current: the settings of the features or of today's parameters (None: no check).
        model: the model's catalog name (for the message).
        current_name: where ``current`` comes from (a features file, a parameter block).
        hint: what to do about it, appended to the message.

    Raises:
        DataContractError: naming every differing setting with both values.
    """
    if not trained or not current:
        return
    keys = sorted(set(trained) | set(current))
    differing = [k for k in keys if trained.get(k) != current.get(k)]
    if differing:
        detail = ", ".join(f"{k}: {trained.get(k)!r} vs {current.get(k)!r}" for k in differing)
        raise DataContractError(
            f"'{model}' was trained on features embedded with other settings than "
            f"{current_name} ({detail}; trained vs now){'. ' + hint if hint else ''}"
        )


def pair_columns(objectives: Sequence[str]) -> list[str]:
    """Every column the pairs table must have for ``objectives``."""
    columns = ["pair_id", "split", "is_conflicting"]
    for k in objectives:
        columns += [f"reward_a_{k}", f"reward_b_{k}", f"choice_{k}"]
    return columns


def check_pairs(pairs: pd.DataFrame, objectives: Sequence[str], name: str) -> None:
    """Raise :class:`DataContractError` naming ``name`` and the column at fault."""
    if not isinstance(pairs, pd.DataFrame):
        raise DataContractError(f"Dataset '{name}': expected a DataFrame, got {type(pairs)}")
    missing = [c for c in pair_columns(objectives) if c not in pairs.columns]
    if missing:
        raise DataContractError(
            f"Dataset '{name}': missing column(s) {missing}; expected {pair_columns(objectives)}"
        )
    for k in objectives:
        column = f"choice_{k}"
        values = pairs[column]
        bad = values.isna() | ~values.isin([0, 1])
        if bool(bad.any()):
            examples = values[bad].head(3).tolist()
            raise DataContractError(
                f"Dataset '{name}', column '{column}': choices must be 0 or 1; "
                f"{int(bad.sum())} row(s) are not (e.g. {examples})"
            )
    bad_split = ~pairs["split"].isin(SPLITS)
    if bool(bad_split.any()):
        raise DataContractError(
            f"Dataset '{name}', column 'split': values must be one of {list(SPLITS)}, "
            f"found {sorted(set(pairs.loc[bad_split, 'split'].astype(str)))[:5]}"
        )
    if not pairs["pair_id"].is_unique:
        raise DataContractError(f"Dataset '{name}', column 'pair_id': ids must be unique")


def check_features(
    features: Mapping[str, Any],
    pairs: pd.DataFrame,
    name: str,
    pairs_name: str,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """Check a features file against its pairs table; return the pairs it describes.

    By default the features must have one row per pairs row, in the same
    ``pair_id`` order. With ``allow_missing`` (an embedding step that drops
    over-long texts) they may cover an ordered subset of the pairs; the
    returned table is then that subset. A ``pair_id`` unknown to the pairs
    table, or out of its order, is always an error.
    """
    for key in ("pair_id", "features"):
        if key not in features:
            raise DataContractError(
                f"Dataset '{name}': missing tensor '{key}'; expected 'pair_id' and 'features'"
            )
    tensor = features["features"]
    if tensor.ndim != 3 or tensor.shape[1] != 2:
        raise DataContractError(
            f"Dataset '{name}': 'features' must have shape (N, 2, D), got {tuple(tensor.shape)}"
        )
    ids = features["pair_id"]
    if ids.shape != (tensor.shape[0],):
        raise DataContractError(
            f"Dataset '{name}': 'pair_id' has shape {tuple(ids.shape)} but 'features' has "
            f"{tensor.shape[0]} rows"
        )
    expected = pairs["pair_id"].to_numpy(dtype=np.int64)
    got = ids.numpy().astype(np.int64)
    if allow_missing and len(got) < len(expected):
        positions = pd.Index(expected).get_indexer(got)  # row of each id in the pairs table
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            raise DataContractError(
                f"Dataset '{name}': pair_id {int(got[unknown[0]])} is not in the pairs table "
                f"'{pairs_name}' ({unknown.size} unknown ids)"
            )
        if np.any(np.diff(positions) <= 0):
            raise DataContractError(
                f"Dataset '{name}': pair_ids are not in the pairs table's row order"
            )
        logger.info(
            "Dataset '%s' covers %d of the %d pairs of '%s' (%d without features, e.g. dropped "
            "as over-long by the embedding step)",
            name,
            len(got),
            len(expected),
            pairs_name,
            len(expected) - len(got),
        )
        return pairs.iloc[positions]
    if len(ids) != len(pairs):
        raise DataContractError(
            f"Dataset '{name}' has {len(ids)} rows but the pairs table '{pairs_name}' has "
            f"{len(pairs)}: they must describe the same pairs"
        )
    mismatch = np.flatnonzero(expected != got)
    if mismatch.size:
        i = int(mismatch[0])
        raise DataContractError(
            f"Dataset '{name}': pair_id at row {i} is {int(got[i])} but the pairs table "
            f"'{pairs_name}' has {int(expected[i])} there ({mismatch.size} rows differ); "
            "rows must be aligned with the pairs table"
        )
    return pairs


@dataclass(frozen=True)
class SplitData:
    """Preference data plus the row indices of each split.

    Attributes:
        data: all pairs as tensors.
        splits: split name -> (P_split,) long row indices.
    """

    data: PreferenceData
    splits: dict[str, torch.Tensor]


def to_preference_data(
    pairs: pd.DataFrame,
    features: Mapping[str, Any],
    objectives: Sequence[str],
    pairs_name: str = "pairs",
    features_name: str = "features",
    allow_missing_features: bool = False,
) -> SplitData:
    """Validate a pairs table and its features, then convert them to tensors.

    Rows of the result (and the split indices) follow the features file.
    """
    check_pairs(pairs, objectives, pairs_name)
    pairs = check_features(features, pairs, features_name, pairs_name, allow_missing_features)
    choices = torch.from_numpy(
        pairs[[f"choice_{k}" for k in objectives]].to_numpy(dtype=np.int64, copy=True)
    )  # (P, K)
    split_codes = pairs["split"].to_numpy()
    splits = {s: torch.from_numpy(np.flatnonzero(split_codes == s)).long() for s in SPLITS}
    data = PreferenceData(features["features"].float(), choices, tuple(objectives))
    return SplitData(data, splits)


def dataset_tensors(
    pairs: pd.DataFrame, features: Mapping[str, Any], data: Mapping[str, Any]
) -> SplitData:
    """:func:`to_preference_data` for a data set described by its ``data`` parameters.

    Args:
        data: ``name``, ``objectives`` and optionally ``allow_missing_features``.
    """
    name = data["name"]
    return to_preference_data(
        pairs,
        features,
        list(data["objectives"]),
        f"{name}.pairs",
        f"{name}.features",
        allow_missing_features=bool(data.get("allow_missing_features", False)),
    )


CLUSTER_BY = ("pair", "prompt")


def pool_clusters(
    pairs: pd.DataFrame, features: Mapping[str, Any], data: Mapping[str, Any], cluster_by: str
) -> torch.Tensor:
    """The resampling unit of every row of a data set's features (the bootstrap's clusters).

    Args:
        cluster_by: ``pair`` (each pair its own cluster) or ``prompt`` (pairs
            of one normalised prompt form one cluster; needs a ``prompt`` column).

    Returns:
        (P,) long cluster id of each features row.

    Raises:
        DataContractError: ``prompt`` asked for a table without a ``prompt`` column.
    """
    if cluster_by not in CLUSTER_BY:
        raise ValueError(f"cluster_by must be one of {list(CLUSTER_BY)}, got {cluster_by!r}")
    name = data["name"]
    aligned = check_features(
        features,
        pairs,
        f"{name}.features",
        f"{name}.pairs",
        bool(data.get("allow_missing_features", False)),
    )
    if cluster_by == "pair":
        return torch.arange(len(aligned))
    if "prompt" not in aligned.columns:
        raise DataContractError(
            f"Dataset '{name}.pairs' has no 'prompt' column, needed to resample by prompt "
            "(parameter 'evaluation.<dataset>.bootstrap.cluster_by'); use 'pair' instead"
        )
    keys = aligned["prompt"].map(normalise_prompt)
    return torch.from_numpy(pd.factorize(keys)[0].astype(np.int64))
