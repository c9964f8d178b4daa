"""Scoring models on fixed evaluation episodes (DESIGN.md §3).

Accuracy and NLL are averaged per episode, then reported as mean ± standard
error over episodes; the expected calibration error pools all scored targets.
"""

from __future__ import annotations

import math

import torch

from steerable_alignment.episodes.sampler import EvaluationEpisodes, PreferenceData

ECE_BINS = 10
PROB_FLOOR = 1e-12


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


def summarise(prob_b: torch.Tensor, choices: torch.Tensor) -> dict[str, float]:
    """Accuracy, NLL and ECE of predictions against observed choices.

    A prediction of exactly 0.5 counts as half right (the expected accuracy
    of breaking the tie at random).

    Args:
        prob_b: (E, T) predicted probability that option b is preferred.
        choices: (E, T) observed choices in {0, 1}.

    Returns:
        ``accuracy``, ``accuracy_se``, ``nll``, ``nll_se``, ``ece``, ``n_episodes``.
    """
    prob_b = prob_b.double()
    picked_b = choices.bool()
    correct = torch.where(prob_b == 0.5, 0.5, ((prob_b > 0.5) == picked_b).double())  # (E, T)
    prob_choice = torch.where(picked_b, prob_b, 1.0 - prob_b)
    nll = -prob_choice.clamp_min(PROB_FLOOR).log()  # (E, T)
    per_episode_acc = correct.mean(1)
    per_episode_nll = nll.mean(1)
    n = per_episode_acc.numel()

    def se(x: torch.Tensor) -> float:
        return float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")

    return {
        "accuracy": float(per_episode_acc.mean()),
        "accuracy_se": se(per_episode_acc),
        "nll": float(per_episode_nll.mean()),
        "nll_se": se(per_episode_nll),
        "ece": expected_calibration_error(prob_b, correct),
        "n_episodes": n,
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


def metric_rows(
    prob_by_context: dict[int, torch.Tensor],
    choices: torch.Tensor,
    objective: torch.Tensor,
    objective_names: tuple[str, ...] | list[str],
) -> list[dict[str, float | int | str]]:
    """Metrics per (objective, context size), plus an ``all`` row pooling every user.

    Args:
        prob_by_context: context size -> (E, T) predicted ``P(b ≻ a)``.
        choices: (E, T) observed choices.
        objective: (E,) objective column of each episode.
        objective_names: names of the objective columns.

    Returns:
        One dict per row with ``objective``, ``num_context`` and the metrics.
    """
    present = sorted(int(k) for k in objective.unique())
    groups = [("all", torch.ones_like(objective, dtype=torch.bool))]
    groups += [(objective_names[k], objective == k) for k in present]
    rows = []
    for num_context, prob_b in sorted(prob_by_context.items()):
        for name, keep in groups:
            rows.append(
                {
                    "objective": name,
                    "num_context": num_context,
                    **summarise(prob_b[keep], choices[keep]),
                }
            )
    return rows
