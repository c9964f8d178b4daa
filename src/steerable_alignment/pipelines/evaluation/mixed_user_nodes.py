"""Nodes of the ``evaluation`` pipeline for users on a continuum (DESIGN.md §7).

A user of weight ``w`` between two objectives chooses by
``w·rating_k + (1 − w)·rating_j`` (``evaluation/mixed_users.py``). The
mixed users become the choice columns of a :class:`PreferenceData`, so the
rest is the reward-model evaluation as it stands: fixed seeded test episodes
balanced over the users, every model's ``P(b ≻ a)`` on them by context size,
metrics per user with the pool bootstrap (clusters by prompt). NP-BTL was
trained on the pure users only, so the users in between test how it
generalises; the BTL models are reference rows on the same episodes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline

from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.evaluation.nodes import (
    _unstack_predictions,
    accuracy_trace,
    predict_context_sizes,
)
from steerable_alignment.pipelines.namespaces import dataset_node, per_variant_node

logger = logging.getLogger(__name__)

MIXED_USER_COLUMNS = [
    "dataset",
    "model",
    "user",
    "weight",
    "first_objective",
    "second_objective",
    "num_context",
    "accuracy",
    "accuracy_se_bootstrap",
    "accuracy_se_episodes",
    "nll",
    "nll_se_bootstrap",
    "nll_se_episodes",
    "ece",
    "tied_fraction",
    "n_episodes",
    "n_clusters",
]
SPLIT_NAMES = ("train", "validation", "test")
BOOTSTRAP_KEYS = ("replicates", "cluster_by", "seed")


@dataclass(frozen=True)
class MixedUserEvaluation:
    """The ``mixed_users.<dataset>`` parameters, validated at each node's entry.

    Attributes:
        users: the users (objectives and weights).
        split: the split the episodes are drawn from.
        context_sizes: context sizes scored.
        episodes_per_user: episodes per user (balanced over users).
        num_targets: scored targets per episode, never in the context.
        seed: seeds the episodes (and a latent model's posterior draws).
        tie_seed: seeds the coins that break the users' ties.
        replicates, cluster_by, bootstrap_seed: the pool bootstrap
            (``bootstrap: {replicates, cluster_by, seed}``).
        batch_size: episodes per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """

    users: Any  # MixedUserSpec (imported lazily: building the pipeline imports no torch)
    split: str
    context_sizes: tuple[int, ...]
    episodes_per_user: int
    num_targets: int
    seed: int
    tie_seed: int
    replicates: int
    cluster_by: str
    bootstrap_seed: int
    batch_size: int = 1024
    device: str = "cpu"

    REQUIRED = (
        "objectives",
        "weights",
        "split",
        "context_sizes",
        "episodes_per_user",
        "num_targets",
        "seed",
        "tie_seed",
        "bootstrap",
    )
    OPTIONAL = ("batch_size", "device")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], data: Mapping[str, Any]) -> MixedUserEvaluation:
        """Validate ``params`` (the block of the data set ``data["name"]``).

        Raises:
            ConfigError: naming the parameter, e.g. ``mixed_users.hh.weights``.
        """
        from steerable_alignment.evaluation.mixed_users import MixedUserSpec

        prefix = f"mixed_users.{data['name']}"
        if not isinstance(params, Mapping):
            raise ConfigError(f"Parameter '{prefix}': expected a mapping, got {type(params)}")
        missing = sorted(set(cls.REQUIRED) - set(params))
        unknown = sorted(set(params) - set(cls.REQUIRED) - set(cls.OPTIONAL))
        if missing or unknown:
            raise ConfigError(
                f"Parameter '{prefix}': missing key(s) {missing}, unknown key(s) {unknown}; "
                f"valid keys: {sorted(cls.REQUIRED + cls.OPTIONAL)}"
            )
        users = MixedUserSpec.from_params(
            {k: params[k] for k in MixedUserSpec.KEYS}, prefix, list(data["objectives"])
        )

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(f"Parameter '{prefix}.{key}': {message}")

        if params["split"] not in SPLIT_NAMES:
            raise fail("split", f"expected one of {list(SPLIT_NAMES)}, got {params['split']!r}")
        sizes = params["context_sizes"]
        if not sizes or any(not isinstance(n, int) or n < 0 for n in sizes):
            raise fail("context_sizes", f"expected non-negative integers, got {sizes}")
        for key in ("episodes_per_user", "num_targets", "batch_size"):
            value = params.get(key, 1)
            if not isinstance(value, int) or value <= 0:
                raise fail(key, f"must be a positive integer, got {value!r}")
        boot = params["bootstrap"]
        if not isinstance(boot, Mapping) or set(boot) != set(BOOTSTRAP_KEYS):
            raise fail("bootstrap", f"expected exactly the keys {list(BOOTSTRAP_KEYS)}")
        if not isinstance(boot["replicates"], int) or boot["replicates"] < 2:
            raise fail("bootstrap.replicates", f"must be an integer >= 2, got {boot['replicates']}")
        if boot["cluster_by"] not in ("pair", "prompt"):
            raise fail("bootstrap.cluster_by", f"expected pair or prompt, got {boot['cluster_by']}")
        device = str(params.get("device", "cpu"))
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise fail("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
        return cls(
            users=users,
            split=params["split"],
            context_sizes=tuple(int(n) for n in sizes),
            episodes_per_user=int(params["episodes_per_user"]),
            num_targets=int(params["num_targets"]),
            seed=int(params["seed"]),
            tie_seed=int(params["tie_seed"]),
            replicates=int(boot["replicates"]),
            cluster_by=str(boot["cluster_by"]),
            bootstrap_seed=int(boot["seed"]),
            batch_size=int(params.get("batch_size", 1024)),
            device=device,
        )

    @property
    def max_context(self) -> int:
        return max(self.context_sizes)


def make_mixed_user_episodes(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    data: dict[str, Any],
    mixed_users: dict[str, Any],
) -> dict[str, Any]:
    """The mixed users' choices and the fixed episodes every model is scored on.

    Returns:
        ``rows (E, max_context + T)`` (rows of the features file), ``objective
        (E,)`` (the user of each episode, balanced), ``max_context``, and the
        users: ``choices (P, W)`` long, ``tied (P, W)`` bool (the choice was a
        coin), ``weights (W,)`` float64.
    """
    config = MixedUserEvaluation.from_params(mixed_users, data)

    from steerable_alignment.episodes.sampler import make_test_episodes
    from steerable_alignment.evaluation.mixed_users import mixed_user_data

    users = mixed_user_data(pairs, features, data, config.users, config.tie_seed)
    rows = users.split.splits[config.split]
    episodes = make_test_episodes(
        rows,
        len(config.users.weights),
        config.episodes_per_user,
        config.num_targets,
        config.max_context,
        config.seed,
        parameters=f"mixed_users.{data['name']}",
        split=f"split '{config.split}' of '{data['name']}'",
    )
    tied_share = users.tied[rows].double().mean(0)  # (W,)
    logger.info(
        "%s: %d mixed users x %d episodes on %d %s pairs; share of tied (coin) choices: %s",
        data["name"],
        len(config.users.weights),
        config.episodes_per_user,
        len(rows),
        config.split,
        dict(zip(config.users.labels, [round(float(s), 3) for s in tied_share], strict=True)),
    )
    return {
        **episodes.to_tensors(),
        "choices": users.split.data.choices,
        "tied": users.tied,
        "weights": users.weights,
    }


def _user_data(features: dict[str, Any], episodes: dict[str, Any], labels: tuple[str, ...]) -> Any:
    """The features with the episodes' user choices as a :class:`PreferenceData`."""
    from steerable_alignment.episodes.sampler import PreferenceData

    choices = episodes["choices"]  # (P, W)
    if choices.shape != (features["features"].shape[0], len(labels)):
        raise ConfigError(
            f"The mixed-user episodes hold choices of shape {tuple(choices.shape)} but the "
            f"features have {features['features'].shape[0]} rows and the parameters "
            f"{len(labels)} users: re-run make_mixed_user_episodes"
        )
    return PreferenceData(features["features"].float(), choices, labels)


def predict_mixed_users(
    reward_model: Any,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    mixed_users: dict[str, Any],
) -> dict[str, Any]:
    """A model's ``P(b ≻ a)`` on every scored target of the mixed-user episodes.

    The context pairs carry the episode's user's choices; targets are never
    in the context. A latent model's posterior draws are seeded by
    ``seed + num_context``.

    Returns:
        ``num_context (S,)`` and ``prob_b (S, E, T)`` float64.
    """
    config = MixedUserEvaluation.from_params(mixed_users, data)
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.evaluation.checks import check_trained_on
    from steerable_alignment.runtime.devices import resolve_device

    check_trained_on(reward_model, features, data["name"])
    device = resolve_device(config.device)
    prepared = _user_data(features, episodes, config.users.labels).to(device)
    episode_set = EvaluationEpisodes.from_tensors(episodes)
    for n in config.context_sizes:
        if n > episode_set.max_context:
            raise ConfigError(
                f"Parameter 'mixed_users.{data['name']}.context_sizes': {n} is larger than the "
                f"episodes' {episode_set.max_context} context slots: re-run "
                "make_mixed_user_episodes"
            )
    return predict_context_sizes(
        reward_model,
        prepared,
        episode_set,
        list(config.context_sizes),
        config.seed,
        config.batch_size,
        device,
    )


def collect_mixed_user_metrics(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    mixed_users: dict[str, Any],
    **predictions: dict[str, Any],
) -> pd.DataFrame:
    """One row per (model, user, context size): accuracy, NLL, ECE and their errors.

    The pool bootstrap (``mixed_users.<dataset>.bootstrap``; clusters by
    prompt on UltraFeedback) is drawn once and shared by every model.

    Args:
        **predictions: model name -> its :func:`predict_mixed_users` output.

    Returns:
        The table (``MIXED_USER_COLUMNS``); ``tied_fraction`` is the share of
        the user's scored targets whose choice was a coin.
    """
    config = MixedUserEvaluation.from_params(mixed_users, data)
    from steerable_alignment.contracts import pool_clusters
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.episodes.scoring import target_choices
    from steerable_alignment.evaluation.metrics import PoolBootstrap, metric_rows

    labels = config.users.labels
    user_data = _user_data(features, episodes, labels)
    episode_set = EvaluationEpisodes.from_tensors(episodes)
    choices = target_choices(user_data, episode_set)  # (E, T)
    target_rows = episode_set.rows[:, episode_set.max_context :]  # (E, T)
    tied = episodes["tied"][target_rows, episode_set.objective.unsqueeze(1)]  # (E, T)
    clusters = pool_clusters(pairs, features, data, config.cluster_by)  # (P,)
    bootstrap = PoolBootstrap.draw(clusters[target_rows], config.replicates, config.bootstrap_seed)
    tied_fraction = {
        label: float(tied[episode_set.objective == u].double().mean())
        for u, label in enumerate(labels)
    }
    weight = dict(zip(labels, config.users.weights, strict=True))
    frames = []
    for model, p in predictions.items():
        rows = metric_rows(
            _unstack_predictions(p), choices, episode_set.objective, labels, bootstrap
        )
        frame = pd.DataFrame([r for r in rows if r["objective"] != "all"])
        frames.append(frame.rename(columns={"objective": "user"}).assign(model=model))
    table = pd.concat(frames, ignore_index=True)
    first, second = config.users.objectives
    table = table.assign(
        dataset=data["name"],
        weight=table["user"].map(weight),
        first_objective=first,
        second_objective=second,
        tied_fraction=table["user"].map(tied_fraction),
    )[MIXED_USER_COLUMNS]
    for column in ("num_context", "n_episodes", "n_clusters"):
        table[column] = table[column].astype("int64")
    logger.info(
        "%s: %d models x %d mixed users scored on %d episodes; bootstrap over %d %s clusters",
        data["name"],
        len(predictions),
        len(labels),
        len(episode_set),
        bootstrap.num_clusters,
        config.cluster_by,
    )
    return table.sort_values(["model", "weight", "num_context"], ignore_index=True)


# Line colours of the users: w = 0 (all second objective) to w = 1 (all first).
COLOUR_W0 = (31, 119, 180)  # blue
COLOUR_W1 = (214, 39, 40)  # red


def _user_colour(weight: float) -> str:
    """The colour of user ``w``, interpolated so the lines read as a continuum."""
    rgb = (round(a + weight * (b - a)) for a, b in zip(COLOUR_W0, COLOUR_W1, strict=True))
    return "rgb({}, {}, {})".format(*rgb)


def plot_mixed_user_accuracy(mixed_user_metrics: pd.DataFrame) -> Any:
    """Accuracy vs context size, a line per user ``w``, a panel per model (NP-BTL first)."""
    from plotly.subplots import make_subplots

    table = mixed_user_metrics
    models = sorted(table["model"].unique(), key=lambda m: (not m.startswith("nppl"), m))
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models, shared_yaxes=True)
    users = table[["user", "weight"]].drop_duplicates().sort_values("weight")
    for col, model in enumerate(models, start=1):
        for user, weight in users.itertuples(index=False):
            rows = table[(table["model"] == model) & (table["user"] == user)]
            trace = accuracy_trace(
                rows.sort_values("num_context"), user, _user_colour(weight), col == 1
            )
            fig.add_trace(trace, row=1, col=col)
    first, second = table["first_objective"].iloc[0], table["second_objective"].iloc[0]
    dataset = table["dataset"].iloc[0]
    fig.update_xaxes(title_text="context pairs")
    fig.update_yaxes(title_text="test accuracy (%)", col=1)
    fig.update_layout(
        title=f"{dataset}: users w·{first} + (1 − w)·{second} (error bars: bootstrap s.e. over "
        "the test pool's prompts)",
        legend_title_text="user",
        template="plotly_white",
    )
    return fig


def mixed_user_pipeline(dataset: str) -> Pipeline:
    """Every reward model of ``dataset`` scored on the mixed users (namespace ``<dataset>``).

    Inputs: ``<dataset>.pairs``, ``<dataset>.features``, every
    ``<dataset>.<variant>.reward_model``; parameters ``mixed_users.<dataset>``
    and ``reward_modelling.<dataset>.data``. Outputs:
    ``<dataset>_mixed_user_metrics`` and ``<dataset>.mixed_user_chart``.
    """
    from steerable_alignment.pipelines.variants import REWARD_DATASETS

    data = f"params:reward_modelling.{dataset}.data"
    mixed = f"params:mixed_users.{dataset}"
    pairs, features = f"{dataset}.pairs", f"{dataset}.features"
    episodes = f"{dataset}.mixed_user_episodes"
    variants = REWARD_DATASETS[dataset].variants
    predictions = {v: f"{dataset}.{v}.mixed_user_predictions" for v in variants}
    given = {"pairs": pairs, "features": features, "data": data, "mixed_users": mixed}
    predict = per_variant_node(
        dataset,
        variants,
        predict_mixed_users,
        name="predict_mixed_users",
        inputs={
            "reward_model": "{variant}.reward_model",
            "features": features,
            "episodes": episodes,
            "data": data,
            "mixed_users": mixed,
        },
        outputs="mixed_user_predictions",
    )
    nodes = [
        dataset_node(
            make_mixed_user_episodes,
            dataset,
            inputs=given,
            outputs=episodes,
            name="make_mixed_user_episodes",
        ),
        dataset_node(
            collect_mixed_user_metrics,
            dataset,
            inputs={**given, "episodes": episodes, **predictions},
            outputs=f"{dataset}_mixed_user_metrics",
            name="collect_mixed_user_metrics",
        ),
        dataset_node(
            plot_mixed_user_accuracy,
            dataset,
            inputs=f"{dataset}_mixed_user_metrics",
            outputs=f"{dataset}.mixed_user_chart",
            name="plot_mixed_user_accuracy",
        ),
    ]
    return Pipeline(Pipeline(nodes) + predict, tags=[dataset, "mixed_users"])
