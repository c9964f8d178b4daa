"""Steering in use: generate for simulated users, score, win-rates and the steering gap.

A *simulated user* of objective ``k`` with ``c`` context pairs is a list of
``c`` test pairs answered by objective ``k``'s choices. Every policy answers
the same test prompts with the same sampling seeds: a batch of prompts is
always generated from the same seed, whoever the policy and whatever the
context (common random numbers), so differences between policies and
between users are paired by prompt. NP-DPO is conditioned on the user's
latent; BTL-DPO reads no context and answers each prompt once.

The generated (prompt, response) texts are embedded by the ``embedding``
pipeline's model and scored by each objective's BTL reward model. Two
summaries, each with a bootstrap standard error over prompts (the test pool;
:class:`~steerable_alignment.evaluation.metrics.PoolBootstrap`):

- **win-rate** of a policy over a baseline for users of objective ``k``:
  the share of prompts where the policy's answer has the higher
  objective-``k`` reward (ties count half);
- **steering gap** ``(k, j)``: the objective-``k`` reward of answers
  conditioned on a ``k``-context minus that of answers conditioned on a
  ``j``-context, same prompts, same context pairs (only the choices differ)
  and same seeds. A policy that steers has it positive in both directions.

Framework-free (no Kedro); transformers is used through the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from steerable_alignment.evaluation.metrics import PoolBootstrap
from steerable_alignment.models.config import ConfigError, config_from_params

logger = logging.getLogger(__name__)

#: Column prefix of the per-objective rewards in the scores table.
REWARD_PREFIX = "reward_"
WIN_RATE_COLUMNS = [
    "dataset",
    "model",
    "baseline",
    "objective",
    "num_context",
    "win_rate",
    "win_rate_se",
    "reward_diff",
    "reward_diff_se",
    "n_prompts",
]
GAP_COLUMNS = [
    "dataset",
    "model",
    "objective",
    "context_objective",
    "num_context",
    "gap",
    "gap_se",
    "n_prompts",
]
REWARD_COLUMNS = [
    "dataset",
    "model",
    "user",
    "num_context",
    "objective",
    "reward",
    "reward_se",
    "distinct_2",
    "distinct_2_se",
]
#: Per-answer fluency proxy of the scores table (:func:`distinct_bigram_share`).
DISTINCT_COLUMN = "distinct_2"


def distinct_bigram_share(text: str) -> float:
    """Distinct word bigrams / word bigrams of an answer: 1.0 when nothing repeats.

    A cheap check that a reward gain is not bought with degenerate, looping
    text (which some reward models score well). Answers of fewer than two
    words count as 1.0.
    """
    words = text.split()
    bigrams = list(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


@dataclass(frozen=True)
class SamplingConfig:
    """How answers are sampled (``params:generation.<dataset>.sampling``).

    Attributes:
        max_new_tokens: new tokens per answer at most.
        temperature: softmax temperature; 0 is greedy decoding.
        top_p: nucleus sampling mass (1.0: off).
        batch_size: prompts per ``generate()`` call.
        seed: seeds every batch (batch ``b`` uses ``seed`` and its first prompt's index).
    """

    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 16
    seed: int = 0

    @classmethod
    def from_params(cls, params: Any, prefix: str = "sampling") -> SamplingConfig:
        config = config_from_params(cls, params, prefix)
        config.validate(prefix)
        return config

    def validate(self, prefix: str = "sampling") -> None:
        def fail(key: str, expected: str) -> ConfigError:
            return ConfigError(
                f"Parameter '{prefix}.{key}': expected {expected}, got {getattr(self, key)!r}"
            )

        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise fail("max_new_tokens", "a positive integer")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise fail("batch_size", "a positive integer")
        if not isinstance(self.seed, int):
            raise fail("seed", "an integer")
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise fail("temperature", "a number >= 0")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise fail("top_p", "a number in (0, 1]")

    def generate_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        """Keyword arguments of ``generate()``."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(self.temperature), top_p=self.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs


def prompt_batch(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts rendered as in training (chat template + generation prompt).

    Returns:
        (B, L) input ids and (B, L) attention mask.
    """
    from steerable_alignment.policy_data.tokenise import render_prompt

    rows = [
        tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        for p in prompts
    ]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def generate_answers(
    policy: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    sampling: SamplingConfig,
    z: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    desc: str = "generate",
    progress: bool = True,
) -> tuple[list[str], torch.Tensor]:
    """Answer ``prompts`` with ``policy`` in batches, each batch from its own fixed seed.

    Batch ``b`` (prompts ``b·batch_size …``) always samples from the seed
    ``(sampling.seed, b)``, so two calls with the same prompts get the same
    random numbers (the caller's RNG state is left as it was).

    Args:
        policy: a :class:`~steerable_alignment.policy.model.PolicyModel`.
        tokenizer: its tokenizer.
        prompts: P prompt texts.
        sampling: the sampling settings.
        z: (P, Z) one latent per prompt (NP-DPO), else None.
        device: where the policy is.
        desc: the progress bar's label.
        progress: show a progress bar.

    Returns:
        P answers (special tokens removed, stripped) and (P,) long number of
        generated tokens (up to and including the end-of-turn token).
    """
    answers: list[str] = []
    lengths: list[int] = []
    kwargs = sampling.generate_kwargs(tokenizer)
    eos = tokenizer.eos_token_id
    starts = range(0, len(prompts), sampling.batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=not progress):
        chunk = list(prompts[start : start + sampling.batch_size])
        input_ids, attention_mask = prompt_batch(tokenizer, chunk)
        z_chunk = None if z is None else z[start : start + len(chunk)].to(device)  # (b, Z)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sampling.seed * 1_000_003 + start)
            out = policy.generate(
                input_ids.to(device), attention_mask.to(device), z=z_chunk, **kwargs
            )  # (b, L + new)
        new = out[:, input_ids.shape[1] :].cpu()  # (b, new)
        for row in new:
            stop = (row == eos).nonzero()
            length = int(stop[0]) + 1 if len(stop) else int((row != kwargs["pad_token_id"]).sum())
            lengths.append(length)
            answers.append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
    return answers, torch.tensor(lengths, dtype=torch.long)


def _per_prompt(scores: pd.DataFrame, keys: dict[str, Any], column: str) -> pd.Series:
    rows = scores
    for key, value in keys.items():
        rows = rows[rows[key] == value]
    return rows.set_index("prompt_id")[column].sort_index()


def _paired_diff(
    scores: pd.DataFrame, first: dict[str, Any], second: dict[str, Any], column: str
) -> torch.Tensor:
    """(P,) ``column`` of the rows matching ``first`` minus those matching ``second``, on the
    prompts both have (sorted by prompt)."""
    a = _per_prompt(scores, first, column)
    b = _per_prompt(scores, second, column)
    shared = a.index.intersection(b.index)
    return torch.tensor((a[shared] - b[shared]).to_numpy(), dtype=torch.float64)


def _bootstrap_se(per_prompt: torch.Tensor, replicates: int, seed: int) -> float:
    """Bootstrap s.e. of the mean over prompts (each prompt one cluster)."""
    clusters = torch.arange(len(per_prompt)).unsqueeze(1)  # (P, 1)
    bootstrap = PoolBootstrap.draw(clusters, replicates, seed)
    return bootstrap.se(per_prompt.double().unsqueeze(1), torch.ones(len(per_prompt), dtype=bool))


def win_rate_rows(
    scores: pd.DataFrame,
    model: str,
    baseline: str,
    objectives: Sequence[str],
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Win-rate (and mean reward difference) of ``model`` over ``baseline`` per user and size.

    For users of objective ``k`` at context size ``c``, each prompt compares
    the two policies' answers by their objective-``k`` reward (a win is 1, a
    tie ½). The same bootstrap draws of prompts serve every row.

    Args:
        scores: one row per (model, prompt_id, user, num_context) with
            ``reward_<objective>`` columns (:func:`score_table`).
    """
    rows = []
    for k in objectives:
        column = f"{REWARD_PREFIX}{k}"
        for c in sorted(scores.loc[scores["model"] == model, "num_context"].unique()):
            user = {"user": k, "num_context": c}
            diff = _paired_diff(
                scores, {"model": model, **user}, {"model": baseline, **user}, column
            )
            if len(diff) == 0:
                continue
            wins = (diff > 0).double() + 0.5 * (diff == 0).double()  # (P,)
            rows.append(
                {
                    "model": model,
                    "baseline": baseline,
                    "objective": k,
                    "num_context": int(c),
                    "win_rate": float(wins.mean()),
                    "win_rate_se": _bootstrap_se(wins, replicates, seed),
                    "reward_diff": float(diff.mean()),
                    "reward_diff_se": _bootstrap_se(diff, replicates, seed),
                    "n_prompts": len(diff),
                }
            )
    return rows


def steering_gap_rows(
    scores: pd.DataFrame,
    model: str,
    objectives: Sequence[str],
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """The steering gap of ``model`` for every ordered pair of objectives and context size.

    ``gap(k, j, c)`` = mean over prompts of the objective-``k`` reward of the
    answer to a ``k``-user minus that of the answer to a ``j``-user, both
    with ``c`` context pairs (the same pairs; only the choices differ).
    """
    rows = []
    sizes = sorted(scores.loc[scores["model"] == model, "num_context"].unique())
    for k in objectives:
        column = f"{REWARD_PREFIX}{k}"
        for j in objectives:
            if j == k:
                continue
            for c in sizes:
                policy = {"model": model, "num_context": c}
                diff = _paired_diff(scores, {**policy, "user": k}, {**policy, "user": j}, column)
                if len(diff) == 0:
                    continue
                rows.append(
                    {
                        "model": model,
                        "objective": k,
                        "context_objective": j,
                        "num_context": int(c),
                        "gap": float(diff.mean()),
                        "gap_se": _bootstrap_se(diff, replicates, seed),
                        "n_prompts": len(diff),
                    }
                )
    return rows


def mean_reward_rows(
    scores: pd.DataFrame, objectives: Sequence[str], replicates: int, seed: int
) -> list[dict[str, Any]]:
    """Mean objective reward of every (model, user, context size), with its bootstrap s.e.

    Each row also holds the group's mean :data:`DISTINCT_COLUMN` (share of
    distinct word bigrams, a fluency proxy) and its s.e. when the scores
    have that column (NaN otherwise); it is the same for every objective.
    """
    rows = []
    groups = scores.groupby(["model", "user", "num_context"], sort=True)
    for (model, user, c), group in groups:
        group = group.sort_values("prompt_id")
        distinct, distinct_se = float("nan"), float("nan")
        if DISTINCT_COLUMN in group:
            shares = torch.tensor(group[DISTINCT_COLUMN].to_numpy(), dtype=torch.float64)
            distinct, distinct_se = float(shares.mean()), _bootstrap_se(shares, replicates, seed)
        for k in objectives:
            values = torch.tensor(group[f"{REWARD_PREFIX}{k}"].to_numpy())
            rows.append(
                {
                    "model": model,
                    "user": user,
                    "num_context": int(c),
                    "objective": k,
                    "reward": float(values.mean()),
                    "reward_se": _bootstrap_se(values, replicates, seed),
                    DISTINCT_COLUMN: distinct,
                    f"{DISTINCT_COLUMN}_se": distinct_se,
                }
            )
    return rows
