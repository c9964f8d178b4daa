"""Node of the ``report`` pipeline: every evaluation table and chart in one HTML page."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError, check_known_keys, config_from_params
from steerable_alignment.pipelines.variants import MIXED_USER_DATASETS, REWARD_DATASETS
from steerable_alignment.reporting.html import Block, Chart, Section, Table, Text, render_report
from steerable_alignment.reporting.samples import SampleChoice, sample_blocks
from steerable_alignment.reporting.tables import mean_se_by_context

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
TITLE_SYNTHETIC = "Synthetic benchmark"
TITLE_ULTRAFEEDBACK = "UltraFeedback reward models"
TITLE_DPO = "DPO policies"
TITLE_GENERATION = "Generation and steering"
TITLE_ELICITATION = "Active elicitation"
#: The judge markers shown in the report's table (all are in generation_markers).
SHOWN_MARKERS = ("calibrated_hedge", "uncertainty_admission", "concrete_steps", "direct_opening")
INTRO = (
    "Every evaluation table and chart of the project, read from the catalog "
    "(data/08_reporting). ± is a bootstrap standard error that resamples the test pool "
    "(pairs for the synthetic task, prompts for UltraFeedback; docs/evaluation.md); "
    "differences are paired: both models on the same episodes and bootstrap replicates. "
    "Column headers 0, 1, 3, ... are the number of context pairs the user showed. "
    "Rebuild with `kedro run --pipeline report`."
)


@dataclass(frozen=True)
class ReportConfig:
    """``params:report``: the page title and which generated answers to show."""

    title: str
    samples: SampleChoice

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ReportConfig:
        check_known_keys(cls, params, "report")
        if "title" not in params or "samples" not in params:
            raise ConfigError("Parameter 'report': expected the keys 'title' and 'samples'")
        samples = config_from_params(
            SampleChoice, params["samples"], "report.samples", tuple_keys=("users",)
        )
        return cls(title=str(params["title"]), samples=samples)


def _not_wired(what: str, group: str) -> Section:
    """The section of an input group the report pipeline was built without."""
    return Section(
        what,
        (
            Text(
                f"Not in this report: the report pipeline was built without its '{group}' "
                "inputs (INPUT_GROUPS and DEFAULT_GROUPS in pipelines/report/pipeline.py)."
            ),
        ),
    )


def _count_range(table: pd.DataFrame, column: str) -> str:
    low, high = int(table[column].min()), int(table[column].max())
    return f"{low}" if low == high else f"{low}–{high}"


def _accuracy_tables(metrics: pd.DataFrame, index: list[str], what: str) -> list[Block]:
    """Accuracy (%) ± s.e. pooled over users, then per user type."""
    pooled = metrics[metrics["objective"] == "all"]
    per_user = metrics[metrics["objective"] != "all"]
    blocks: list[Block] = []
    if len(pooled):
        blocks.append(
            Table(
                f"{what} (%), all users pooled",
                mean_se_by_context(pooled, index, "accuracy", "accuracy_se_bootstrap"),
                note=f"{_count_range(pooled, 'n_episodes')} episodes per row.",
            )
        )
    if len(per_user):
        blocks.append(
            Table(
                f"{what} (%) by user type",
                mean_se_by_context(
                    per_user,
                    [*index[:-1], "objective", index[-1]],
                    "accuracy",
                    "accuracy_se_bootstrap",
                ),
                note="The objective is the one the episode's user answers by.",
            )
        )
    return blocks


def _comparison_table(
    comparisons: pd.DataFrame | None, index: list[str], prefix: str = ""
) -> list[Block]:
    if comparisons is None or comparisons.empty:
        return []
    return [
        Table(
            f"{prefix}Paired differences, model − baseline (accuracy points)",
            mean_se_by_context(
                comparisons,
                [*index, "model", "baseline", "objective"],
                "accuracy_diff",
                "accuracy_diff_se",
                signed=True,
            ),
            note="Both models on the same episodes; ± is the paired bootstrap s.e.",
        )
    ]


def _raw_tables(title: str, *tables: pd.DataFrame | None) -> list[Block]:
    names = ("metrics", "paired comparisons")
    return [
        Table(f"{title}: all {name}", table, collapsed=True)
        for name, table in zip(names, tables)
        if table is not None and len(table)
    ]


def _rows(table: pd.DataFrame | None, datasets: list[str]) -> pd.DataFrame | None:
    return None if table is None else table[table["dataset"].isin(datasets)]


def _synthetic_section(
    metrics: pd.DataFrame | None, comparisons: pd.DataFrame | None, chart: Any
) -> Section:
    title = TITLE_SYNTHETIC
    metrics, comparisons = _rows(metrics, [SYNTHETIC]), _rows(comparisons, [SYNTHETIC])
    if (metrics is None or metrics.empty) and chart is None:
        return Section(title, (Text("No synthetic rows in the reward tables."),))
    blocks: list[Block] = [
        Text(
            "Two simulated user types on scalar options; bayes_optimal is the exact ceiling "
            "computed on the same episodes (DESIGN.md §4)."
        )
    ]
    if chart is not None:
        blocks.append(Chart("Accuracy vs context size", chart))
    if metrics is not None and len(metrics):
        blocks += _accuracy_tables(metrics, ["model"], "Test accuracy")
    blocks += _comparison_table(comparisons, [])
    blocks += _raw_tables("Synthetic", metrics, comparisons)
    return Section(title, tuple(blocks))


def _ultrafeedback_section(
    metrics: pd.DataFrame | None,
    comparisons: pd.DataFrame | None,
    charts: dict[str, Any],
    mixed: dict[str, tuple[pd.DataFrame | None, Any]] | None = None,
) -> Section:
    title = TITLE_ULTRAFEEDBACK
    datasets = [d for d in REWARD_DATASETS if d != SYNTHETIC]
    metrics, comparisons = _rows(metrics, datasets), _rows(comparisons, datasets)
    present = [
        d
        for d in datasets
        if charts.get(d) is not None or (metrics is not None and (metrics["dataset"] == d).any())
    ]
    if not present:
        return Section(title, (Text(f"No rows for {datasets} in the reward tables."),))
    blocks: list[Block] = [
        Text(
            "Users answer by one objective (HH: helpfulness or honesty; HHT adds truthfulness); "
            "only conflicting pairs are kept. btl_<objective> is trained on that objective's "
            "users only, btl_mixed and nppl_mixed (NP-BTL) on all users."
        )
    ]
    for dataset in present:
        if charts.get(dataset) is not None:
            blocks.append(Chart(f"{dataset}: accuracy vs context size", charts[dataset]))
        if metrics is not None:
            rows = metrics[metrics["dataset"] == dataset]
            if len(rows):
                blocks += _accuracy_tables(rows, ["model"], f"{dataset}: test accuracy")
        if comparisons is not None:
            rows = comparisons[comparisons["dataset"] == dataset]
            blocks += _comparison_table(rows, [], prefix=f"{dataset}: ")
        table, chart = (mixed or {}).get(dataset, (None, None))
        if chart is not None:
            blocks.append(Chart(f"{dataset}: users on a continuum", chart))
        if table is not None and len(table):
            blocks.append(
                Table(
                    f"{dataset}: test accuracy (%) of users on a continuum",
                    mean_se_by_context(
                        table, ["model", "user"], "accuracy", "accuracy_se_bootstrap"
                    ),
                    note="A user of weight w chooses by w·rating of "
                    f"{table['first_objective'].iloc[0]} + (1 − w)·rating of "
                    f"{table['second_objective'].iloc[0]} (ties: a seeded coin, "
                    "unpredictable). The models were trained on pure users only: a "
                    "generalisation test (docs/evaluation.md).",
                )
            )
    blocks += _raw_tables("UltraFeedback", metrics, comparisons)
    return Section(title, tuple(blocks))


def _dpo_section(
    metrics: pd.DataFrame | None, comparisons: pd.DataFrame | None, chart: Any
) -> Section:
    title = TITLE_DPO
    blocks: list[Block] = [
        Text(
            "Implicit-reward accuracy of each policy on held-out preference pairs: "
            "btl_<objective> and btl_mixed are plain DPO with LoRA (BTL-DPO), nppl_mixed is "
            "NP-DPO conditioned on the user's context (docs/dpo.md)."
        )
    ]
    if chart is not None:
        blocks.append(Chart("Implicit-reward accuracy vs context size", chart))
    if metrics is not None and len(metrics):
        blocks += _accuracy_tables(metrics, ["dataset", "model"], "Implicit-reward accuracy")
    blocks += _comparison_table(comparisons, ["dataset"])
    blocks += _raw_tables("DPO", metrics, comparisons)
    return Section(title, tuple(blocks))


def _correlations(gap: pd.DataFrame, column: str) -> str:
    """The per-objective correlations at the largest context size, NaN said in words."""
    values = gap.sort_values("num_context").groupby("objective")[column].last()
    return ", ".join("undefined (no spread)" if pd.isna(v) else f"{v:+.2f}" for v in values)


def _judge_blocks(
    win_rates: pd.DataFrame | None,
    gap: pd.DataFrame | None,
    rewards: pd.DataFrame | None,
    markers: pd.DataFrame | None,
) -> list[Block]:
    """The exact judge's win-rates, steering gaps and markers, and the fluency of the answers."""
    blocks: list[Block] = []
    if gap is not None and len(gap) and gap["judge_gap"].notna().any():
        blocks.append(
            Table(
                "Steering gap by the exact judge (noise-free rating units), by context size",
                mean_se_by_context(
                    gap,
                    ["dataset", "model", "objective", "context_objective"],
                    "judge_gap",
                    "judge_gap_se",
                    scale=1.0,
                    decimals=3,
                    signed=True,
                ),
                note="The generator's own rules read back from each answer "
                "(ultrafeedback/judge.py): no learned model to fool. Per-prompt correlation "
                "of the two directions' gaps at the largest size: reward models "
                + _correlations(gap, "gap_corr")
                + "; judge "
                + _correlations(gap, "judge_gap_corr")
                + ".",
            )
        )
    if win_rates is not None and len(win_rates) and win_rates["judge_win_rate"].notna().any():
        blocks.append(
            Table(
                "Win-rate (%) of the model over the baseline by the exact judge",
                mean_se_by_context(
                    win_rates,
                    ["dataset", "model", "baseline", "objective"],
                    "judge_win_rate",
                    "judge_win_rate_se",
                ),
                note="Ties (equal judge scores, common with rule-based scores) count half.",
            )
        )
    if markers is not None and len(markers):
        shown = markers[markers["marker"].isin(SHOWN_MARKERS)]
        blocks.append(
            Table(
                "Share of answers (%) showing each style, by context size",
                mean_se_by_context(
                    shown, ["dataset", "model", "user", "marker"], "share", "share_se"
                ),
                note="A marker counts when its phrase occurs in the answer "
                "(calibrated_hedge: 'As far as I know, ...'; uncertainty_admission: 'My "
                "knowledge here is limited, ...'; concrete_steps: a step of the prompt's "
                "topic). All markers: generation_markers.",
            )
        )
    if rewards is not None and len(rewards) and rewards["base_nll"].notna().any():
        one = rewards.drop_duplicates(["dataset", "model", "user", "num_context"])
        blocks.append(
            Table(
                "Fluency: NLL per answer token (nats) under the frozen base model",
                mean_se_by_context(
                    one,
                    ["dataset", "model", "user"],
                    "base_nll",
                    "base_nll_se",
                    scale=1.0,
                    decimals=3,
                ),
                note="Lower is more fluent by the base model's standard (adapters and FiLM "
                "off). distinct_2 (share of distinct word bigrams) is in generation_rewards.",
            )
        )
    return blocks


def _continuum_blocks(continuum: pd.DataFrame | None, chart: Any) -> list[Block]:
    blocks: list[Block] = []
    if chart is not None:
        blocks.append(Chart("Users on a continuum", chart))
    if continuum is not None and len(continuum):
        keys = ["dataset", "model", "score"]
        wide = continuum.sort_values("w").groupby(keys, sort=True)
        rows = []
        for labels, group in wide:
            row = dict(zip(keys, labels))
            for _, r in group.iterrows():
                row[r["user"]] = f"{r['value']:+.3f} ± {r['value_se']:.3f}"
            steps = group["step_diff"].dropna()
            row["smallest step"] = f"{steps.min():+.3f}" if len(steps) else "—"
            rows.append(row)
        blocks.append(
            Table(
                "Users on a continuum: score difference of the answers by the user's weight w",
                pd.DataFrame(rows),
                note="A user of weight w chooses by w·rating of the first objective + "
                "(1 − w)·rating of the second, with the same context pairs as the pure "
                "users; ± bootstrap s.e. over prompts. 'smallest step': the smallest paired "
                "difference between neighbouring w. Policies that read no context answer "
                "every w alike.",
            )
        )
    return blocks


def _generation_section(
    win_rates: pd.DataFrame | None,
    gap: pd.DataFrame | None,
    gap_chart: Any,
    samples: pd.DataFrame | None,
    choice: SampleChoice,
    rewards: pd.DataFrame | None = None,
    markers: pd.DataFrame | None = None,
    continuum: pd.DataFrame | None = None,
    continuum_chart: Any = None,
) -> Section:
    title = TITLE_GENERATION
    blocks: list[Block] = [
        Text(
            "Answers generated for test prompts by each policy, for simulated users "
            "(an objective and a context of pairs answered by it), scored by two judges: "
            "the per-objective BTL reward models and the exact judge (the data "
            "generator's own rules), with their fluency under the frozen base model."
        )
    ]
    if win_rates is not None and len(win_rates):
        blocks.append(
            Table(
                "Win-rate (%) of the model over the baseline, by context size",
                mean_se_by_context(
                    win_rates,
                    ["dataset", "model", "baseline", "objective"],
                    "win_rate",
                    "win_rate_se",
                ),
                note=f"Scored by the objective's reward model; "
                f"{_count_range(win_rates, 'n_prompts')} prompts per cell, ± bootstrap s.e. "
                "over prompts.",
            )
        )
    if gap_chart is not None:
        blocks.append(Chart("Steering gap vs context size", gap_chart))
    if gap is not None and len(gap):
        blocks.append(
            Table(
                "Steering gap (reward units), by context size",
                mean_se_by_context(
                    gap,
                    ["dataset", "model", "objective", "context_objective"],
                    "gap",
                    "gap_se",
                    scale=1.0,
                    decimals=3,
                    signed=True,
                ),
                note="Objective-k reward (objective) of answers conditioned on a k-user's "
                "context minus those conditioned on a j-user's (context_objective), same "
                "prompts and seeds. A policy that steers shows it positive both ways; "
                f"{_count_range(gap, 'n_prompts')} prompts per cell, ± bootstrap s.e.",
            )
        )
    blocks += _judge_blocks(win_rates, gap, rewards, markers)
    blocks += _continuum_blocks(continuum, continuum_chart)
    blocks += [
        Table(f"Generation: all {name}", table, collapsed=True)
        for name, table in (
            ("win-rates", win_rates),
            ("steering gaps", gap),
            ("continuum rows", continuum),
        )
        if table is not None and len(table)
    ]
    if samples is not None and len(samples):
        found = sample_blocks(samples, choice)
        users = " and ".join(choice.users)
        blocks.append(
            Text(
                f"Generated answers for {users} users side by side "
                f"({choice.dataset}, the first {choice.num_prompts} test prompts by id, not "
                "selected by outcome). The reward of the user's own objective is in bold.",
                title="Samples",
            )
        )
        blocks += found or [Text("No prompt has an answer from every policy shown.")]
    return Section(title, tuple(blocks))


def _elicitation_section(
    active: pd.DataFrame | None, versus: pd.DataFrame | None, chart: Any
) -> Section:
    """Accuracy after each asked pair per strategy, and asking well vs asking more."""
    title = TITLE_ELICITATION
    blocks: list[Block] = [
        Text(
            "Simulated new users are asked pairs one at a time from a pool of test pairs "
            "(never the prompts of their scored targets); after each answer the NP-BTL model, "
            "conditioned on the answers so far, predicts the users' held-out targets. "
            "Strategies: random; uncertainty (predicted choice closest to ½); information "
            "(expected information gain about the user latent; latent models); population "
            "(expected information about which of a bank of training users the user is; any "
            "NP-BTL model). On the "
            "synthetic task bayes_optimal · information is the Bayes-optimal active policy. "
            "Column headers are the number of pairs asked. `python -m steerable_alignment.steer "
            "--suggest K --pool FILE` asks a real user the same way (docs/steer.md)."
        )
    ]
    if active is None or active.empty:
        return Section(title, (*blocks, Text("No active-elicitation rows.")))
    table = active.rename(columns={"num_asked": "num_context"})
    pooled = table[table["objective"] == "all"]
    blocks.append(
        Table(
            "Held-out accuracy (%) after each asked pair, all users pooled",
            mean_se_by_context(
                pooled, ["dataset", "model", "strategy"], "accuracy", "accuracy_se_bootstrap"
            ),
            note=f"{_count_range(pooled, 'n_users')} users per row; ± resamples the targets' "
            "pairs (synthetic) or prompts (UltraFeedback).",
        )
    )
    paired = pooled.dropna(subset=["accuracy_diff_vs_random"])
    if len(paired):
        blocks.append(
            Table(
                "Paired difference vs random pairs, same model (accuracy points)",
                mean_se_by_context(
                    paired,
                    ["dataset", "model", "strategy"],
                    "accuracy_diff_vs_random",
                    "accuracy_diff_vs_random_se",
                    signed=True,
                ),
                note="Same users, pools and targets for both strategies; paired bootstrap s.e.",
            )
        )
    if chart is not None:
        blocks.append(Chart("Accuracy after each asked pair", chart))
    if versus is not None and len(versus):
        shown = versus.copy()
        for column in ("accuracy", "accuracy_random"):
            shown[column] = (100 * shown[column]).map(lambda v: f"{v:.1f}")
        shown["asked minus random (points)"] = [
            f"{100 * d:+.1f} ± {100 * e:.1f}"
            for d, e in zip(versus["accuracy_diff"], versus["accuracy_diff_se"], strict=True)
        ]
        columns = ["dataset", "model", "strategy", "objective", "num_asked", "num_random"]
        blocks.append(
            Table(
                "Asking well vs asking more: n asked pairs minus m random pairs",
                shown[[*columns, "accuracy", "accuracy_random", "asked minus random (points)"]],
                note="accuracy (%) after num_asked pairs chosen by the strategy and after "
                "num_random random pairs, same model, users and targets; paired bootstrap s.e.",
            )
        )
    blocks += [Table("Active elicitation: all rows", active, collapsed=True)]
    return Section(title, tuple(blocks))


#: Argument names of each input group (pipelines/report/pipeline.py wires them).
GROUP_KEYS = {
    "reward": ("reward_metrics", "reward_comparisons")
    + tuple(f"{d}_accuracy_chart" for d in REWARD_DATASETS)
    + tuple(f"{d}_mixed_user_{kind}" for d in MIXED_USER_DATASETS for kind in ("metrics", "chart")),
    "dpo": ("dpo_metrics", "dpo_comparisons", "dpo_accuracy_chart"),
    "generation": (
        "generation_win_rates",
        "steering_gap",
        "steering_gap_chart",
        "generation_samples",
        "generation_rewards",
        "generation_markers",
        "steering_continuum",
        "steering_continuum_chart",
    ),
    "elicitation": ("active_elicitation", "active_versus_random", "active_elicitation_chart"),
}
SECTION_TITLES = {
    "reward": (TITLE_SYNTHETIC, TITLE_ULTRAFEEDBACK),
    "dpo": (TITLE_DPO,),
    "generation": (TITLE_GENERATION,),
    "elicitation": (TITLE_ELICITATION,),
}


def build_report(report: dict[str, Any], **artefacts: Any) -> str:
    """The evaluation report, one self-contained HTML page.

    Args:
        report: ``params:report`` (title; ``samples``: which generated answers to show).
        **artefacts: argument name -> loaded catalog entry, as wired by
            ``pipelines/report/pipeline.py`` (``GROUP_KEYS`` names them). The sections of
            a group left out of the pipeline say so instead of showing results.

    Returns:
        The HTML document.

    Raises:
        ValueError: an argument no section reads (a wiring mistake).
    """
    config = ReportConfig.from_params(report)
    known = {key for keys in GROUP_KEYS.values() for key in keys}
    unknown = sorted(set(artefacts) - known)
    if unknown:
        raise ValueError(
            f"build_report does not know the input(s) {unknown}; known: {sorted(known)}"
        )
    get = artefacts.get
    sections: list[Section] = []
    for group, keys in GROUP_KEYS.items():
        if not any(key in artefacts for key in keys):
            logger.info("Report: no '%s' inputs wired; its sections say so", group)
            sections += [_not_wired(title, group) for title in SECTION_TITLES[group]]
        elif group == "reward":
            charts = {d: get(f"{d}_accuracy_chart") for d in REWARD_DATASETS}
            metrics, comparisons = get("reward_metrics"), get("reward_comparisons")
            sections.append(_synthetic_section(metrics, comparisons, charts[SYNTHETIC]))
            mixed = {
                d: (get(f"{d}_mixed_user_metrics"), get(f"{d}_mixed_user_chart"))
                for d in MIXED_USER_DATASETS
            }
            sections.append(_ultrafeedback_section(metrics, comparisons, charts, mixed))
        elif group == "dpo":
            sections.append(
                _dpo_section(get("dpo_metrics"), get("dpo_comparisons"), get("dpo_accuracy_chart"))
            )
        elif group == "elicitation":
            sections.append(
                _elicitation_section(
                    get("active_elicitation"),
                    get("active_versus_random"),
                    get("active_elicitation_chart"),
                )
            )
        else:
            sections.append(
                _generation_section(
                    get("generation_win_rates"),
                    get("steering_gap"),
                    get("steering_gap_chart"),
                    get("generation_samples"),
                    config.samples,
                    get("generation_rewards"),
                    get("generation_markers"),
                    get("steering_continuum"),
                    get("steering_continuum_chart"),
                )
            )
    return render_report(config.title, sections, intro=INTRO)
