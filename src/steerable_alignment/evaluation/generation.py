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

import dataclasses
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
#: Column prefix of the exact judge's per-objective scores (``ultrafeedback/judge.py``).
JUDGE_PREFIX = "judge_"
#: Column prefix of the judge's markers (bool per answer; a share per group).
MARKER_PREFIX = "marker_"
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
    "judge_win_rate",
    "judge_win_rate_se",
    "judge_diff",
    "judge_diff_se",
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
    "gap_corr",
    "judge_gap",
    "judge_gap_se",
    "judge_gap_corr",
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
    "judge",
    "judge_se",
    "distinct_2",
    "distinct_2_se",
    "base_nll",
    "base_nll_se",
    "n_prompts",
]
MARKER_COLUMNS = [
    "dataset",
    "model",
    "user",
    "num_context",
    "marker",
    "share",
    "share_se",
    "n_prompts",
]
#: Per-answer fluency proxy of the scores table (:func:`distinct_bigram_share`).
DISTINCT_COLUMN = "distinct_2"
#: Per-answer fluency: mean NLL per answer token under the frozen base model (:func:`answer_nll`).
NLL_COLUMN = "base_nll"


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
        top_k: sample among the ``top_k`` likeliest tokens (0: off). 50 is
            what transformers applies when neither the call nor the model's
            ``generation_config`` sets it.
        repetition_penalty: divides the logits of tokens already in the
            sequence (1.0: off).
        batch_size: prompts per ``generate()`` call.
        seed: seeds every batch (batch ``b`` uses ``seed`` and its first prompt's index).

    Every sampling parameter is passed to ``generate()`` explicitly, so a
    model's own ``generation_config.json`` (Qwen2.5-Instruct's sets
    ``top_k: 20`` and ``repetition_penalty: 1.05``) never changes the answers
    silently.
    """

    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
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
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise fail("top_k", "an integer >= 0 (0: off)")
        if (
            isinstance(self.repetition_penalty, bool)
            or not isinstance(self.repetition_penalty, int | float)
            or self.repetition_penalty <= 0
        ):
            raise fail("repetition_penalty", "a number > 0 (1.0: off)")

    def generate_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        """Keyword arguments of ``generate()``."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "repetition_penalty": float(self.repetition_penalty),
        }
        if self.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=float(self.temperature),
                top_p=float(self.top_p),
                top_k=int(self.top_k),
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs


def prompt_batch(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts rendered as in training (chat template + generation prompt).

    Returns:
        (B, L) input ids and (B, L) attention mask.
    """
    from steerable_alignment.policy.tokenise import render_prompt

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


def _nan() -> float:
    return float("nan")


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two (P,) tensors; NaN when either is constant or P < 3."""
    if len(a) < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return _nan()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def win_rate_rows(
    scores: pd.DataFrame,
    model: str,
    baseline: str,
    objectives: Sequence[str],
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Win-rate (and mean score difference) of ``model`` over ``baseline`` per user and size.

    For users of objective ``k`` at context size ``c``, each prompt compares
    the two policies' answers by their objective-``k`` reward (a win is 1, a
    tie ½); the ``judge_*`` columns do the same with the exact judge's
    objective-``k`` score when the scores have ``judge_<k>`` (NaN otherwise).
    The same bootstrap draws of prompts serve every row.

    Args:
        scores: one row per (model, prompt_id, user, num_context) with
            ``reward_<objective>`` (and optionally ``judge_<objective>``) columns.
    """
    rows = []
    for k in objectives:
        for c in sorted(scores.loc[scores["model"] == model, "num_context"].unique()):
            user = {"user": k, "num_context": c}
            diff = _paired_diff(
                scores, {"model": model, **user}, {"model": baseline, **user}, f"{REWARD_PREFIX}{k}"
            )
            if len(diff) == 0:
                continue
            row = {
                "model": model,
                "baseline": baseline,
                "objective": k,
                "num_context": int(c),
                **_win_rate(diff, "", replicates, seed),
                "n_prompts": len(diff),
            }
            if f"{JUDGE_PREFIX}{k}" in scores:
                judged = _paired_diff(
                    scores,
                    {"model": model, **user},
                    {"model": baseline, **user},
                    f"{JUDGE_PREFIX}{k}",
                )
                row.update(_win_rate(judged, "judge_", replicates, seed))
            rows.append(row)
    return rows


def _win_rate(diff: torch.Tensor, prefix: str, replicates: int, seed: int) -> dict[str, float]:
    """Win-rate and mean difference of (P,) per-prompt differences, with bootstrap s.e."""
    wins = (diff > 0).double() + 0.5 * (diff == 0).double()  # (P,)
    name = f"{prefix}diff" if prefix else "reward_diff"
    return {
        f"{prefix}win_rate": float(wins.mean()),
        f"{prefix}win_rate_se": _bootstrap_se(wins, replicates, seed),
        name: float(diff.mean()),
        f"{name}_se": _bootstrap_se(diff, replicates, seed),
    }


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
    with ``c`` context pairs (the same pairs; only the choices differ);
    ``judge_gap`` is the same with the exact judge's score. ``gap_corr`` is
    the per-prompt correlation of this direction's gap with the reverse
    direction's (``gap(j, k, c)``): two directions measured by mirror-image
    judges are strongly correlated and are not independent evidence.
    """

    def per_prompt(prefix: str, k: str, j: str, c: Any) -> torch.Tensor | None:
        column = f"{prefix}{k}"
        if column not in scores:
            return None
        policy = {"model": model, "num_context": c}
        return _paired_diff(scores, {**policy, "user": k}, {**policy, "user": j}, column)

    rows = []
    sizes = sorted(scores.loc[scores["model"] == model, "num_context"].unique())
    for k in objectives:
        for j in objectives:
            if j == k:
                continue
            for c in sizes:
                diff = per_prompt(REWARD_PREFIX, k, j, c)
                if diff is None or len(diff) == 0:
                    continue
                row: dict[str, Any] = {
                    "model": model,
                    "objective": k,
                    "context_objective": j,
                    "num_context": int(c),
                    "gap": float(diff.mean()),
                    "gap_se": _bootstrap_se(diff, replicates, seed),
                    "gap_corr": _corr(diff, per_prompt(REWARD_PREFIX, j, k, c)),
                    "n_prompts": len(diff),
                }
                judged = per_prompt(JUDGE_PREFIX, k, j, c)
                reverse = per_prompt(JUDGE_PREFIX, j, k, c)
                row.update(
                    judge_gap=_nan() if judged is None else float(judged.mean()),
                    judge_gap_se=(
                        _nan() if judged is None else _bootstrap_se(judged, replicates, seed)
                    ),
                    judge_gap_corr=_nan() if judged is None else _corr(judged, reverse),
                )
                rows.append(row)
    return rows


def _mean_se(group: pd.DataFrame, column: str, replicates: int, seed: int) -> tuple[float, float]:
    """Mean of ``column`` over a group's prompts and its bootstrap s.e. (NaN if absent)."""
    if column not in group:
        return _nan(), _nan()
    values = torch.tensor(group[column].to_numpy(dtype="float64"))
    known = ~values.isnan()
    if not bool(known.any()):
        return _nan(), _nan()
    values = values[known]
    return float(values.mean()), _bootstrap_se(values, replicates, seed)


def mean_reward_rows(
    scores: pd.DataFrame, objectives: Sequence[str], replicates: int, seed: int
) -> list[dict[str, Any]]:
    """Mean reward and judge score of every (model, user, context size), with bootstrap s.e.

    Each row also holds the group's mean fluency — :data:`DISTINCT_COLUMN`
    (share of distinct word bigrams) and :data:`NLL_COLUMN` (NLL per token
    under the frozen base model) — with their s.e.; they are the same for
    every objective. Columns the scores lack are NaN.
    """
    rows = []
    groups = scores.groupby(["model", "user", "num_context"], sort=True)
    for (model, user, c), group in groups:
        group = group.sort_values("prompt_id")
        fluency = {}
        for column in (DISTINCT_COLUMN, NLL_COLUMN):
            fluency[column], fluency[f"{column}_se"] = _mean_se(group, column, replicates, seed)
        for k in objectives:
            reward, reward_se = _mean_se(group, f"{REWARD_PREFIX}{k}", replicates, seed)
            judge, judge_se = _mean_se(group, f"{JUDGE_PREFIX}{k}", replicates, seed)
            rows.append(
                {
                    "model": model,
                    "user": user,
                    "num_context": int(c),
                    "objective": k,
                    "reward": reward,
                    "reward_se": reward_se,
                    "judge": judge,
                    "judge_se": judge_se,
                    **fluency,
                    "n_prompts": len(group),
                }
            )
    return rows


def marker_rows(scores: pd.DataFrame, replicates: int, seed: int) -> list[dict[str, Any]]:
    """The share of answers showing each judge marker, per (model, user, context size).

    Empty when the scores have no ``marker_*`` column (the judge did not run).
    """
    markers = [c for c in scores if c.startswith(MARKER_PREFIX)]
    rows = []
    for (model, user, c), group in scores.groupby(["model", "user", "num_context"], sort=True):
        group = group.sort_values("prompt_id")
        for column in markers:
            share, share_se = _mean_se(group.astype({column: "float64"}), column, replicates, seed)
            rows.append(
                {
                    "model": model,
                    "user": user,
                    "num_context": int(c),
                    "marker": column.removeprefix(MARKER_PREFIX),
                    "share": share,
                    "share_se": share_se,
                    "n_prompts": len(group),
                }
            )
    return rows


@torch.no_grad()
def answer_nll(
    causal_lm: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    max_length: int = 4096,
    progress: bool = False,
) -> torch.Tensor:
    """Mean negative log-likelihood per answer token under a causal LM (a fluency measure).

    Each (prompt, answer) is rendered through the chat template as in
    training; the answer's tokens are scored, the closing end-of-turn token
    excluded (an answer cut at ``max_new_tokens`` would otherwise pay for an
    end it never wrote). Pass the frozen base model (adapters and FiLM off):
    a policy judged by itself would grade its own drift as fluent.

    The naive equivalent, with ``lp = log_softmax(causal_lm(ids).logits, -1)``
    for one rendered sequence ``ids`` whose answer spans ``[s, e)``::

        -mean(lp[t - 1, ids[t]] for t in range(s, e))

    Returns:
        (N,) float64 nats per token; NaN for an answer with no token.
    """
    from steerable_alignment.policy.pairs import pair_sequences
    from steerable_alignment.policy.scoring import base_model_logps
    from steerable_alignment.policy.tokenise import tokenise_pairs

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    out = torch.full((len(answers),), float("nan"), dtype=torch.float64)
    if not len(answers):
        return out
    pairs, _ = tokenise_pairs(
        tokenizer, list(prompts), list(answers), list(answers), range(len(answers)), max_length
    )
    kept = pairs.pair_id  # (N_kept,) the rows that fit
    tokens = (pairs.response_len[:, 0] - 1).clamp_min(0)  # (N_kept,) without the end of turn
    was_training = causal_lm.training
    causal_lm.eval()
    starts = range(0, len(kept), batch_size)
    for start in tqdm(starts, desc="base-model NLL", leave=False, disable=not progress):
        rows = torch.arange(start, min(start + batch_size, len(kept)))
        batch = pair_sequences(pairs, rows, torch.zeros_like(rows))
        batch = dataclasses.replace(batch, response_len=tokens[rows]).to(device)
        logps = base_model_logps(causal_lm, batch).double().cpu()  # (b,)
        n = tokens[rows].double()
        out[kept[rows]] = torch.where(n > 0, -logps / n.clamp_min(1), torch.nan)
    causal_lm.train(was_training)
    return out


CONTINUUM_COLUMNS = [
    "dataset",
    "model",
    "w",
    "user",
    "num_context",
    "score",
    "value",
    "value_se",
    "step_diff",
    "step_diff_se",
    "n_prompts",
]


def mixed_user_label(w: float) -> str:
    """The ``user`` label of a user with weight ``w`` on the first of two objectives."""
    return f"w={float(w):g}"


def continuum_rows(
    scores: pd.DataFrame,
    users: Sequence[tuple[float, str]],
    objectives: tuple[str, str],
    num_context: int,
    replicates: int,
    seed: int,
) -> list[dict[str, Any]]:
    """How each policy's answers move along a continuum of users.

    For users of weight ``w`` (on ``objectives[0]``; ``1 − w`` on
    ``objectives[1]``) with ``num_context`` pairs, the mean over prompts of
    ``<prefix>k − <prefix>j`` for the judge (``judge_``, when scored) and the
    reward models (``reward_``); ``step_diff`` is the paired difference from
    the previous ``w`` (same prompts, same context pairs), the first row's
    is NaN. A model whose answers do not depend on the user (BTL-DPO) has
    the same value at every ``w`` and step differences of exactly 0.

    Args:
        scores: scored answers with ``user`` labels as given in ``users``.
        users: ``(w, user label)`` in increasing ``w``.
    """
    k, j = objectives
    rows = []
    for model in sorted(scores["model"].unique()):
        for prefix in (JUDGE_PREFIX, REWARD_PREFIX):
            if f"{prefix}{k}" not in scores or f"{prefix}{j}" not in scores:
                continue
            table = scores[(scores["model"] == model) & (scores["num_context"] == num_context)]
            table = table.assign(_score=table[f"{prefix}{k}"] - table[f"{prefix}{j}"])
            previous = None
            for w, label in users:
                values = _per_prompt(table, {"user": label}, "_score")
                if not len(values):
                    continue
                row = {
                    "model": model,
                    "w": float(w),
                    "user": label,
                    "num_context": int(num_context),
                    "score": f"{prefix}{k} - {prefix}{j}",
                    "value": float(values.mean()),
                    "value_se": _bootstrap_se(torch.tensor(values.to_numpy()), replicates, seed),
                    "step_diff": _nan(),
                    "step_diff_se": _nan(),
                    "n_prompts": len(values),
                }
                if previous is not None:
                    shared = values.index.intersection(previous.index)
                    diff = torch.tensor((values[shared] - previous[shared]).to_numpy())
                    row["step_diff"] = float(diff.mean())
                    row["step_diff_se"] = _bootstrap_se(diff, replicates, seed)
                rows.append(row)
                previous = values
    return rows


def plot_continuum(continuum: pd.DataFrame, steered: Sequence[str] = ("nppl_mixed",)) -> Any:
    """The judge's score difference of answers by user weight ``w``, ± 2 s.e.

    The steered policies are lines; the others (answers that ignore the
    user) are drawn as reference points at their single value.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    table = continuum[continuum["score"].str.startswith(JUDGE_PREFIX)]
    if table.empty:
        table = continuum
    for (dataset, model, _), rows in table.groupby(["dataset", "model", "score"], sort=True):
        rows = rows.sort_values("w")
        line = model in steered
        fig.add_trace(
            go.Scatter(
                x=rows["w"] if line else [rows["w"].mean()],
                y=rows["value"] if line else [rows["value"].mean()],
                error_y={
                    "type": "data",
                    "array": 2 * (rows["value_se"] if line else rows["value_se"].iloc[:1]),
                    "visible": True,
                },
                mode="lines+markers" if line else "markers",
                marker={"size": 9 if line else 11, "symbol": "circle" if line else "diamond"},
                name=f"{dataset} {model}" + ("" if line else " (reads no context)"),
            )
        )
    score = table["score"].iloc[0] if len(table) else ""
    fig.update_layout(
        title=f"Users on a continuum: {score} of the answers by the user's weight w "
        "(error bars ± 2 bootstrap s.e. over prompts)",
        xaxis_title="w (weight of the first objective in the user's choices)",
        yaxis_title=score,
        template="plotly_white",
    )
    return fig
