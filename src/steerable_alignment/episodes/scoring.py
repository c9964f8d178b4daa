"""Scoring a preference model's predictions on fixed episodes: accuracy, NLL, ECE.

The per-target scores every layer agrees on: training validates with
:func:`summarise`, the evaluation tables (:mod:`steerable_alignment.evaluation.metrics`)
add the bootstrap over the test pool. A prediction within
:data:`TIE_TOLERANCE` of 0.5 is a tie and counts half.
"""

from __future__ import annotations

import math

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


def episode_se(per_episode: torch.Tensor) -> float:
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
        "accuracy_se": episode_se(per_episode_acc),
        "nll": float(per_episode_nll.mean()),
        "nll_se": episode_se(per_episode_nll),
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
