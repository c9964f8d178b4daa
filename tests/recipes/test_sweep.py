import math

import pytest

from steerable_alignment.episodes.sampler import PreferenceData
from steerable_alignment.models.config import ConfigError
from steerable_alignment.recipes.sweep import (
    CandidateResult,
    candidate_grid,
    run_candidate,
    select_best,
)
from steerable_alignment.synthetic.task import generate_pairs


def test_grid_is_every_combination_with_evals_scaled_to_the_run():
    grid = candidate_grid({"lr": [1e-4, 1e-3], "max_steps": [100, 300]}, evals_per_run=10)
    assert len(grid) == 4
    assert {(c["lr"], c["max_steps"]) for c in grid} == {
        (1e-4, 100),
        (1e-4, 300),
        (1e-3, 100),
        (1e-3, 300),
    }
    assert {c["max_steps"]: c["eval_every"] for c in grid} == {100: 10, 300: 30}
    with pytest.raises(ConfigError, match="hidden_dim"):
        candidate_grid({"hidden_dim": [8]}, 10)


def _result(acc: float, nll: float, lr: float) -> CandidateResult:
    return CandidateResult("v", {"lr": lr}, acc, nll, 10, 1.0)


def test_select_best_by_accuracy_or_nll_ties_keep_the_first():
    results = [_result(0.8, 0.40, 1e-4), _result(0.9, 0.45, 3e-4), _result(0.9, 0.30, 1e-3)]
    assert select_best(results, "accuracy").overrides["lr"] == 3e-4
    assert select_best(results, "nll").overrides["lr"] == 1e-3
    with pytest.raises(ConfigError):
        select_best(results, "auc")


def test_a_candidate_never_reads_the_test_split():
    pairs = generate_pairs(600, 0.5, (0.6, 0.2, 0.2), seed=0)
    features = pairs.options.unsqueeze(-1).clone()
    test = pairs.split == 2
    features[test] = float("nan")  # any use of a test pair would poison the scores
    data = PreferenceData(features, pairs.choices, ("user_0", "user_1"))
    train_rows = (pairs.split == 0).nonzero().squeeze(1)
    val_rows = (pairs.split == 1).nonzero().squeeze(1)
    model = {"type": "nppl", "hidden_dim": 16, "latent_dim": 4, "num_heads": 2}
    training = {
        "batch_episodes": 8,
        "num_targets": 8,
        "max_context": 3,
        "val_episodes_per_objective": 8,
        "val_context_sizes": [0, 3],
        "device": "cpu",
        "select_by": "nll",
    }
    (overrides,) = candidate_grid({"lr": [1e-3], "max_steps": [20]}, evals_per_run=4)
    result = run_candidate("nppl", model, training, overrides, data, train_rows, val_rows)
    assert math.isfinite(result.val_nll) and 0.0 <= result.val_accuracy <= 1.0
    assert result.best_step in (5, 10, 15, 20)
    assert result.overrides == {"lr": 1e-3, "max_steps": 20, "eval_every": 5}
