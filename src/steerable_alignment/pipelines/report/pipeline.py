"""``report``: every evaluation table and chart in one HTML page (``evaluation_report``).

One node reads the reporting outputs of the other pipelines and writes
``data/08_reporting/report.html``, a page that opens from disk with no server
(plotly.js inlined once). Its inputs come in groups; Kedro needs every declared
input on disk, so the pipeline declares only the groups in ``groups`` and the
sections of the others say they are not included.

It is part of the default ``kedro run``, after the pipelines it reads; on
its own: ``kedro run --pipeline report``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.report.nodes import build_report
from steerable_alignment.pipelines.variants import MIXED_USER_DATASETS, REWARD_DATASETS

#: Argument name of ``build_report`` -> catalog entry, per input group.
#: ``evaluation`` pipeline: reward-model tables and one chart per data set.
REWARD_INPUTS: dict[str, str] = {
    "reward_metrics": "reward_metrics",
    "reward_comparisons": "reward_comparisons",
    **{f"{d}_accuracy_chart": f"{d}.accuracy_chart" for d in REWARD_DATASETS},
    **{f"{d}_mixed_user_metrics": f"{d}_mixed_user_metrics" for d in MIXED_USER_DATASETS},
    **{f"{d}_mixed_user_chart": f"{d}.mixed_user_chart" for d in MIXED_USER_DATASETS},
}
#: ``dpo`` pipeline: the policies' implicit-reward tables and chart.
DPO_INPUTS: dict[str, str] = {
    "dpo_metrics": "dpo_metrics",
    "dpo_comparisons": "dpo_comparisons",
    "dpo_accuracy_chart": "dpo_accuracy_chart",
}
#: Generation, scoring and the steering gap (issue 8, items 1-3).
GENERATION_INPUTS: dict[str, str] = {
    "generation_win_rates": "generation_win_rates",
    "steering_gap": "steering_gap",
    "steering_gap_chart": "steering_gap_chart",
    "generation_samples": "generation_samples",
    "generation_rewards": "generation_rewards",
    "generation_markers": "generation_markers",
    "steering_continuum": "steering_continuum",
    "steering_continuum_chart": "steering_continuum_chart",
}
#: ``evaluation`` pipeline: active elicitation (issue 15).
ELICITATION_INPUTS: dict[str, str] = {
    "active_elicitation": "active_elicitation",
    "active_versus_random": "active_versus_random",
    "active_elicitation_chart": "active_elicitation_chart",
}
INPUT_GROUPS: dict[str, dict[str, str]] = {
    "reward": REWARD_INPUTS,
    "dpo": DPO_INPUTS,
    "generation": GENERATION_INPUTS,
    "elicitation": ELICITATION_INPUTS,
}
#: The groups of the registered ``report`` pipeline.
DEFAULT_GROUPS: tuple[str, ...] = ("reward", "dpo", "generation", "elicitation")


def create_pipeline(groups: Sequence[str] = DEFAULT_GROUPS, **kwargs) -> Pipeline:
    """The report node reading the catalog entries of ``groups`` (keys of ``INPUT_GROUPS``).

    Raises:
        ValueError: an unknown group.
    """
    unknown = [g for g in groups if g not in INPUT_GROUPS]
    if unknown:
        raise ValueError(f"Unknown report input group(s) {unknown}; known: {list(INPUT_GROUPS)}")
    inputs = {"report": "params:report"}
    for group in groups:
        inputs.update(INPUT_GROUPS[group])
    return Pipeline(
        [node(build_report, inputs=inputs, outputs="evaluation_report", name="build_report")]
    )
