"""Nodes of the ``evaluation`` pipeline: metrics, the oracle row, chart, summary."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError

logger = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "dataset",
    "model",
    "objective",
    "num_context",
    "accuracy",
    "accuracy_se",
    "nll",
    "nll_se",
    "ece",
    "n_episodes",
]
ORACLE_MODEL = "bayes_optimal"


def _check_evaluation(params: dict[str, Any]) -> None:
    required = {"split", "context_sizes", "episodes_per_objective", "num_targets", "seed"}
    optional = {"batch_size", "device"}
    missing = sorted(required - set(params))
    unknown = sorted(set(params) - required - optional)
    if missing or unknown:
        raise ConfigError(f"Parameter 'evaluation': missing {missing} / unknown {unknown} key(s)")
    if params["split"] not in ("train", "validation", "test"):
        raise ConfigError("Parameter 'evaluation.split': expected train, validation or test")
    sizes = params["context_sizes"]
    if not sizes or min(sizes) < 0:
        raise ConfigError(f"Parameter 'evaluation.context_sizes': non-negative sizes, got {sizes}")
    for key in ("episodes_per_objective", "num_targets"):
        if int(params[key]) <= 0:
            raise ConfigError(f"Parameter 'evaluation.{key}': must be positive")


def make_evaluation_episodes(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """Draw the fixed evaluation episodes every model of a data set is scored on.

    Returns:
        ``rows (E, max_context + T)`` (rows of the features file),
        ``objective (E,)`` and ``max_context``.
    """
    _check_evaluation(evaluation)
    import torch

    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import make_evaluation_episodes as draw

    split = dataset_tensors(pairs, features, data)
    rows = split.splits[evaluation["split"]]
    max_context = max(evaluation["context_sizes"])
    needed = max_context + evaluation["num_targets"]
    if len(rows) < needed:
        raise ConfigError(
            f"Parameter 'evaluation.context_sizes'/'num_targets': episodes need {needed} distinct "
            f"pairs but split '{evaluation['split']}' of '{data['name']}' has {len(rows)}"
        )
    episodes = draw(
        rows,
        torch.arange(len(split.data.objectives)),
        evaluation["episodes_per_objective"],
        evaluation["num_targets"],
        max_context,
        evaluation["seed"],
    )
    return episodes.to_tensors()


def _metrics_frame(prob_by_context, split, episodes, objectives) -> pd.DataFrame:
    from steerable_alignment.evaluation.metrics import metric_rows, target_choices

    choices = target_choices(split.data, episodes)
    return pd.DataFrame(metric_rows(prob_by_context, choices, episodes.objective, objectives))


def evaluate_reward_model(
    reward_model: Any,
    pairs: pd.DataFrame,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
) -> pd.DataFrame:
    """Accuracy, NLL and ECE of a model per objective and context size.

    Scored on targets outside the context; mean ± standard error over episodes.
    """
    _check_evaluation(evaluation)
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.evaluation.metrics import predict_episodes
    from steerable_alignment.training.loop import resolve_device

    objectives = list(data["objectives"])
    split = dataset_tensors(pairs, features, data)
    device = resolve_device(evaluation.get("device", "cpu"))
    episode_set = EvaluationEpisodes.from_tensors(episodes)
    prepared = split.data.to(device)
    model = reward_model.to(device)
    probs = {
        n: predict_episodes(
            model, prepared, episode_set, n, batch_size=evaluation.get("batch_size", 1024)
        )
        for n in evaluation["context_sizes"]
    }
    reward_model.cpu()
    return _metrics_frame(probs, split, episode_set, objectives)


def evaluate_bayes_optimal(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
    threshold: float,
) -> pd.DataFrame:
    """The synthetic task's Bayes-optimal oracle on the same episodes as the models.

    It knows both users' reward functions and computes the exact posterior
    over user types from the context choices; nothing is fitted.
    """
    _check_evaluation(evaluation)
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.synthetic.task import bayes_optimal_prob_b

    objectives = list(data["objectives"])
    split = dataset_tensors(pairs, features, data)
    if split.data.features.shape[-1] != 1:
        raise ConfigError(
            f"The Bayes-optimal oracle needs scalar options (D = 1); '{data['name']}' has "
            f"D = {split.data.features.shape[-1]}"
        )
    episode_set = EvaluationEpisodes.from_tensors(episodes)
    probs = {}
    for n in evaluation["context_sizes"]:
        batch = episode_set.batch(split.data, n)
        probs[n] = bayes_optimal_prob_b(
            batch.context_features[..., 0],
            batch.context_choices,
            batch.context_mask,
            batch.target_features[..., 0].double(),
            threshold,
        )
    return _metrics_frame(probs, split, episode_set, objectives)


def collect_reward_metrics(data: dict[str, Any], **metrics: pd.DataFrame) -> pd.DataFrame:
    """Stack one data set's per-model tables.

    Args:
        data: the data set's description (its ``name``).
        **metrics: model name -> that model's metrics.

    Returns:
        One row per (dataset, model, objective, num_context), columns ``METRIC_COLUMNS``.
    """
    frames = [frame.assign(dataset=data["name"], model=model) for model, frame in metrics.items()]
    table = pd.concat(frames, ignore_index=True)[METRIC_COLUMNS]
    table["n_episodes"] = table["n_episodes"].astype("int64")
    table["num_context"] = table["num_context"].astype("int64")
    return table.sort_values(["model", "objective", "num_context"], ignore_index=True)


def concat_reward_metrics(*tables: pd.DataFrame) -> pd.DataFrame:
    """All data sets' metrics in one table (``reward_metrics``)."""
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["dataset", "model", "objective", "num_context"], ignore_index=True)


def plot_accuracy_by_context(reward_metrics: pd.DataFrame, data: dict[str, Any]) -> Any:
    """Accuracy vs context size, a line per model (the Bayes row dashed), a panel per objective."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    name = data["name"]
    table = reward_metrics[reward_metrics["dataset"] == name]
    panels = ["all"] + [o for o in data["objectives"] if o in set(table["objective"])]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, shared_yaxes=True)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    models = sorted(m for m in table["model"].unique() if m != ORACLE_MODEL)
    if ORACLE_MODEL in set(table["model"]):
        models.append(ORACLE_MODEL)
    for i, model in enumerate(models):
        oracle = model == ORACLE_MODEL
        colour = "black" if oracle else palette[i % len(palette)]
        for col, objective in enumerate(panels, start=1):
            rows = table[(table["model"] == model) & (table["objective"] == objective)]
            rows = rows.sort_values("num_context")
            fig.add_trace(
                go.Scatter(
                    x=rows["num_context"],
                    y=100 * rows["accuracy"],
                    error_y={"type": "data", "array": 100 * rows["accuracy_se"]},
                    mode="lines+markers",
                    name=model,
                    legendgroup=model,
                    showlegend=col == 1,
                    line={"color": colour, "dash": "dash" if oracle else "solid"},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="context pairs")
    fig.update_yaxes(title_text="test accuracy (%)", col=1)
    fig.update_layout(title=f"{name}: accuracy vs context size", template="plotly_white")
    return fig


def _markdown_table(table: pd.DataFrame, index: list[str]) -> list[str]:
    """Accuracy (%) ± s.e. with one column per context size."""
    acc = table.pivot_table(index=index, columns="num_context", values="accuracy") * 100
    se = table.pivot_table(index=index, columns="num_context", values="accuracy_se") * 100
    lines = [
        "| " + " | ".join(index) + " | " + " | ".join(str(c) for c in acc.columns) + " |",
        "|---" * (len(index) + len(acc.columns)) + "|",
    ]
    for key in acc.index:
        labels = key if isinstance(key, tuple) else (key,)
        cells = [f"{acc.loc[key, c]:.2f} ± {se.loc[key, c]:.2f}" for c in acc.columns]
        lines.append("| " + " | ".join(labels) + " | " + " | ".join(cells) + " |")
    return lines


def summarise_reward_metrics(reward_metrics: pd.DataFrame) -> str:
    """A markdown summary: accuracy (%) by model and context size, pooled and per objective."""
    lines = ["# Reward model evaluation", ""]
    for dataset, table in reward_metrics.groupby("dataset", sort=True):
        pooled = table[table["objective"] == "all"]
        episodes = int(pooled["n_episodes"].min())
        lines += [
            f"## {dataset}",
            "",
            f"Test accuracy (%) ± s.e. by number of context pairs; all users pooled "
            f"({episodes} episodes of targets outside the context).",
            "",
            *_markdown_table(pooled, ["model"]),
            "",
            "Per objective (the user type of the episode):",
            "",
            *_markdown_table(table[table["objective"] != "all"], ["objective", "model"]),
            "",
        ]
    return "\n".join(lines)
