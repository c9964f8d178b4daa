"""benchmarks/policy_seeds.py without training: the headline figures from one seed's tables."""

import pandas as pd
import pytest

from tests.benchmarks.scripts import load_benchmark


@pytest.fixture(scope="module")
def seeds():
    return load_benchmark("policy_seeds")


def _tables():
    accuracy = {
        ("nppl_mixed", "helpfulness"): 0.98,
        ("nppl_mixed", "honesty"): 0.99,
        ("btl_helpfulness", "helpfulness"): 0.96,
        ("btl_honesty", "honesty"): 0.99,
        ("btl_mixed", "helpfulness"): 0.86,
        ("btl_mixed", "honesty"): 0.10,
    }
    metrics = pd.DataFrame(
        [
            {"model": m, "objective": o, "num_context": 10, "accuracy": a}
            for (m, o), a in accuracy.items()
        ]
        + [{"model": "nppl_mixed", "objective": "honesty", "num_context": 3, "accuracy": 0.5}]
    )
    gap = pd.DataFrame(
        {
            "objective": ["helpfulness", "honesty"],
            "num_context": [10, 10],
            "gap": [3.5, 4.9],
            "judge_gap": [0.0, 0.2],
        }
    )
    rows = []
    for model, nll, distinct in (("nppl_mixed", 1.6, 0.9), ("btl_mixed", 1.1, 0.97)):
        for user in ("helpfulness", "honesty"):
            rows.append(
                {
                    "model": model,
                    "user": user,
                    "num_context": 10,
                    "objective": "helpfulness",
                    "base_nll": nll + (0.1 if user == "honesty" else 0),
                    "distinct_2": distinct,
                }
            )
    shares = {
        ("calibrated_hedge", "honesty"): 1.0,
        ("uncertainty_admission", "honesty"): 0.25,
        ("calibrated_hedge", "helpfulness"): 0.0,
        ("concrete_steps", "helpfulness"): 0.375,
        ("concrete_steps", "honesty"): 0.0,
    }
    markers = pd.DataFrame(
        [
            {"model": "nppl_mixed", "user": u, "num_context": 10, "marker": m, "share": s}
            for (m, u), s in shares.items()
        ]
        + [  # other models and context sizes are not read
            {"model": "btl_mixed", "user": "honesty", "num_context": 10, "marker": m, "share": 0.9}
            for m in ("calibrated_hedge", "uncertainty_admission")
        ]
        + [{"model": "nppl_mixed", "user": "helpfulness", "num_context": 3,
            "marker": "concrete_steps", "share": 0.9}]
    )  # fmt: skip
    continuum = pd.DataFrame(
        [
            {"model": "nppl_mixed", "score": "judge_honesty - judge_helpfulness", "w": w,
             "value": v, "step_diff": d}
            for w, v, d in ((0.5, 1.5, 0.5), (0.0, 0.75, None), (0.25, 1.0, 0.25), (1.0, 2.0, 0.5))
        ]
        + [  # the reward models' version and the BTL-DPO policies are not read
            {"model": "nppl_mixed", "score": "reward_honesty - reward_helpfulness", "w": 0.0,
             "value": 9.0, "step_diff": -9.0},
            {"model": "btl_mixed", "score": "judge_honesty - judge_helpfulness", "w": 0.0,
             "value": 9.0, "step_diff": -9.0},
        ]
    )  # fmt: skip
    return {
        "dpo_metrics": metrics,
        "steering_gap": gap,
        "generation_rewards": pd.DataFrame(rows),
        "generation_markers": markers,
        "steering_continuum": continuum,
    }


def test_headline_figures_by_hand(seeds):
    out = seeds.headline(_tables(), 10)
    assert out["acc NP-DPO - BTL-DPO(helpfulness), helpfulness users"] == pytest.approx(2.0)
    assert out["acc NP-DPO - BTL-DPO(honesty), honesty users"] == pytest.approx(0.0)
    # pooled over objectives: ((0.98 - 0.86) + (0.99 - 0.10)) / 2
    assert out["acc NP-DPO - BTL-DPO-mixed, pooled"] == pytest.approx(50.5)
    assert out["RM steering gap, honesty"] == 4.9 and out["judge steering gap, honesty"] == 0.2
    assert out["NP-DPO base NLL, honesty users"] == pytest.approx(1.7)
    assert out["BTL-DPO-mixed base NLL"] == pytest.approx(1.1)
    assert out["NP-DPO % uncertainty_admission, honesty users"] == pytest.approx(25.0)
    assert out["NP-DPO % concrete_steps, helpfulness users"] == pytest.approx(37.5)
    assert out["NP-DPO % calibrated_hedge, helpfulness users"] == 0.0
    assert out["continuum judge score, w=0.25"] == 1.0  # rows in increasing w
    assert out["continuum: smallest step in w"] == 0.25
    assert out["continuum: w=1 minus w=0"] == pytest.approx(1.25)
