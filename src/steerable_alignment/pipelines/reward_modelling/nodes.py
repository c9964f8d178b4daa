"""Nodes of the ``reward_modelling`` pipeline: train one preference model."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def train_reward_model(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    data: dict[str, Any],
    variant: dict[str, Any],
) -> tuple[Any, pd.DataFrame]:
    """Train the reward model of one variant on a data set's train split.

    Args:
        pairs: the data set's pairs table (DESIGN.md §4).
        features: its features (``pair_id``, ``features (N, 2, D)``).
        data: the data set's description: ``name`` and ``objectives``.
        variant: the variant's ``model`` and ``training`` parameters.

    Returns:
        The trained model (best validation weights) and its training history.
    """
    from steerable_alignment.contracts import dataset_tensors, embedding_of
    from steerable_alignment.models.config import ConfigError, RewardModelConfig
    from steerable_alignment.models.reward_models import build_model
    from steerable_alignment.recipes.reward_models import TrainingConfig, train
    from steerable_alignment.runtime.devices import seeded

    name = data["name"]
    unknown = sorted(set(variant) - {"model", "training"})
    if unknown:
        raise ConfigError(f"Parameters of a '{name}' variant have unknown key(s) {unknown}")
    training = TrainingConfig.from_params(variant.get("training", {}), prefix="training")
    objectives = list(data["objectives"])
    if training.objectives is not None:
        unknown = [o for o in training.objectives if o not in objectives]
        if unknown:
            raise ConfigError(
                f"Parameter 'training.objectives': unknown objective(s) {unknown}; "
                f"valid objectives of '{name}': {objectives}"
            )
    split = dataset_tensors(pairs, features, data)
    config = RewardModelConfig.from_params(
        variant.get("model", {}), input_dim=int(split.data.features.shape[-1])
    )
    with seeded(training.seed):
        model = build_model(config)
    result = train(model, split.data, split.splits["train"], split.splits["validation"], training)
    history = pd.DataFrame(result.history)
    history["best"] = history["step"] == result.best_step
    model = result.model.cpu()
    # Saved with the weights (RewardModelDataset): steer and the evaluation nodes check
    # a context's size and the features' embedding against these, not today's parameters.
    model.trained_with = {
        "min_context": training.min_context,
        "max_context": training.max_context,
        "embedding": embedding_of(features, f"{name}.features"),
    }
    return model, history
