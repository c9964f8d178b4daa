import math

import pytest
import torch

from steerable_alignment.episodes.scoring import (
    TIE_TOLERANCE,
    expected_calibration_error,
    score_targets,
    summarise,
)
from steerable_alignment.evaluation.metrics import (
    PoolBootstrap,
    metric_rows,
    paired_difference_rows,
)
from steerable_alignment.models.losses import btl_log_probs


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


def test_a_zero_reward_margin_is_a_tie_not_option_a():
    # A BTL model with equal rewards: float32 logsigmoid(0) read back in float64
    # (as predict_episodes does) gives 0.49999998, not 0.5.
    reward = torch.tensor([[0.3, 0.3]])
    prob_b = btl_log_probs(reward, reward)[..., 1].double().exp()
    assert float(prob_b[0, 0]) != 0.5
    for picked in (0, 1):
        correct, _ = score_targets(prob_b.double(), torch.full((1, 2), picked))
        assert correct.tolist() == [[0.5, 0.5]]
    # Just outside the tolerance the prediction counts as a choice.
    outside = torch.tensor(
        [[0.5 + 2 * TIE_TOLERANCE, 0.5 - 2 * TIE_TOLERANCE]], dtype=torch.float64
    )
    correct, _ = score_targets(outside, torch.tensor([[1, 1]]))
    assert correct.tolist() == [[1.0, 0.0]]


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    prob = torch.full((1000,), 0.8, dtype=torch.float64)
    correct = torch.zeros(1000, dtype=torch.float64)
    correct[:800] = 1
    assert expected_calibration_error(prob, correct) < 1e-12
    assert math.isclose(expected_calibration_error(prob, torch.zeros(1000)), 0.8)


def test_bootstrap_weights_draw_every_cluster_count_with_replacement():
    clusters = torch.tensor([[10, 20], [30, 20]])  # ids renumbered to 0..2
    boot = PoolBootstrap.draw(clusters, num_replicates=500, seed=0)
    assert boot.weights.shape == (500, 3)
    assert torch.equal(boot.weights.sum(1), torch.full((500,), 3.0, dtype=torch.float64))
    assert boot.clusters.tolist() == [[0, 1], [2, 1]]
    # Each cluster is drawn Binomial(3, 1/3) times: mean 1.
    assert torch.allclose(boot.weights.mean(0), torch.ones(3, dtype=torch.float64), atol=0.1)
    again = PoolBootstrap.draw(clusters, num_replicates=500, seed=0)
    assert torch.equal(boot.weights, again.weights)


def test_bootstrap_se_by_hand_two_clusters():
    # Cluster 0 always right, cluster 1 always wrong; each replicate draws two
    # clusters: mean 1, 1/2, 0 with probabilities 1/4, 1/2, 1/4 -> sd sqrt(1/8).
    clusters = torch.tensor([[0, 0, 1, 1]] * 3)
    correct = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    boot = PoolBootstrap.draw(clusters, num_replicates=20000, seed=1)
    keep = torch.ones(3, dtype=torch.bool)
    assert abs(boot.se(correct, keep) - math.sqrt(1 / 8)) < 0.01


def test_bootstrap_se_reflects_the_pool_not_the_number_of_episodes():
    # 2,000 episodes re-use a pool of 40 pairs, half of which a model gets right.
    g = torch.Generator().manual_seed(0)
    pool_correct = torch.zeros(40, dtype=torch.float64)
    pool_correct[:20] = 1.0
    targets = torch.randint(40, (2000, 10), generator=g)  # (E, T) pool rows
    prob_b = torch.where(pool_correct[targets] > 0, 0.9, 0.1)
    choices = torch.ones_like(targets)
    boot = PoolBootstrap.draw(targets, num_replicates=4000, seed=2)
    (row,) = metric_rows({0: prob_b}, choices, torch.zeros(2000, dtype=torch.long), ["u"], boot)[:1]
    pool_se = math.sqrt(0.25 / 40)  # binomial s.e. of a mean over 40 pairs
    assert abs(row["accuracy_se_bootstrap"] - pool_se) < 0.15 * pool_se
    assert row["accuracy_se_bootstrap"] > 5 * row["accuracy_se_episodes"]
    assert row["n_clusters"] == 40


def test_metric_rows_pool_and_split_objectives():
    prob = {0: torch.full((4, 3), 0.9, dtype=torch.float64)}
    choices = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]])
    objective = torch.tensor([0, 0, 1, 1])
    boot = PoolBootstrap.draw(torch.arange(12).reshape(4, 3), 100, seed=0)
    rows = {r["objective"]: r for r in metric_rows(prob, choices, objective, ["a", "b"], boot)}
    assert rows["a"]["accuracy"] == 1.0 and rows["b"]["accuracy"] == 0.0
    assert rows["all"]["accuracy"] == 0.5 and rows["all"]["n_episodes"] == 4
    assert rows["a"]["accuracy_se_bootstrap"] == 0.0  # always right: no spread
    assert rows["all"]["accuracy_se_bootstrap"] > 0.05


def test_paired_difference_by_hand_and_smaller_than_unpaired():
    g = torch.Generator().manual_seed(3)
    e, t = 300, 10
    targets = torch.randint(50, (e, t), generator=g)
    hard = (targets % 2).double()  # odd pool pairs are hard for both models
    choices = torch.ones(e, t, dtype=torch.long)
    base = torch.where(hard > 0, 0.3, 0.8)
    # The model gets pool pair 0 right where the baseline did not; otherwise identical.
    better = torch.where(targets == 1, 0.7, base)
    boot = PoolBootstrap.draw(targets, 2000, seed=4)
    keep = torch.ones(e, dtype=torch.bool)
    (row,) = paired_difference_rows({3: better}, {3: base}, choices, keep, boot)
    expected = float((targets == 1).double().mean())  # fraction of targets that flipped
    assert row["num_context"] == 3 and math.isclose(row["accuracy_diff"], expected)
    own = metric_rows({3: base}, choices, torch.zeros(e, dtype=torch.long), ["u"], boot)[0]
    assert 0 < row["accuracy_diff_se"] < own["accuracy_se_bootstrap"]
    (same,) = paired_difference_rows({3: base}, {3: base}, choices, keep, boot)
    assert same["accuracy_diff"] == 0.0 and same["accuracy_diff_se"] == 0.0


def test_bootstrap_needs_two_replicates():
    with pytest.raises(ValueError, match="num_replicates"):
        PoolBootstrap.draw(torch.zeros(2, 2, dtype=torch.long), 1, seed=0)
