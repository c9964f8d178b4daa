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

A prediction within :data:`TIE_TOLERANCE` of 0.5 is a tie and counts half.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from steerable_alignment.episodes.sampler import EvaluationEpisodes, PreferenceData

ECE_BINS = 10
PROB_FLOOR = 1e-12
# |P(b ≻ a) − 0.5| at or below this is a tie (counts half). σ(m) ≈ 0.5 + m/4,
# so it is a reward-margin tolerance of 4e-6: a zero margin in float32 gives
# exp(logsigmoid(0)) = 0.49999997, which must not count as "option a".
TIE_TOLERANCE = 1e-6


@torch.inference_mode()
def predict_episodes(
    model: torch.nn.Module,
    data: PreferenceData,
    episodes: EvaluationEpisodes,
    num_context: int,
    batch_size: int = 1024,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``P(b ≻ a)`` of every scored target, given ``num_context`` context pairs.

    Returns:
        (E, T) float64 probabilities on the CPU.
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(episodes), batch_size):
        batch = episodes.batch(data, num_context, start, start + batch_size)
        if dtype is not None:
            batch = batch.to(batch.target_features.device, dtype)
        log_probs = model(batch)  # (B, T, 2)
        out.append(log_probs[..., 1].double().exp().cpu())
    model.train(was_training)
    return torch.cat(out)


def target_choices(data: PreferenceData, episodes: EvaluationEpisodes) -> torch.Tensor:
    """(E, T) observed choices of the scored targets, on the CPU."""
    rows = episodes.rows[:, episodes.max_context :]
    return data.choices.cpu()[rows, episodes.objective.unsqueeze(1)]


def score_targets(prob_b: torch.Tensor, choices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target correctness and NLL.

    Args:
        prob_b: (E, T) predicted probability that option b is preferred.
        choices: (E, T) observed choices in {0, 1}.

    Returns:
        correct (E, T) float64 in {0, 0.5, 1} (a tie counts half, the
        expected accuracy of breaking it at random) and nll (E, T) float64.
    """
    prob_b = prob_b.double()
    picked_b = choices.bool()
    tie = (prob_b - 0.5).abs() <= TIE_TOLERANCE
    correct = torch.where(tie, 0.5, ((prob_b > 0.5) == picked_b).double())
    prob_choice = torch.where(picked_b, prob_b, 1.0 - prob_b)
    return correct, -prob_choice.clamp_min(PROB_FLOOR).log()


def _episode_se(per_episode: torch.Tensor) -> float:
    n = per_episode.numel()
    return float(per_episode.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


def summarise(prob_b: torch.Tensor, choices: torch.Tensor) -> dict[str, float]:
    """Accuracy, NLL and ECE of predictions, with the per-episode standard errors.

    Used for validation during training, where only the means matter; the
    evaluation tables add the bootstrap standard errors (:func:`metric_rows`).

    Args:
        prob_b: (E, T) predicted probability that option b is preferred.
        choices: (E, T) observed choices in {0, 1}.

    Returns:
        ``accuracy``, ``accuracy_se``, ``nll``, ``nll_se``, ``ece``, ``n_episodes``
        (the ``_se`` values over episodes).
    """
    correct, nll = score_targets(prob_b, choices)
    per_episode_acc = correct.mean(1)
    per_episode_nll = nll.mean(1)
    return {
        "accuracy": float(per_episode_acc.mean()),
        "accuracy_se": _episode_se(per_episode_acc),
        "nll": float(per_episode_nll.mean()),
        "nll_se": _episode_se(per_episode_nll),
        "ece": expected_calibration_error(prob_b.double(), correct),
        "n_episodes": per_episode_acc.numel(),
    }


def expected_calibration_error(prob_b: torch.Tensor, correct: torch.Tensor) -> float:
    """ECE over ``ECE_BINS`` equal-width bins of confidence ``max(p, 1 − p)``."""
    confidence = torch.maximum(prob_b, 1.0 - prob_b).flatten()
    correct = correct.flatten()
    # Confidence lies in [0.5, 1]; bin it over that range.
    bins = ((confidence - 0.5) * 2 * ECE_BINS).long().clamp(0, ECE_BINS - 1)
    total = confidence.numel()
    ece = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        count = int(in_bin.sum())
        if count:
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            ece += count / total * float(gap)
    return ece


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
                    "accuracy_se_episodes": _episode_se(correct[keep].mean(1)),
                    "nll": float(nll[keep].mean()),
                    "nll_se_bootstrap": bootstrap.se(nll, keep),
                    "nll_se_episodes": _episode_se(nll[keep].mean(1)),
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
