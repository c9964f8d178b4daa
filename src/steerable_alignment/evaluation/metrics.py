"""Scoring models on fixed evaluation episodes (DESIGN.md §3).

Every model of a data set is scored on the same episodes, whose targets come
from a small fixed test pool (2,000 synthetic pairs; a few hundred
UltraFeedback prompts). Episodes re-use that pool, so they are not
independent draws: the uncertainty of a mean over episodes comes from the
pool, not from the number of episodes. Two standard errors are reported:

- ``*_se_bootstrap`` (the one to quote): a cluster bootstrap over the test
  pool. Each replicate draws the pool's clusters (pairs for the synthetic
  task, prompts for UltraFeedback) with replacement and re-scores the *same*
  episodes with every target weighted by how often its cluster was drawn.
  The same replicates are used for every model, so differences between
  models (:func:`paired_difference_rows`) are paired.
- ``*_se_episodes``: the naive standard error over episodes, which treats
  them as independent and understates the uncertainty; kept for reference.

Per-target scores (ties count half) come from
:mod:`steerable_alignment.episodes.scoring`, shared with training's validation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from steerable_alignment.episodes.scoring import (
    episode_se,
    expected_calibration_error,
    score_targets,
)


@dataclass(frozen=True)
class PoolBootstrap:
    """Cluster-bootstrap replicates of a test pool, shared by every model.

    Attributes:
        clusters: (E, T) long cluster (0..C-1) of every scored target: its
            pair, or its prompt for text data.
        weights: (R, C) float64, how often each cluster is drawn in each of
            R replicates (each replicate draws C clusters with replacement).
    """

    clusters: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def draw(cls, clusters: torch.Tensor, num_replicates: int, seed: int) -> PoolBootstrap:
        """Draw ``num_replicates`` replicates of the clusters seen in ``clusters``.

        Args:
            clusters: (E, T) any integer ids; renumbered to 0..C-1.
            num_replicates: R.
            seed: seeds the draws.
        """
        if num_replicates < 2:
            raise ValueError(f"num_replicates must be >= 2, got {num_replicates}")
        ids, dense = torch.unique(clusters, return_inverse=True)
        num = len(ids)
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randint(num, (num_replicates, num), generator=generator)  # (R, C)
        weights = torch.zeros(num_replicates, num, dtype=torch.float64)
        weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
        return cls(dense.reshape(clusters.shape), weights)

    @property
    def num_clusters(self) -> int:
        return self.weights.shape[1]

    def cluster_sums(self, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(E, T) per-target values, (E,) episodes kept -> (C,) sums per cluster."""
        sums = torch.zeros(self.num_clusters, dtype=torch.float64)
        return sums.index_add_(0, self.clusters[keep].flatten(), values[keep].double().flatten())

    def se(self, values: torch.Tensor, keep: torch.Tensor) -> float:
        """Bootstrap standard error of the mean of ``values`` over the kept episodes' targets."""
        sums = self.cluster_sums(values, keep)  # (C,)
        counts = self.cluster_sums(torch.ones_like(values, dtype=torch.float64), keep)  # (C,)
        replicates = (self.weights @ sums) / (self.weights @ counts).clamp_min(1.0)  # (R,)
        return float(replicates.std(unbiased=True))


def _groups(
    objective: torch.Tensor, objective_names: Sequence[str]
) -> list[tuple[str, torch.Tensor]]:
    present = sorted(int(k) for k in objective.unique())
    groups = [("all", torch.ones_like(objective, dtype=torch.bool))]
    return groups + [(objective_names[k], objective == k) for k in present]


def metric_rows(
    prob_by_context: Mapping[int, torch.Tensor],
    choices: torch.Tensor,
    objective: torch.Tensor,
    objective_names: Sequence[str],
    bootstrap: PoolBootstrap,
) -> list[dict[str, float | int | str]]:
    """Metrics per (objective, context size), plus an ``all`` row pooling every user.

    Args:
        prob_by_context: context size -> (E, T) predicted ``P(b ≻ a)``.
        choices: (E, T) observed choices.
        objective: (E,) objective column of each episode.
        objective_names: names of the objective columns.
        bootstrap: the test pool's replicates (the same for every model).

    Returns:
        One dict per row: ``objective``, ``num_context``, ``accuracy``,
        ``accuracy_se_bootstrap``, ``accuracy_se_episodes``, ``nll``,
        ``nll_se_bootstrap``, ``nll_se_episodes``, ``ece``, ``n_episodes``,
        ``n_clusters`` (distinct pool clusters among the scored targets).
    """
    rows = []
    for num_context, prob_b in sorted(prob_by_context.items()):
        correct, nll = score_targets(prob_b, choices)
        for name, keep in _groups(objective, objective_names):
            rows.append(
                {
                    "objective": name,
                    "num_context": num_context,
                    "accuracy": float(correct[keep].mean()),
                    "accuracy_se_bootstrap": bootstrap.se(correct, keep),
                    "accuracy_se_episodes": episode_se(correct[keep].mean(1)),
                    "nll": float(nll[keep].mean()),
                    "nll_se_bootstrap": bootstrap.se(nll, keep),
                    "nll_se_episodes": episode_se(nll[keep].mean(1)),
                    "ece": expected_calibration_error(prob_b[keep].double(), correct[keep]),
                    "n_episodes": int(keep.sum()),
                    "n_clusters": int(bootstrap.clusters[keep].unique().numel()),
                }
            )
    return rows


def paired_difference_rows(
    model_probs: Mapping[int, torch.Tensor],
    baseline_probs: Mapping[int, torch.Tensor],
    choices: torch.Tensor,
    keep: torch.Tensor,
    bootstrap: PoolBootstrap,
) -> list[dict[str, float | int]]:
    """Model minus baseline on the same episodes, with a paired bootstrap SE.

    The difference is taken target by target (both models scored the same
    targets with the same contexts), and its standard error comes from the
    same pool replicates as the models' own errors.

    Args:
        model_probs, baseline_probs: context size -> (E, T) ``P(b ≻ a)``.
        choices: (E, T) observed choices.
        keep: (E,) bool, the episodes compared (e.g. one objective's users).
        bootstrap: the test pool's replicates.

    Returns:
        One dict per context size: ``num_context``, ``accuracy_diff``,
        ``accuracy_diff_se``, ``nll_diff``, ``nll_diff_se``, ``n_episodes``.
    """
    rows = []
    for num_context in sorted(model_probs):
        correct_m, nll_m = score_targets(model_probs[num_context], choices)
        correct_b, nll_b = score_targets(baseline_probs[num_context], choices)
        d_acc, d_nll = correct_m - correct_b, nll_m - nll_b  # (E, T)
        rows.append(
            {
                "num_context": num_context,
                "accuracy_diff": float(d_acc[keep].mean()),
                "accuracy_diff_se": bootstrap.se(d_acc, keep),
                "nll_diff": float(d_nll[keep].mean()),
                "nll_diff_se": bootstrap.se(d_nll, keep),
                "n_episodes": int(keep.sum()),
            }
        )
    return rows
