"""Generated answers side by side: one policy steered by opposite users, and a baseline.

The input is the ``generation_samples`` table: one row per (dataset, prompt,
simulated user, context size, model) with the ``prompt``, the ``response``
and one ``reward_<objective>`` column per objective (the per-objective BTL
reward of that response).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from steerable_alignment.models.config import ConfigError
from steerable_alignment.reporting.html import Panel, SideBySide

REWARD_PREFIX = "reward_"
JUDGE_PREFIX = "judge_"
MARKER_PREFIX = "marker_"
NLL_COLUMN = "base_nll"
SAMPLE_COLUMNS = ("dataset", "prompt_id", "prompt", "user", "num_context", "model", "response")


@dataclass(frozen=True)
class SampleChoice:
    """Which generated answers the report shows (``params:report.samples``).

    Attributes:
        dataset: the data set whose test prompts were answered.
        users: the simulated users (objective names) whose answers sit side by side.
        model: the steered policy (NP-DPO).
        baseline: a context-free policy shown beside them, or None for none.
        num_context: the users' context size; None for the largest generated.
        num_prompts: how many prompts: the first ones by ``prompt_id``, not chosen by outcome.
    """

    dataset: str
    users: tuple[str, ...]
    model: str
    baseline: str | None = None
    num_context: int | None = None
    num_prompts: int = 3

    def validate(self, prefix: str) -> None:
        if len(self.users) < 1 or len(set(self.users)) != len(self.users):
            raise ConfigError(f"Parameter '{prefix}.users': distinct objective names expected")
        if self.num_prompts < 1:
            raise ConfigError(f"Parameter '{prefix}.num_prompts': must be positive")
        if self.num_context is not None and self.num_context < 0:
            raise ConfigError(f"Parameter '{prefix}.num_context': must be >= 0 or null")


def _one_per_prompt(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("prompt_id", kind="stable").drop_duplicates("prompt_id")


def _facts(row: pd.Series, rewards: list[str]) -> tuple[tuple[str, str], ...]:
    """The answer's reward-model and judge scores, its styles and its fluency."""
    facts = [
        (f"reward: {column.removeprefix(REWARD_PREFIX)}", f"{row[column]:.3f}")
        for column in rewards
    ]
    facts += [
        (f"judge: {column.removeprefix(JUDGE_PREFIX)}", f"{row[column]:.2f}")
        for column in sorted(row.index)
        if column.startswith(JUDGE_PREFIX)
    ]
    styles = [
        column.removeprefix(MARKER_PREFIX)
        for column in sorted(row.index)
        if column.startswith(MARKER_PREFIX) and bool(row[column])
    ]
    if any(column.startswith(MARKER_PREFIX) for column in row.index):
        facts.append(("styles", ", ".join(styles) or "none"))
    if NLL_COLUMN in row.index and pd.notna(row[NLL_COLUMN]):
        facts.append(("base-model NLL / token", f"{row[NLL_COLUMN]:.3f}"))
    return tuple(facts)


def sample_blocks(samples: pd.DataFrame, choice: SampleChoice) -> list[SideBySide]:
    """One side-by-side block per prompt: ``choice.model`` for each user, then the baseline.

    Every panel lists the response's reward under each objective; the user's
    own objective is in bold. The baseline is context-free, so its answer is
    taken from the first user's rows at the smallest context size.

    Raises:
        ValueError: a required column is missing.
        ConfigError: the data set, a model, a user or the context size is not in the table.
    """
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"generation_samples lacks column(s) {missing}")
    rewards = sorted(c for c in samples.columns if c.startswith(REWARD_PREFIX))
    rows = samples[samples["dataset"] == choice.dataset]
    if rows.empty:
        raise ConfigError(
            f"Parameter 'report.samples.dataset': no samples for '{choice.dataset}'; "
            f"data sets: {sorted(samples['dataset'].unique())}"
        )
    models = set(rows["model"])
    for name in (choice.model, choice.baseline):
        if name is not None and name not in models:
            raise ConfigError(
                f"Parameter 'report.samples': model '{name}' has no samples on "
                f"'{choice.dataset}'; models: {sorted(models)}"
            )
    steered = rows[rows["model"] == choice.model]
    unknown = sorted(set(choice.users) - set(steered["user"]))
    if unknown:
        raise ConfigError(
            f"Parameter 'report.samples.users': {unknown} not among the users of "
            f"'{choice.model}': {sorted(steered['user'].unique())}"
        )
    size = choice.num_context
    if size is None:
        size = int(steered["num_context"].max())
    elif size not in set(steered["num_context"]):
        raise ConfigError(
            f"Parameter 'report.samples.num_context': {size} not generated; "
            f"sizes: {sorted(int(n) for n in steered['num_context'].unique())}"
        )

    columns = []
    for user in choice.users:
        picked = _one_per_prompt(
            steered[(steered["user"] == user) & (steered["num_context"] == size)]
        )
        heading = f"{choice.model}: {user} user, {size} context pairs"
        columns.append((heading, user, picked.set_index("prompt_id", drop=False)))
    if choice.baseline is not None:
        base = rows[rows["model"] == choice.baseline]
        order = base.assign(_other_user=base["user"] != choice.users[0])
        order = order.sort_values(["_other_user", "num_context"], kind="stable")
        picked = order.drop_duplicates("prompt_id").drop(columns="_other_user")
        heading = f"{choice.baseline} (no context)"
        columns.append((heading, None, picked.set_index("prompt_id", drop=False)))

    shared = set.intersection(*(set(frame.index) for _, _, frame in columns))
    blocks = []
    for prompt_id in sorted(shared)[: choice.num_prompts]:
        panels = []
        for heading, user, frame in columns:
            row = frame.loc[prompt_id]
            own = (f"reward: {user}", f"judge: {user}") if user is not None else ()
            panels.append(Panel(heading, str(row["response"]), _facts(row, rewards), own))
        lead = str(columns[0][2].loc[prompt_id, "prompt"])
        blocks.append(SideBySide(f"Prompt {prompt_id}", lead, tuple(panels)))
    return blocks
