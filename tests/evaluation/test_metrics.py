import math

import torch

from steerable_alignment.evaluation.metrics import (
    expected_calibration_error,
    metric_rows,
    summarise,
)


def test_summarise_hand_computed():
    prob_b = torch.tensor([[0.9, 0.2], [0.5, 0.6]], dtype=torch.float64)
    choices = torch.tensor([[1, 1], [0, 1]])
    s = summarise(prob_b, choices)
    # episode 1: right, wrong -> 0.5; episode 2: tie (0.5), right -> 0.75.
    assert math.isclose(s["accuracy"], 0.625)
    assert math.isclose(s["accuracy_se"], math.sqrt(((0.5 - 0.625) ** 2 * 2) / 1) / math.sqrt(2))
    nll = (-math.log(0.9) - math.log(0.2) - math.log(0.5) - math.log(0.6)) / 4
    assert math.isclose(s["nll"], nll)
    assert s["n_episodes"] == 2


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    prob = torch.full((1000,), 0.8, dtype=torch.float64)
    correct = torch.zeros(1000, dtype=torch.float64)
    correct[:800] = 1
    assert expected_calibration_error(prob, correct) < 1e-12
    assert math.isclose(expected_calibration_error(prob, torch.zeros(1000)), 0.8)


def test_metric_rows_pool_and_split_objectives():
    prob = {0: torch.full((4, 3), 0.9, dtype=torch.float64)}
    choices = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]])
    objective = torch.tensor([0, 0, 1, 1])
    rows = {r["objective"]: r for r in metric_rows(prob, choices, objective, ["a", "b"])}
    assert rows["a"]["accuracy"] == 1.0 and rows["b"]["accuracy"] == 0.0
    assert rows["all"]["accuracy"] == 0.5 and rows["all"]["n_episodes"] == 4
