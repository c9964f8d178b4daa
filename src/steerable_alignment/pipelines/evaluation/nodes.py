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
    "accuracy_se_bootstrap",
    "accuracy_se_episodes",
    "nll",
    "nll_se_bootstrap",
    "nll_se_episodes",
    "ece",
    "n_episodes",
    "n_clusters",
]
COMPARISON_COLUMNS = [
    "dataset",
    "model",
    "baseline",
    "objective",
    "num_context",
    "accuracy_diff",
    "accuracy_diff_se",
    "nll_diff",
    "nll_diff_se",
    "n_episodes",
]
ORACLE_MODEL = "bayes_optimal"
OBJECTIVE_PLACEHOLDER = "{objective}"


def _check_evaluation(params: dict[str, Any]) -> None:
    required = {
        "split",
        "context_sizes",
        "episodes_per_objective",
        "num_targets",
        "seed",
        "bootstrap",
    }
    optional = {"batch_size", "device", "comparisons"}
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
    boot = params["bootstrap"]
    keys = {"replicates", "cluster_by", "seed"}
    if not isinstance(boot, dict) or set(boot) != keys:
        raise ConfigError(
            f"Parameter 'evaluation.bootstrap': expected exactly the keys {sorted(keys)}"
        )
    if int(boot["replicates"]) < 2:
        raise ConfigError("Parameter 'evaluation.bootstrap.replicates': must be >= 2")
    if boot["cluster_by"] not in ("pair", "prompt"):
        raise ConfigError("Parameter 'evaluation.bootstrap.cluster_by': expected pair or prompt")
    for i, spec in enumerate(params.get("comparisons") or []):
        if not isinstance(spec, dict) or set(spec) != {"model", "baseline"}:
            raise ConfigError(
                f"Parameter 'evaluation.comparisons[{i}]': expected {{model: ..., baseline: ...}}"
            )


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
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import make_test_episodes

    split = dataset_tensors(pairs, features, data)
    episodes = make_test_episodes(
        split.splits[evaluation["split"]],
        len(split.data.objectives),
        evaluation["episodes_per_objective"],
        evaluation["num_targets"],
        max(evaluation["context_sizes"]),
        evaluation["seed"],
        parameters="evaluation",
        split=f"split '{evaluation['split']}' of '{data['name']}'",
    )
    return episodes.to_tensors()


def _stack_predictions(probs: dict[int, Any]) -> dict[str, Any]:
    import torch

    sizes = sorted(probs)
    return {
        "num_context": torch.tensor(sizes, dtype=torch.long),
        "prob_b": torch.stack([probs[n] for n in sizes]).double(),  # (S, E, T)
    }


def _unstack_predictions(predictions: dict[str, Any]) -> dict[int, Any]:
    sizes = [int(n) for n in predictions["num_context"]]
    return {n: predictions["prob_b"][i] for i, n in enumerate(sizes)}


def predict_reward_model(
    reward_model: Any,
    pairs: pd.DataFrame,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """A model's ``P(b ≻ a)`` for every scored target of the shared episodes.

    Targets are never in the context. A latent model's posterior predictive
    draws z from a generator seeded by ``evaluation.seed``.

    Returns:
        ``num_context (S,)`` and ``prob_b (S, E, T)`` float64, one slice per context size.
    """
    _check_evaluation(evaluation)
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.evaluation.checks import check_trained_on
    from steerable_alignment.runtime.devices import resolve_device

    check_trained_on(reward_model, features, data["name"])
    split = dataset_tensors(pairs, features, data)
    device = resolve_device(evaluation.get("device", "cpu"))
    episode_set = EvaluationEpisodes.from_tensors(episodes)
    return predict_context_sizes(
        reward_model,
        split.data.to(device),
        episode_set,
        evaluation["context_sizes"],
        int(evaluation["seed"]),
        evaluation.get("batch_size", 1024),
        device,
    )


def predict_context_sizes(
    reward_model: Any,
    data: Any,
    episode_set: Any,
    sizes: list[int],
    seed: int,
    batch_size: int,
    device: Any,
) -> dict[str, Any]:
    """A reward model's predictions on fixed episodes for every context size, stacked.

    Size ``n`` draws a latent model's z from ``seed + n`` (the same draws for
    every call). Returns ``num_context (S,)`` and ``prob_b (S, E, T)``.
    """
    from steerable_alignment.episodes.scoring import predict_episodes
    from steerable_alignment.runtime.devices import seeded

    model = reward_model.to(device)
    probs = {}
    for n in sizes:
        with seeded(seed + n, device):
            probs[n] = predict_episodes(model, data, episode_set, n, batch_size=batch_size)
    reward_model.cpu()
    return _stack_predictions(probs)


def predict_bayes_optimal(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
    threshold: float,
) -> dict[str, Any]:
    """The synthetic task's Bayes-optimal oracle on the same episodes as the models.

    It knows both users' reward functions and computes the exact posterior
    over user types from the context choices; nothing is fitted.
    """
    _check_evaluation(evaluation)
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.synthetic.task import bayes_optimal_prob_b

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
            batch.context_features[..., 0].double(),
            batch.context_choices,
            batch.context_mask,
            batch.target_features[..., 0].double(),
            threshold,
        )
    return _stack_predictions(probs)


def _resolve_comparisons(
    comparisons: list[dict[str, str]], models: set[str], objectives: list[str]
) -> list[tuple[str, str, str]]:
    """(model, baseline, objective group) triples; ``{objective}`` expands per objective."""
    out = []
    for spec in comparisons:
        model, baseline = spec["model"], spec["baseline"]
        if OBJECTIVE_PLACEHOLDER in baseline:
            pairs = [(baseline.replace(OBJECTIVE_PLACEHOLDER, k), k) for k in objectives]
        else:
            pairs = [(baseline, "all")] + [(baseline, k) for k in objectives]
        for name, group in pairs:
            missing = [m for m in (model, name) if m not in models]
            if missing:
                raise ConfigError(
                    f"Parameter 'evaluation.comparisons': model(s) {missing} not evaluated on "
                    f"this data set; evaluated: {sorted(models)}"
                )
            out.append((model, name, group))
    return out


def collect_reward_metrics(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
    **predictions: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One data set's metrics table and paired comparisons, from every model's predictions.

    The bootstrap replicates of the test pool (``evaluation.bootstrap``) are
    drawn once and shared by every model, so the comparisons are paired.

    Args:
        **predictions: model name -> its :func:`predict_reward_model` output.

    Returns:
        The metrics (``METRIC_COLUMNS``) and the comparisons (``COMPARISON_COLUMNS``).
    """
    _check_evaluation(evaluation)
    from steerable_alignment.contracts import dataset_tensors, pool_clusters
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.episodes.scoring import target_choices
    from steerable_alignment.evaluation.metrics import (
        PoolBootstrap,
        metric_rows,
        paired_difference_rows,
    )

    name = data["name"]
    objectives = list(data["objectives"])
    split = dataset_tensors(pairs, features, data)
    episode_set = EvaluationEpisodes.from_tensors(episodes)
    choices = target_choices(split.data, episode_set)  # (E, T)
    boot = evaluation["bootstrap"]
    clusters = pool_clusters(pairs, features, data, boot["cluster_by"])
    target_rows = episode_set.rows[:, episode_set.max_context :]  # (E, T)
    bootstrap = PoolBootstrap.draw(clusters[target_rows], int(boot["replicates"]), boot["seed"])
    probs = {model: _unstack_predictions(p) for model, p in predictions.items()}

    frames = [
        pd.DataFrame(metric_rows(p, choices, episode_set.objective, objectives, bootstrap)).assign(
            dataset=name, model=model
        )
        for model, p in probs.items()
    ]
    metrics = pd.concat(frames, ignore_index=True)[METRIC_COLUMNS]
    for column in ("n_episodes", "num_context", "n_clusters"):
        metrics[column] = metrics[column].astype("int64")
    metrics = metrics.sort_values(["model", "objective", "num_context"], ignore_index=True)

    rows = []
    triples = _resolve_comparisons(evaluation.get("comparisons") or [], set(probs), objectives)
    for model, baseline, group in triples:
        keep = (
            episode_set.objective >= 0
            if group == "all"
            else episode_set.objective == objectives.index(group)
        )
        for row in paired_difference_rows(probs[model], probs[baseline], choices, keep, bootstrap):
            rows.append(
                {"dataset": name, "model": model, "baseline": baseline, "objective": group, **row}
            )
    comparisons = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    for column in ("n_episodes", "num_context"):
        comparisons[column] = comparisons[column].astype("int64")
    logger.info(
        "%s: %d models scored on %d episodes; bootstrap over %d %s clusters x %d replicates",
        name,
        len(probs),
        len(episode_set),
        bootstrap.num_clusters,
        boot["cluster_by"],
        int(boot["replicates"]),
    )
    return metrics, comparisons


def concat_reward_metrics(*tables: pd.DataFrame) -> pd.DataFrame:
    """All data sets' metrics in one table (``reward_metrics``)."""
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["dataset", "model", "objective", "num_context"], ignore_index=True)


def concat_reward_comparisons(*tables: pd.DataFrame) -> pd.DataFrame:
    """All data sets' paired comparisons in one table (``reward_comparisons``)."""
    table = pd.concat(tables, ignore_index=True)
    keys = ["dataset", "model", "baseline", "objective", "num_context"]
    return table.sort_values(keys, ignore_index=True)


def accuracy_trace(
    rows: pd.DataFrame, name: str, colour: str, showlegend: bool, dash: str = "solid"
) -> Any:
    """One model's accuracy (%) by context size, bootstrap s.e. as error bars.

    Args:
        rows: metric rows of one model and objective, sorted by ``num_context``.
    """
    import plotly.graph_objects as go

    return go.Scatter(
        x=rows["num_context"].tolist(),
        y=(100 * rows["accuracy"]).tolist(),
        error_y={"type": "data", "array": (100 * rows["accuracy_se_bootstrap"]).tolist()},
        mode="lines+markers",
        name=name,
        legendgroup=name,
        showlegend=showlegend,
        line={"color": colour, "dash": dash},
    )


def plot_accuracy_by_context(reward_metrics: pd.DataFrame, data: dict[str, Any]) -> Any:
    """Accuracy vs context size, a line per model (the Bayes row dashed), a panel per objective."""
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
                accuracy_trace(rows, model, colour, col == 1, "dash" if oracle else "solid"),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="context pairs")
    fig.update_yaxes(title_text="test accuracy (%)", col=1)
    fig.update_layout(
        title=f"{name}: accuracy vs context size (error bars: bootstrap s.e. over the test pool)",
        template="plotly_white",
    )
    return fig


def _markdown_table(table: pd.DataFrame, index: list[str], value: str, se: str) -> list[str]:
    """``value`` (%) ± ``se`` (%) with one column per context size."""
    mean = table.pivot_table(index=index, columns="num_context", values=value) * 100
    error = table.pivot_table(index=index, columns="num_context", values=se) * 100
    lines = [
        "| " + " | ".join(index) + " | " + " | ".join(str(c) for c in mean.columns) + " |",
        "|---" * (len(index) + len(mean.columns)) + "|",
    ]
    for key in mean.index:
        labels = key if isinstance(key, tuple) else (key,)
        cells = [f"{mean.loc[key, c]:+.2f} ± {error.loc[key, c]:.2f}" for c in mean.columns]
        if value == "accuracy":
            cells = [c.lstrip("+") for c in cells]
        lines.append("| " + " | ".join(labels) + " | " + " | ".join(cells) + " |")
    return lines


def _nll_table(table: pd.DataFrame) -> list[str]:
    nll = table.pivot_table(index="model", columns="num_context", values="nll")
    lines = [
        "| model | " + " | ".join(str(c) for c in nll.columns) + " |",
        "|---" * (1 + len(nll.columns)) + "|",
    ]
    for model in nll.index:
        lines.append(
            f"| {model} | " + " | ".join(f"{nll.loc[model, c]:.3f}" for c in nll.columns) + " |"
        )
    return lines


def summarise_reward_metrics(reward_metrics: pd.DataFrame, reward_comparisons: pd.DataFrame) -> str:
    """A markdown summary: accuracy (%) by model and context size, and the paired comparisons."""
    lines = [
        "# Reward model evaluation",
        "",
        "Test accuracy (%) ± bootstrap standard error by number of context pairs. The "
        "standard error resamples the test pool (pairs for the synthetic task, prompts for "
        "UltraFeedback) and re-scores the same episodes (docs/evaluation.md); differences "
        "are paired: both models on the same episodes and the same replicates.",
        "",
    ]
    for dataset, table in reward_metrics.groupby("dataset", sort=True):
        pooled = table[table["objective"] == "all"]
        episodes = int(pooled["n_episodes"].min())
        clusters = int(pooled["n_clusters"].max())
        lines += [
            f"## {dataset}",
            "",
            f"All users pooled ({episodes} episodes of targets outside the context, drawn "
            f"from {clusters} test-pool clusters):",
            "",
            *_markdown_table(pooled, ["model"], "accuracy", "accuracy_se_bootstrap"),
            "",
            "Per objective (the user type of the episode):",
            "",
            *_markdown_table(
                table[table["objective"] != "all"],
                ["objective", "model"],
                "accuracy",
                "accuracy_se_bootstrap",
            ),
            "",
            "Mean NLL (nats), all users pooled:",
            "",
            *_nll_table(pooled),
            "",
        ]
        comparisons = reward_comparisons[reward_comparisons["dataset"] == dataset]
        if len(comparisons):
            lines += [
                "Paired differences, model − baseline, accuracy points ± bootstrap s.e.:",
                "",
                *_markdown_table(
                    comparisons,
                    ["model", "baseline", "objective"],
                    "accuracy_diff",
                    "accuracy_diff_se",
                ),
                "",
            ]
    return "\n".join(lines)
