"""Users on a continuum between two objectives (DESIGN.md §7).

A user with weight ``w`` between objectives ``k`` and ``j`` prefers the
option with the higher ``w·rating_k + (1 − w)·rating_j``; an exact tie is
broken by a seeded fair coin. The pure users ``w = 1`` and ``w = 0`` are the
objectives' own users: on every untied pair they make the stored choices
``choice_k`` / ``choice_j`` of the pairs table (``choice = rating_b >
rating_a``). The UltraFeedback pairs drop every pair tied on a configured
objective (``ultrafeedback/pairing.py``), so there the pure users reproduce
the stored choices exactly; on a table that keeps ties (the synthetic task
breaks them with its own coin) the two coins differ.

No Kedro in here: tensors, a pandas table through ``contracts.py``, and a
frozen dataclass built from the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from steerable_alignment.contracts import SplitData, check_features, check_pairs
from steerable_alignment.episodes.sampler import PreferenceData
from steerable_alignment.models.config import ConfigError
from steerable_alignment.splits import SPLITS

#: |weighted rating of b − weighted rating of a| at or below this is a tie.
#: Ratings are 1–5, so float rounding (0.25·3 + 0.75·4 computed two ways)
#: is ~1e-15, far below it, and a real preference is at least ~1e-2.
TIE_TOLERANCE = 1e-9
#: How far the weights may sum from 1 (float rounding of hand-written weights).
WEIGHT_SUM_TOLERANCE = 1e-6


def weighted_margin(
    ratings_a: torch.Tensor, ratings_b: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``Σ_k weights_k (rating_b,k − rating_a,k)`` of every pair, in float64.

    Objectives of weight 0 are left out, so a missing (NaN) rating of an
    objective the user ignores does not matter.

    Args:
        ratings_a, ratings_b: (P, K) ratings of options a and b.
        weights: (K,) non-negative, summing to 1.

    Returns:
        (P,) float64 margins; > 0 where the user prefers b.

    Raises:
        ValueError: shapes disagree, weights are negative or do not sum to 1,
            or a rating the user weighs is NaN.
    """
    if ratings_a.ndim != 2 or ratings_a.shape != ratings_b.shape:
        raise ValueError(
            f"ratings must both be (P, K), got {tuple(ratings_a.shape)} and "
            f"{tuple(ratings_b.shape)}"
        )
    if weights.shape != (ratings_a.shape[1],):
        raise ValueError(
            f"weights must be (K,) = ({ratings_a.shape[1]},), got {tuple(weights.shape)}"
        )
    weights = weights.double().to(ratings_a.device)
    if bool((weights < 0).any()) or abs(float(weights.sum()) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {weights.tolist()}")
    used = weights > 0  # (K,)
    diff = ratings_b.double()[:, used] - ratings_a.double()[:, used]  # (P, K_used)
    if bool(diff.isnan().any()):
        rows = int(diff.isnan().any(dim=1).sum())
        raise ValueError(f"{rows} pair(s) miss a rating of an objective the user weighs")
    return diff @ weights[used]  # (P,)


def mixed_choices(
    ratings_a: torch.Tensor,
    ratings_b: torch.Tensor,
    weights: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The choices of one mixed user: 1 where the weighted rating of b is higher.

    A pair whose weighted ratings are equal within :data:`TIE_TOLERANCE` is
    decided by a fair coin. One coin is drawn for *every* pair (and used only
    on the ties), so the generator advances by P draws whatever the data, and
    a pair's coin does not depend on which other pairs are tied.

    Args:
        ratings_a, ratings_b: (P, K) float ratings of options a and b.
        weights: (K,) non-negative weights summing to 1 (the user).
        generator: seeds the coins.

    Returns:
        (P,) long choices, 1 = option b preferred.
    """
    margin = weighted_margin(ratings_a, ratings_b, weights)  # (P,)
    coins = torch.randint(2, margin.shape, generator=generator, device=generator.device)
    tied = margin.abs() <= TIE_TOLERANCE
    return torch.where(tied, coins.to(margin.device), (margin > 0).long())


def user_label(weight: float) -> str:
    """The name of the user of weight ``w`` on the first objective: ``w=0.25``."""
    return f"w={weight:g}"


@dataclass(frozen=True)
class MixedUserSpec:
    """The users on the segment between two objectives.

    Attributes:
        objectives: ``(k, j)``, the two objectives mixed.
        weights: the users' ``w`` (weight of ``k``; ``j`` gets ``1 − w``), each
            in [0, 1], distinct; ``w = 1`` is the pure ``k`` user.
    """

    objectives: tuple[str, str]
    weights: tuple[float, ...]

    KEYS: ClassVar[tuple[str, ...]] = ("objectives", "weights")

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], prefix: str, available_objectives: Sequence[str]
    ) -> MixedUserSpec:
        """Build and validate from ``{objectives: [k, j], weights: [...]}``.

        Args:
            params: the parameters (exactly the keys ``objectives`` and ``weights``).
            prefix: the parameters' path, e.g. ``mixed_users.hh``, for the messages.
            available_objectives: the objectives of the data set.

        Raises:
            ConfigError: naming the parameter at fault.
        """
        if not isinstance(params, Mapping):
            raise ConfigError(f"Parameter '{prefix}': expected a mapping, got {type(params)}")
        unknown = sorted(set(params) - set(cls.KEYS))
        missing = sorted(set(cls.KEYS) - set(params))
        if unknown or missing:
            raise ConfigError(
                f"Parameter '{prefix}': unknown key(s) {unknown}, missing key(s) {missing}; "
                f"valid keys: {list(cls.KEYS)}"
            )
        objectives = params["objectives"]
        where = f"Parameter '{prefix}.objectives'"
        if (
            isinstance(objectives, str)
            or not isinstance(objectives, Sequence)
            or len(objectives) != 2
            or not all(isinstance(k, str) for k in objectives)
        ):
            raise ConfigError(f"{where}: expected two objective names [k, j], got {objectives!r}")
        if objectives[0] == objectives[1]:
            raise ConfigError(f"{where}: the two objectives must differ, got {list(objectives)}")
        lacking = [k for k in objectives if k not in available_objectives]
        if lacking:
            raise ConfigError(
                f"{where}: {lacking} not among the data set's objectives "
                f"{list(available_objectives)}"
            )
        weights = params["weights"]
        where = f"Parameter '{prefix}.weights'"
        if isinstance(weights, str) or not isinstance(weights, Sequence) or not weights:
            raise ConfigError(f"{where}: expected a non-empty list of numbers, got {weights!r}")
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(float(w)):
                raise ConfigError(f"{where}: {w!r} is not a number")
            if not 0.0 <= float(w) <= 1.0:
                raise ConfigError(f"{where}: each weight must be in [0, 1], got {w!r}")
        labels = [user_label(float(w)) for w in weights]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: weights must be distinct, got {list(weights)}")
        return cls((objectives[0], objectives[1]), tuple(float(w) for w in weights))

    @property
    def labels(self) -> tuple[str, ...]:
        """The users' names (``w=0``, ``w=0.25``, …), in the order of ``weights``."""
        return tuple(user_label(w) for w in self.weights)

    def weight_vectors(self, objectives: Sequence[str]) -> torch.Tensor:
        """(W, K) float64: each user's weights over the data set's ``objectives``."""
        first, second = (list(objectives).index(k) for k in self.objectives)
        vectors = torch.zeros(len(self.weights), len(objectives), dtype=torch.float64)
        w = torch.tensor(self.weights, dtype=torch.float64)  # (W,)
        vectors[:, first] = w
        vectors[:, second] = 1.0 - w
        return vectors

    def users(self, objectives: Sequence[str]) -> list[tuple[str, torch.Tensor]]:
        """``(label, (K,) weight vector)`` of every user, over the data set's ``objectives``."""
        return list(zip(self.labels, self.weight_vectors(objectives), strict=True))


def _aligned_pairs(
    pairs: pd.DataFrame, features: Mapping[str, Any], data: Mapping[str, Any]
) -> pd.DataFrame:
    """The pairs table checked (DESIGN.md §4) and aligned with the features rows."""
    name = data["name"]
    check_pairs(pairs, list(data["objectives"]), f"{name}.pairs")
    return check_features(
        features,
        pairs,
        f"{name}.features",
        f"{name}.pairs",
        bool(data.get("allow_missing_features", False)),
    )


def _ratings(aligned: pd.DataFrame, objectives: Sequence[str]) -> tuple[torch.Tensor, ...]:
    def side(s: str) -> torch.Tensor:
        columns = [f"reward_{s}_{k}" for k in objectives]
        return torch.from_numpy(aligned[columns].to_numpy(dtype=np.float64, copy=True))

    return side("a"), side("b")  # (P, K) each


def pair_ratings(
    pairs: pd.DataFrame, features: Mapping[str, Any], data: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ratings of a data set's pairs, rows aligned with its features file.

    Args:
        data: ``name``, ``objectives`` and optionally ``allow_missing_features``
            (the ``reward_modelling.<dataset>.data`` parameters).

    Returns:
        ``(ratings_a, ratings_b)``, each (P, K) float64 over ``data["objectives"]``.

    Raises:
        DataContractError: the table or features break DESIGN.md §4.
    """
    ratings_a, ratings_b = _ratings(_aligned_pairs(pairs, features, data), data["objectives"])
    return ratings_a, ratings_b


def mixed_choice_matrix(
    ratings_a: torch.Tensor, ratings_b: torch.Tensor, weight_vectors: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user's choices on every pair, one seeded generator for all of them.

    Args:
        ratings_a, ratings_b: (P, K) ratings.
        weight_vectors: (W, K) one row per user (:meth:`MixedUserSpec.weight_vectors`).
        seed: seeds the tie-breaking coins (users drawn in row order).

    Returns:
        ``choices`` (P, W) long, 1 = b preferred, and ``tied`` (P, W) bool,
        where the choice was a coin.
    """
    generator = torch.Generator().manual_seed(int(seed))
    choices, tied = [], []
    for weights in weight_vectors:
        choices.append(mixed_choices(ratings_a, ratings_b, weights, generator))
        tied.append(weighted_margin(ratings_a, ratings_b, weights).abs() <= TIE_TOLERANCE)
    return torch.stack(choices, dim=1), torch.stack(tied, dim=1)  # (P, W) each


@dataclass(frozen=True)
class MixedUserData:
    """A data set's pairs labelled by the mixed users instead of its objectives.

    Attributes:
        split: features ``(P, 2, D)``, choices ``(P, W)`` (one column per user,
            named by :attr:`MixedUserSpec.labels`) and the split rows.
        tied: (P, W) bool, where a user's choice was a coin.
        weights: (W,) float64, each user's ``w``.
    """

    split: SplitData
    tied: torch.Tensor
    weights: torch.Tensor


def mixed_user_data(
    pairs: pd.DataFrame,
    features: Mapping[str, Any],
    data: Mapping[str, Any],
    spec: MixedUserSpec,
    seed: int,
) -> MixedUserData:
    """The pairs and features of a data set as a :class:`PreferenceData` of mixed users.

    Everything else (episodes, models, metrics) then treats each user like an
    objective.

    Args:
        data: the data set's ``name``, ``objectives`` (and ``allow_missing_features``).
        spec: the users.
        seed: seeds the tie-breaking coins.
    """
    objectives = list(data["objectives"])
    aligned = _aligned_pairs(pairs, features, data)
    ratings_a, ratings_b = _ratings(aligned, objectives)  # (P, K) each
    choices, tied = mixed_choice_matrix(
        ratings_a, ratings_b, spec.weight_vectors(objectives), seed
    )  # (P, W) each
    split_codes = aligned["split"].to_numpy()
    splits = {s: torch.from_numpy(np.flatnonzero(split_codes == s)).long() for s in SPLITS}
    preference = PreferenceData(features["features"].float(), choices, spec.labels)
    weights = torch.tensor(spec.weights, dtype=torch.float64)
    return MixedUserData(SplitData(preference, splits), tied, weights)
