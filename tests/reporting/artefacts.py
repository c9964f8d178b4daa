"""Hand-made report inputs: small tables in the catalog's shapes and tiny plotly figures."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerable_alignment.evaluation.generation import (
    CONTINUUM_COLUMNS,
    GAP_COLUMNS,
    MARKER_COLUMNS,
    REWARD_COLUMNS,
    WIN_RATE_COLUMNS,
)
from steerable_alignment.pipelines.evaluation.elicitation_nodes import (
    ACTIVE_COLUMNS,
    VERSUS_COLUMNS,
)
from steerable_alignment.pipelines.evaluation.mixed_user_nodes import MIXED_USER_COLUMNS
from steerable_alignment.pipelines.evaluation.nodes import COMPARISON_COLUMNS, METRIC_COLUMNS

SIZES = (0, 3, 10)
#: A response that would break the page if it were not escaped.
HOSTILE = '</div><script>alert("x")</script> & <b>bold</b> — é'


def metrics(dataset: str, models: tuple[str, ...], objectives: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for i, model in enumerate(models):
        for objective in ("all", *objectives):
            for n in SIZES:
                accuracy = 0.6 + 0.01 * i + 0.02 * SIZES.index(n)
                rows.append(
                    (dataset, model, objective, n, accuracy, 0.01, 0.005, 0.6, 0.02, 0.01, 0.03)
                    + (400 if objective == "all" else 200, 50)
                )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def comparisons(dataset: str, model: str, baseline: str) -> pd.DataFrame:
    rows = [(dataset, model, baseline, "all", n, 0.01 * n, 0.005, -0.01, 0.004, 400) for n in SIZES]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def line_chart(title: str, panels: int = 1) -> go.Figure:
    fig = make_subplots(rows=1, cols=panels)
    for col in range(1, panels + 1):
        fig.add_trace(go.Scatter(x=list(SIZES), y=[70, 80, 90], name=title), row=1, col=col)
    fig.update_layout(title=title)
    return fig


def generation_samples() -> pd.DataFrame:
    rows = []
    for prompt_id in (7, 3, 5):
        for user in ("helpfulness", "honesty"):
            for n in (0, 10):
                for model in ("nppl_mixed", "btl_mixed"):
                    response = f"{model} answers {user} at {n} for prompt {prompt_id}"
                    if (prompt_id, user, n, model) == (3, "honesty", 10, "nppl_mixed"):
                        response = HOSTILE
                    rows.append(
                        {
                            "dataset": "hh",
                            "prompt_id": prompt_id,
                            "prompt": f"Question {prompt_id}?",
                            "user": user,
                            "num_context": n,
                            "model": model,
                            "response": response,
                            "reward_helpfulness": 0.1 * prompt_id,
                            "reward_honesty": -0.25,
                            "base_nll": 1.5 + 0.1 * n,
                            "judge_helpfulness": 2.0 + 0.1 * prompt_id,
                            "judge_honesty": 3.0,
                            "marker_calibrated_hedge": user == "honesty" and n > 0,
                            "marker_concrete_steps": user == "helpfulness",
                        }
                    )
    return pd.DataFrame(rows)


def generation_tables() -> dict[str, Any]:
    win_rates = pd.DataFrame(
        [
            ("hh", "nppl_mixed", "btl_mixed", objective, n, 0.55 + 0.01 * n, 0.03, 0.1, 0.05)
            + (0.6 + 0.01 * n, 0.04, 0.2, 0.06, 3)
            for objective in ("helpfulness", "honesty")
            for n in SIZES
        ],
        columns=WIN_RATE_COLUMNS,
    )
    gap = pd.DataFrame(
        [
            ("hh", "nppl_mixed", k, j, n, 0.01 * n - 0.02, 0.015, 0.9, 0.1 * n, 0.05, -0.2, 3)
            for k, j in (("helpfulness", "honesty"), ("honesty", "helpfulness"))
            for n in SIZES
        ],
        columns=GAP_COLUMNS,
    )
    rewards = pd.DataFrame(
        [
            ("hh", model, user, n, objective, 0.1, 0.02, 2.5, 0.1, 0.97, 0.01, 1.8, 0.05, 3)
            for model in ("nppl_mixed", "btl_mixed")
            for user in ("helpfulness", "honesty")
            for n in SIZES
            for objective in ("helpfulness", "honesty")
        ],
        columns=REWARD_COLUMNS,
    )
    markers = pd.DataFrame(
        [
            ("hh", "nppl_mixed", user, n, marker, 0.1 * SIZES.index(n), 0.05, 3)
            for user in ("helpfulness", "honesty")
            for n in SIZES
            for marker in ("calibrated_hedge", "concrete_steps", "wrong_fact")
        ],
        columns=MARKER_COLUMNS,
    )
    continuum = pd.DataFrame(
        [
            ("hh", model, w, f"w={w:g}", 10, "judge_honesty - judge_helpfulness")
            + ((w if model == "nppl_mixed" else 0.3), 0.1)
            + ((float("nan"), float("nan")) if w == 0 else (0.25 * (model == "nppl_mixed"), 0.05))
            + (3,)
            for model in ("nppl_mixed", "btl_mixed")
            for w in (0.0, 0.25, 0.5, 0.75, 1.0)
        ],
        columns=CONTINUUM_COLUMNS,
    )
    return {
        "generation_win_rates": win_rates,
        "steering_gap": gap,
        "steering_gap_chart": line_chart("steering gap", panels=2),
        "generation_samples": generation_samples(),
        "generation_rewards": rewards,
        "generation_markers": markers,
        "steering_continuum": continuum,
        "steering_continuum_chart": line_chart("continuum"),
    }


def mixed_user_metrics() -> pd.DataFrame:
    rows = [
        ("hh", model, f"w={w:g}", w, "honesty", "helpfulness", n, 0.7 + 0.01 * n, 0.02, 0.01)
        + (0.6, 0.02, 0.01, 0.03, 0.4 if w == 0.5 else 0.0, 200, 50)
        for model in ("btl_mixed", "nppl_mixed")
        for w in (0.0, 0.5, 1.0)
        for n in SIZES
    ]
    return pd.DataFrame(rows, columns=MIXED_USER_COLUMNS)


def active_elicitation() -> tuple[pd.DataFrame, pd.DataFrame]:
    """An ``active_elicitation`` table (random and uncertainty) and its ``versus_random`` rows."""
    rows = []
    for strategy, gain in (("random", 0.0), ("uncertainty", 0.04)):
        for objective in ("all", "helpfulness"):
            for n in (0, 1, 2, 5):
                accuracy = 0.5 + 0.08 * min(n, 1) + 0.01 * n + gain * (n > 0)
                diff = (
                    (float("nan"), float("nan")) if strategy == "random" else (gain * (n > 0), 0.01)
                )
                rows.append(
                    ("hh", "nppl_mixed", strategy, objective, n, accuracy, 0.02, 0.6, 0.03, *diff)
                    + (200 if objective == "all" else 100, 60)
                )
    versus = [
        ("hh", "nppl_mixed", "uncertainty", objective, 2, 5, 0.64, 0.63, 0.012, 0.004, users)
        for objective, users in (("all", 200), ("helpfulness", 100))
    ]
    return pd.DataFrame(rows, columns=ACTIVE_COLUMNS), pd.DataFrame(versus, columns=VERSUS_COLUMNS)


def report_inputs() -> dict[str, Any]:
    """Every ``build_report`` argument but ``report``, keyed by argument name."""
    reward_metrics = pd.concat(
        [
            metrics("synthetic", ("bayes_optimal", "btl", "nppl"), ("user_0", "user_1")),
            metrics("hh", ("btl_mixed", "nppl_mixed"), ("helpfulness", "honesty")),
            metrics("hht", ("btl_mixed", "nppl_mixed"), ("helpfulness", "honesty", "truthfulness")),
        ],
        ignore_index=True,
    )
    reward_comparisons = pd.concat(
        [comparisons("synthetic", "nppl", "btl"), comparisons("hh", "nppl_mixed", "btl_mixed")],
        ignore_index=True,
    )
    return {
        "reward_metrics": reward_metrics,
        "reward_comparisons": reward_comparisons,
        "synthetic_accuracy_chart": line_chart("synthetic accuracy", panels=3),
        "hh_accuracy_chart": line_chart("hh accuracy", panels=3),
        "hht_accuracy_chart": line_chart("hht accuracy", panels=4).to_dict(),
        "hh_mixed_user_metrics": mixed_user_metrics(),
        "hh_mixed_user_chart": line_chart("mixed users", panels=2),
        "dpo_metrics": metrics("hh", ("btl_mixed", "nppl_mixed"), ("helpfulness", "honesty")),
        "dpo_comparisons": comparisons("hh", "nppl_mixed", "btl_mixed"),
        "dpo_accuracy_chart": line_chart("dpo accuracy"),
        **generation_tables(),
        "active_elicitation": active_elicitation()[0],
        "active_versus_random": active_elicitation()[1],
        "active_elicitation_chart": line_chart("active elicitation", panels=1),
    }


def report_params() -> dict[str, Any]:
    return {
        "title": "Test <report>",
        "samples": {
            "dataset": "hh",
            "users": ["helpfulness", "honesty"],
            "model": "nppl_mixed",
            "baseline": "btl_mixed",
            "num_context": None,
            "num_prompts": 2,
        },
    }
