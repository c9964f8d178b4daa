"""Checks that a trained model is scored on inputs made the way it was trained on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steerable_alignment.contracts import check_same_embedding, embedding_of

RETRAIN_HINT = (
    "Re-run the pipeline that trains it (kedro run --pipeline reward_modelling, or dpo) "
    "on these features, or restore the embedding parameters it was trained with"
)


def trained_with(model: Any) -> Mapping[str, Any]:
    """What a reward model records about its training (empty for models saved before it did)."""
    return getattr(model, "trained_with", None) or {}


def check_trained_on(model: Any, features: Mapping[str, Any], dataset: str) -> None:
    """Refuse ``<dataset>.features`` embedded otherwise than the features ``model`` was trained on.

    Raises:
        DataContractError: naming each differing embedding setting.
    """
    check_same_embedding(
        trained_with(model).get("embedding"),
        embedding_of(features, f"{dataset}.features"),
        f"the {dataset} reward model",
        f"'{dataset}.features'",
        RETRAIN_HINT,
    )
