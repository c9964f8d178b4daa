"""Nodes of the ``evaluation`` pipeline for active elicitation (issue 15; docs/evaluation.md).

Simulated new users of each objective are asked pairs one at a time from a
candidate pool (a part of the test split whose prompts never appear among
the scored targets); after 0, 1, 2, ... asked pairs the NP-BTL models,
conditioned on the answers, predict each user's held-out targets. Every
strategy and model sees the same users, pools and targets, so the paired
difference against ``random`` (same model) is the value of asking well. On
the synthetic task the exact Bayes model adds the ceiling: its ``information``
policy is the Bayes-optimal active policy, its ``random`` rows the Bayes
accuracy of random contexts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline

from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.namespaces import dataset_node

logger = logging.getLogger(__name__)

ORACLE = "bayes_optimal"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
ACTIVE_COLUMNS = [
    "dataset",
    "model",
    "strategy",
    "objective",
    "num_asked",
    "accuracy",
    "accuracy_se_bootstrap",
    "nll",
    "nll_se_bootstrap",
    "accuracy_diff_vs_random",
    "accuracy_diff_vs_random_se",
    "n_users",
    "n_clusters",
]
VERSUS_COLUMNS = [
    "dataset",
    "model",
    "strategy",
    "objective",
    "num_asked",
    "num_random",
    "accuracy",
    "accuracy_random",
    "accuracy_diff",
    "accuracy_diff_se",
    "n_users",
]
KEYS = {
    "strategies", "asked", "split", "pool_size", "users_per_objective", "num_targets",
    "samples", "oracle", "threshold", "seed", "bootstrap", "batch_size", "versus_random",
    "population", "shortlist",
}  # fmt: skip


@dataclass(frozen=True)
class ActiveElicitation:
    """The ``active_elicitation.<dataset>`` parameters, checked before any work."""

    strategies: tuple[str, ...]
    asked: tuple[int, ...]
    split: str
    pool_size: int
    users_per_objective: int
    num_targets: int
    samples: int
    oracle: bool
    threshold: float
    seed: int
    replicates: int
    cluster_by: str
    bootstrap_seed: int
    batch_size: int
    versus_random: tuple[tuple[int, int], ...] = ()
    population_size: int = 256
    population_seed: int = 0
    shortlist: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], dataset: str) -> ActiveElicitation:
        from steerable_alignment.evaluation.elicitation import check_strategies

        prefix = f"active_elicitation.{dataset}"
        unknown = sorted(set(params) - KEYS)
        if unknown:
            raise ConfigError(
                f"Parameters '{prefix}': unknown key(s) {unknown}; known {sorted(KEYS)}"
            )
        for key in ("pool_size", "users_per_objective", "num_targets", "samples", "batch_size"):
            value = params.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"Parameter '{prefix}.{key}': must be a positive integer, got {value!r}"
                )
        asked = tuple(params.get("asked", ()))
        if not asked or any(not isinstance(n, int) or n < 0 for n in asked):
            raise ConfigError(f"Parameter '{prefix}.asked': integers >= 0, got {list(asked)}")
        if max(asked) > params["pool_size"]:
            raise ConfigError(
                f"Parameter '{prefix}.asked': cannot ask {max(asked)} distinct pairs from a pool "
                f"of {params['pool_size']} ('{prefix}.pool_size')"
            )
        split = params.get("split", "test")
        if split not in ("train", "validation", "test"):
            raise ConfigError(
                f"Parameter '{prefix}.split': train, validation or test, got {split!r}"
            )
        versus = []
        for entry in params.get("versus_random") or ():
            if (
                not isinstance(entry, list | tuple)
                or len(entry) != 2
                or any(isinstance(n, bool) or n not in asked for n in entry)
            ):
                raise ConfigError(
                    f"Parameter '{prefix}.versus_random': pairs [pairs asked, random pairs] "
                    f"of sizes in '{prefix}.asked' {sorted(set(asked))}, got {entry!r}"
                )
            versus.append((int(entry[0]), int(entry[1])))
        population = params.get("population") or {}
        unknown = sorted(set(population) - {"size", "seed"})
        size = population.get("size", 256)
        if unknown or isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ConfigError(
                f"Parameter '{prefix}.population': {{size: an integer >= 2, seed}}, got "
                f"{population!r}"
            )
        shortlist = params.get("shortlist")
        if shortlist is not None and (
            isinstance(shortlist, bool) or not isinstance(shortlist, int) or shortlist <= 0
        ):
            raise ConfigError(
                f"Parameter '{prefix}.shortlist': a positive integer (pairs scored by "
                f"'information') or null (every pool pair), got {shortlist!r}"
            )
        boot = params.get("bootstrap") or {}
        return cls(
            strategies=check_strategies(list(params.get("strategies", ())), f"{prefix}.strategies"),
            asked=tuple(sorted(set(asked))),
            split=split,
            pool_size=int(params["pool_size"]),
            users_per_objective=int(params["users_per_objective"]),
            num_targets=int(params["num_targets"]),
            samples=int(params.get("samples", 32)),
            oracle=bool(params.get("oracle", False)),
            threshold=float(params.get("threshold", 0.5)),
            seed=int(params.get("seed", 0)),
            replicates=int(boot.get("replicates", 1000)),
            cluster_by=str(boot.get("cluster_by", "pair")),
            bootstrap_seed=int(boot.get("seed", 0)),
            batch_size=int(params.get("batch_size", 256)),
            versus_random=tuple(versus),
            population_size=int(size),
            population_seed=int(population.get("seed", 0)),
            shortlist=shortlist,
        )


def _pool_and_users(split_rows, clusters, objective_count, config: ActiveElicitation):
    """Pool rows (M,), each user's target rows (B, T) and objective (B,), seeded.

    The pool takes whole clusters (prompts for text data), so no pool prompt
    is ever among the scored targets.
    """
    import torch

    from steerable_alignment.episodes.sampler import sample_distinct

    generator = torch.Generator().manual_seed(config.seed)
    cluster_of = clusters[split_rows]  # (P,)
    ids = torch.unique(cluster_of)
    order = ids[torch.randperm(len(ids), generator=generator)]
    rank = torch.empty(int(ids.max()) + 1, dtype=torch.long)
    rank[order] = torch.arange(len(order))
    by_cluster = split_rows[torch.argsort(rank[cluster_of], stable=True)]  # rows, clusters shuffled
    sizes = torch.bincount(rank[cluster_of], minlength=len(order))[: len(order)]
    taken = int(torch.searchsorted(torch.cumsum(sizes, 0), config.pool_size)) + 1
    pool_rows_all = by_cluster[: int(sizes[:taken].sum())]
    target_rows = by_cluster[int(sizes[:taken].sum()) :]
    if len(pool_rows_all) < config.pool_size or len(target_rows) < config.num_targets:
        raise ConfigError(
            f"active elicitation: the {config.split} split ({len(split_rows)} pairs) cannot hold a "
            f"pool of {config.pool_size} and {config.num_targets} targets per user on other "
            "prompts; lower pool_size or num_targets"
        )
    pool = pool_rows_all[
        torch.randperm(len(pool_rows_all), generator=generator)[: config.pool_size]
    ]
    users = config.users_per_objective * objective_count
    picks = sample_distinct(
        len(target_rows), (users, config.num_targets), generator, torch.device("cpu")
    )
    objective = torch.arange(objective_count).repeat_interleave(config.users_per_objective)
    return pool, target_rows[picks], objective


def evaluate_active_elicitation(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    data: dict[str, Any],
    active: dict[str, Any],
    **reward_models: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy on held-out targets after 0, 1, 2, ... asked pairs, per model and strategy.

    Args:
        data: ``name``, ``objectives`` (the data set's reward-modelling ``data``).
        active: the ``active_elicitation.<dataset>`` parameters.
        reward_models: ``<variant>`` -> that NP-BTL reward model.

    Returns:
        The table: one row per (model, strategy, objective incl. ``all``,
        num_asked): accuracy and NLL with bootstrap s.e. over the scored
        targets' clusters (shared by every row), and the paired accuracy
        difference against ``random`` for the same model. And the budget
        comparison (``versus_random``: [n asked, m random]): each strategy
        after n asked pairs minus ``random`` after m pairs, same model, users
        and targets, paired, with its bootstrap s.e.
    """
    import torch

    from steerable_alignment.contracts import dataset_tensors, pool_clusters
    from steerable_alignment.evaluation.checks import check_trained_on
    from steerable_alignment.evaluation.elicitation import (
        BayesView,
        NPBTLView,
        PopulationView,
        elicit,
        population_bank,
    )
    from steerable_alignment.evaluation.metrics import (
        PoolBootstrap,
        metric_rows,
        paired_difference_rows,
    )

    name = data["name"]
    config = ActiveElicitation.from_params(active, name)
    objectives = list(data["objectives"])
    split = dataset_tensors(pairs, features, data)
    views: dict[str, Any] = {}
    for variant, model in reward_models.items():
        check_trained_on(model, features, name)
        if "population" in config.strategies:
            # the bank's contexts span the sizes the model was trained on (recorded when trained)
            trained = (getattr(model, "trained_with", None) or {}).get("max_context")
            trained = trained or max(1, *config.asked)
            bank = population_bank(
                model,
                split.data.features.float(),
                split.data.choices,
                split.splits["train"],
                config.population_size,
                int(trained),
                config.population_seed,
            )
            views[variant] = PopulationView(model, bank, config.samples, shortlist=config.shortlist)
        else:
            views[variant] = NPBTLView(model, config.samples, shortlist=config.shortlist)
    if config.oracle:
        views[ORACLE] = BayesView(config.threshold)
    clusters = pool_clusters(pairs, features, data, config.cluster_by)
    pool, targets, objective = _pool_and_users(
        split.splits[config.split], clusters, len(objectives), config
    )
    feats = split.data.features.float()
    users = torch.arange(len(objective))
    pool_choices = split.data.choices[pool][:, objective].T  # (B, M)
    choices = split.data.choices[targets, objective.unsqueeze(1)]  # (B, T)
    bootstrap = PoolBootstrap.draw(clusters[targets], config.replicates, config.bootstrap_seed)
    steps = max(config.asked)
    rows, versus_rows = [], []
    groups = [("all", users >= 0)] + [(k, objective == i) for i, k in enumerate(objectives)]
    for model_name, view in views.items():
        dtype = torch.float64 if model_name == ORACLE else torch.float32
        probs_by_strategy = {}
        for strategy in config.strategies:
            if strategy == "population" and model_name == ORACLE:
                logger.info("%s: the oracle's 'information' already knows the population", name)
                continue
            if strategy == "information" and not getattr(view, "latent", True):
                logger.info(
                    "%s: %s has one z: 'information' needs a latent model, skipped",
                    name,
                    model_name,
                )
                continue
            pool_x, target_x = feats[pool].to(dtype), feats[targets].to(dtype)
            result = elicit(
                view,
                pool_x,
                pool_choices,
                target_x,
                strategy,
                steps,
                config.seed,
                chunk=config.batch_size,
            )
            probs_by_strategy[strategy] = {n: result.prob_b[n] for n in config.asked}
        for strategy, probs in probs_by_strategy.items():
            table = metric_rows(probs, choices, objective, objectives, bootstrap)
            diffs = {}
            if "random" in probs_by_strategy and strategy != "random":
                for group, keep in groups:
                    for row in paired_difference_rows(
                        probs, probs_by_strategy["random"], choices, keep, bootstrap
                    ):
                        diffs[(group, row["num_context"])] = row
            for row in table:
                diff = diffs.get((row["objective"], row["num_context"]), {})
                rows.append(
                    {
                        "dataset": name,
                        "model": model_name,
                        "strategy": strategy,
                        "objective": row["objective"],
                        "num_asked": row["num_context"],
                        "accuracy": row["accuracy"],
                        "accuracy_se_bootstrap": row["accuracy_se_bootstrap"],
                        "nll": row["nll"],
                        "nll_se_bootstrap": row["nll_se_bootstrap"],
                        "accuracy_diff_vs_random": diff.get("accuracy_diff", float("nan")),
                        "accuracy_diff_vs_random_se": diff.get("accuracy_diff_se", float("nan")),
                        "n_users": row["n_episodes"],
                        "n_clusters": row["n_clusters"],
                    }
                )
            if "random" in probs_by_strategy and strategy != "random":
                labels = {"dataset": name, "model": model_name, "strategy": strategy}
                versus_rows += _versus_random_rows(
                    labels, probs, probs_by_strategy["random"], choices, groups, bootstrap, config
                )
    logger.info(
        "%s: %d users asked up to %d pairs from a pool of %d; %d targets each",
        name, len(objective), steps, len(pool), config.num_targets,
    )  # fmt: skip
    table = pd.DataFrame(rows, columns=ACTIVE_COLUMNS)
    for column in ("num_asked", "n_users", "n_clusters"):
        table[column] = table[column].astype("int64")
    versus = pd.DataFrame(versus_rows, columns=VERSUS_COLUMNS)
    for column in ("num_asked", "num_random", "n_users"):
        versus[column] = versus[column].astype("int64")
    order = ["model", "strategy", "objective", "num_asked"]
    return (
        table.sort_values(order, ignore_index=True),
        versus.sort_values([*order, "num_random"], ignore_index=True),
    )


def _versus_random_rows(labels, probs, random_probs, choices, groups, bootstrap, config):
    """Rows of the budget comparison: n asked pairs vs m random ones, per objective group."""
    from steerable_alignment.episodes.scoring import score_targets
    from steerable_alignment.evaluation.metrics import paired_difference_rows

    rows = []
    for asked, randomly in config.versus_random:
        for group, keep in groups:
            (diff,) = paired_difference_rows(
                {0: probs[asked]}, {0: random_probs[randomly]}, choices, keep, bootstrap
            )
            correct, _ = score_targets(probs[asked], choices)
            correct_random, _ = score_targets(random_probs[randomly], choices)
            rows.append(
                {
                    **labels,
                    "objective": group,
                    "num_asked": asked,
                    "num_random": randomly,
                    "accuracy": float(correct[keep].mean()),
                    "accuracy_random": float(correct_random[keep].mean()),
                    "accuracy_diff": diff["accuracy_diff"],
                    "accuracy_diff_se": diff["accuracy_diff_se"],
                    "n_users": diff["n_episodes"],
                }
            )
    return rows


def concat_active_elicitation(*tables: pd.DataFrame) -> pd.DataFrame:
    """Every data set's table in one (``active_elicitation``, ``active_versus_random``)."""
    return pd.concat(tables, ignore_index=True)


def plot_active_elicitation(active_elicitation: pd.DataFrame) -> Any:
    """Accuracy (all users) vs pairs asked: a panel per data set, a line per model x strategy."""
    from plotly.subplots import make_subplots

    from steerable_alignment.pipelines.evaluation.nodes import accuracy_trace

    table = active_elicitation[active_elicitation["objective"] == "all"]
    datasets = sorted(table["dataset"].unique())
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, shared_yaxes=True)
    dashes = {
        "random": "dot",
        "uncertainty": "dash",
        "information": "solid",
        "population": "dashdot",
    }
    colours: dict[str, str] = {}
    shown: set[str] = set()
    for col, dataset in enumerate(datasets, start=1):
        part = table[table["dataset"] == dataset]
        for (model, strategy), rows in part.groupby(["model", "strategy"]):
            rows = rows.rename(columns={"num_asked": "num_context"}).sort_values("num_context")
            label = f"{model} · {strategy}"
            colour = colours.setdefault(model, PALETTE[len(colours) % len(PALETTE)])
            trace = accuracy_trace(rows, label, colour, label not in shown, dashes[strategy])
            shown.add(label)
            fig.add_trace(trace, row=1, col=col)
    fig.update_xaxes(title_text="pairs asked")
    fig.update_yaxes(title_text="held-out accuracy (%)", col=1)
    fig.update_layout(
        title="Active elicitation: accuracy after each asked pair (error bars: bootstrap s.e.)",
        template="plotly_white",
    )
    return fig


def active_elicitation_pipeline(variants: Mapping[str, tuple[str, ...]]) -> Pipeline:
    """The per-data-set tables, their concatenation and the chart."""
    from kedro.pipeline import node

    nodes = [
        dataset_node(
            evaluate_active_elicitation,
            dataset,
            inputs={
                "pairs": f"{dataset}.pairs",
                "features": f"{dataset}.features",
                "data": f"params:reward_modelling.{dataset}.data",
                "active": f"params:active_elicitation.{dataset}",
                **{v: f"{dataset}.{v}.reward_model" for v in variants[dataset]},
            },
            outputs=[f"{dataset}_active_elicitation", f"{dataset}_active_versus_random"],
            name="evaluate_active_elicitation",
        )
        for dataset in variants
    ]
    datasets = list(variants)
    nodes += [
        node(
            concat_active_elicitation,
            inputs=[f"{d}_active_elicitation" for d in datasets],
            outputs="active_elicitation",
            name="concat_active_elicitation",
        ),
        node(
            concat_active_elicitation,
            inputs=[f"{d}_active_versus_random" for d in datasets],
            outputs="active_versus_random",
            name="concat_active_versus_random",
        ),
        node(
            plot_active_elicitation,
            inputs="active_elicitation",
            outputs="active_elicitation_chart",
            name="plot_active_elicitation",
        ),
    ]
    return Pipeline(nodes, tags=["active_elicitation"])
