"""Nodes of the ``synthetic_data`` pipeline: the two-user task of DESIGN.md §4."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError
from steerable_alignment.splits import SPLITS, check_split_fractions

logger = logging.getLogger(__name__)


def _check_params(params: dict[str, Any]) -> tuple[float, float, float]:
    prefix = "synthetic_data"
    known = {"n_pairs", "threshold", "split_fractions", "seed"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"Parameter '{prefix}' has unknown key(s) {unknown}; valid: {sorted(known)}"
        )
    n_pairs = params.get("n_pairs")
    if not isinstance(n_pairs, int) or n_pairs < 10:
        raise ConfigError(
            f"Parameter '{prefix}.n_pairs': must be an integer >= 10, got {n_pairs!r}"
        )
    threshold = params.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ConfigError(f"Parameter '{prefix}.threshold': must be in (0, 1), got {threshold!r}")
    try:
        return check_split_fractions(params.get("split_fractions") or {})
    except ValueError as err:
        raise ConfigError(f"Parameter '{prefix}.split_fractions': {err}") from err


def generate_synthetic_pairs(params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Generate the pairs table and the features file of the synthetic task.

    Args:
        params: ``n_pairs``, ``threshold``, ``split_fractions`` and ``seed``.

    Returns:
        The pairs table (DESIGN.md §4 columns; objectives ``user_0``, ``user_1``)
        and the features dict (``pair_id (N,)``, ``features (N, 2, 1)``).
    """
    fractions = _check_params(params)
    from steerable_alignment.synthetic.task import OBJECTIVES, generate_pairs

    generated = generate_pairs(params["n_pairs"], params["threshold"], fractions, params["seed"])
    n = generated.options.shape[0]
    columns: dict[str, Any] = {
        "pair_id": range(n),
        "option_a": generated.options[:, 0].numpy(),
        "option_b": generated.options[:, 1].numpy(),
    }
    for u, name in enumerate(OBJECTIVES):
        columns[f"reward_a_{name}"] = generated.rewards[:, 0, u].numpy()
        columns[f"reward_b_{name}"] = generated.rewards[:, 1, u].numpy()
        columns[f"choice_{name}"] = generated.choices[:, u].numpy()
    pairs = pd.DataFrame(columns)
    pairs["pair_id"] = pairs["pair_id"].astype("int64")
    pairs["split"] = pd.Categorical.from_codes(generated.split.numpy(), SPLITS).astype(str)
    pairs["is_conflicting"] = (generated.choices[:, 0] != generated.choices[:, 1]).numpy()
    import torch

    features = {
        "pair_id": torch.arange(n, dtype=torch.long),
        "features": generated.options.unsqueeze(-1).contiguous(),  # (N, 2, 1)
    }
    logger.info(
        "Generated %d synthetic pairs (%.1f%% conflicting)", n, 100 * pairs["is_conflicting"].mean()
    )
    return pairs, features
