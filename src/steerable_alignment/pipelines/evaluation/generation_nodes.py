"""Nodes of the generation part of ``evaluation``: steered answers, their rewards, the gap.

Per DPO data set (namespace ``<dataset>``): draw the simulated users once
(test prompts and context pairs), let every DPO policy answer
(``<dataset>.<variant>.generations``), score every answer with each
objective's BTL reward model on the ``embedding`` pipeline's features, then
summarise win-rates, mean rewards and the steering gap
(:mod:`steerable_alignment.evaluation.generation`). torch and transformers
are imported inside the nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError

logger = logging.getLogger(__name__)

GENERATION_KEYS = {
    "num_prompts",
    "context_sizes",
    "split",
    "seed",
    "model",
    "baseline",
    "sampling",
    "bootstrap",
    "device",
    "progress",
    "continuum",
    "fluency",
}
CONTINUUM_KEYS = {"objectives", "weights", "num_context", "seed"}
OUTPUT_COLUMNS = ["prompt_id", "user", "num_context", "response", "new_tokens"]


def _check_generation(generation: Mapping[str, Any], name: str) -> None:
    """Fail before any work on unknown or missing generation parameters."""
    prefix = f"generation.{name}"
    unknown = sorted(set(generation) - GENERATION_KEYS)
    if unknown:
        raise ConfigError(
            f"Parameter '{prefix}': unknown key(s) {unknown}; valid: {sorted(GENERATION_KEYS)}"
        )
    missing = sorted({"num_prompts", "context_sizes", "seed", "sampling"} - set(generation))
    if missing:
        raise ConfigError(f"Parameter '{prefix}': missing key(s) {missing}")
    sizes = generation["context_sizes"]
    if not sizes or any(not isinstance(c, int) or c < 0 for c in sizes):
        raise ConfigError(
            f"Parameter '{prefix}.context_sizes': expected non-negative integers, got {sizes!r}"
        )
    if not isinstance(generation["num_prompts"], int) or generation["num_prompts"] < 1:
        raise ConfigError(f"Parameter '{prefix}.num_prompts': expected a positive integer")
    fluency = generation.get("fluency") or {}
    if not isinstance(fluency, Mapping) or set(fluency) - {"batch_size", "enabled"}:
        raise ConfigError(
            f"Parameter '{prefix}.fluency': expected {{enabled: bool, batch_size: int}}, "
            f"got {fluency!r}"
        )


def continuum_users(
    generation: Mapping[str, Any], name: str, objectives: list[str]
) -> tuple[Any, int, int] | None:
    """The users on a continuum of ``generation.<name>.continuum`` (None when not configured).

    Returns:
        The :class:`~steerable_alignment.evaluation.mixed_users.MixedUserSpec`,
        the context size they answer with and the seed of their tie coins.

    Raises:
        ConfigError: naming the parameter (unknown key, a weight outside
            [0, 1], an objective the data set lacks, a context size not generated).
    """
    from steerable_alignment.evaluation.mixed_users import MixedUserSpec

    params = generation.get("continuum")
    if not params:
        return None
    prefix = f"generation.{name}.continuum"
    if not isinstance(params, Mapping) or set(params) != CONTINUUM_KEYS:
        raise ConfigError(
            f"Parameter '{prefix}': expected exactly the keys {sorted(CONTINUUM_KEYS)}, "
            f"got {sorted(params) if isinstance(params, Mapping) else params!r}"
        )
    spec = MixedUserSpec.from_params(
        {"objectives": params["objectives"], "weights": params["weights"]}, prefix, objectives
    )
    size = params["num_context"]
    if size not in generation["context_sizes"] or size < 1:
        raise ConfigError(
            f"Parameter '{prefix}.num_context': expected one of the generated context sizes "
            f"{sorted(c for c in generation['context_sizes'] if c > 0)}, got {size!r}"
        )
    if not isinstance(params["seed"], int):
        raise ConfigError(f"Parameter '{prefix}.seed': expected an integer")
    return spec, int(size), int(params["seed"])


def make_generation_users(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    data: dict[str, Any],
    generation: dict[str, Any],
) -> dict[str, Any]:
    """The prompts to answer and each prompt's context pairs, drawn once for every policy.

    ``num_prompts`` distinct test prompts (by normalised text); for each, the
    largest context size of pairs from the same split whose prompt differs
    (smaller contexts are its first pairs). A simulated user of objective
    ``k`` labels these pairs with ``k``'s choices, so users of different
    objectives see the same pairs and differ only in their choices.

    Returns:
        ``prompt_rows (P,)`` (a features row holding each prompt) and
        ``context_rows (P, C)``, rows of the features file.
    """
    _check_generation(generation, data["name"])
    import torch

    from steerable_alignment.contracts import check_features, dataset_tensors
    from steerable_alignment.splits import normalise_prompt

    name = data["name"]
    split_name = generation.get("split", "test")
    split = dataset_tensors(pairs, features, data)
    if split_name not in split.splits:
        raise ConfigError(
            f"Parameter 'generation.{name}.split': no split {split_name!r}; "
            f"splits: {sorted(split.splits)}"
        )
    aligned = check_features(
        features, pairs, f"{name}.features", f"{name}.pairs", data.get("allow_missing_features")
    )
    rows = split.splits[split_name]  # (N,)
    keys = aligned["prompt"].map(normalise_prompt).to_numpy()
    prompt_ids = torch.from_numpy(pd.factorize(keys)[0]).long()  # (F,) per features row
    in_split = prompt_ids[rows]  # (N,)
    distinct = torch.unique(in_split)
    size = max(generation["context_sizes"])
    if len(distinct) < generation["num_prompts"]:
        raise ConfigError(
            f"Parameter 'generation.{name}.num_prompts': {generation['num_prompts']} "
            f"asked but split '{split_name}' has {len(distinct)} distinct prompts"
        )
    g = torch.Generator().manual_seed(int(generation["seed"]))
    chosen = distinct[torch.randperm(len(distinct), generator=g)[: generation["num_prompts"]]]
    prompt_rows, context_rows = [], []
    for prompt in chosen.tolist():
        own = rows[in_split == prompt]
        prompt_rows.append(own[torch.randint(len(own), (1,), generator=g)].item())
        others = rows[in_split != prompt]
        if len(others) < size:
            raise ConfigError(
                f"Parameter 'generation.{name}.context_sizes': {size} context pairs "
                f"asked but split '{split_name}' has {len(others)} pairs of other prompts"
            )
        context_rows.append(others[torch.randperm(len(others), generator=g)[:size]])
    return {
        "prompt_rows": torch.tensor(prompt_rows, dtype=torch.long),  # (P,)
        "context_rows": torch.stack(context_rows)
        if size
        else torch.zeros(len(prompt_rows), 0, dtype=torch.long),  # (P, C)
    }


def generate_answers_for_users(
    base_policy: Any,
    policy: Any,
    pairs: pd.DataFrame,
    features: dict[str, Any],
    users: dict[str, Any],
    data: dict[str, Any],
    generation: dict[str, Any],
) -> pd.DataFrame:
    """One policy's answers to every (prompt, simulated user, context size).

    NP-DPO is conditioned on the latent of the user's context (embeddings and
    that user's choices); with no context every user gets the population
    latent, so one answer per prompt serves them all. BTL-DPO reads no
    context and answers each prompt once. Every call uses the same prompts
    and seeds (:func:`~steerable_alignment.generation.generate_answers`).

    Returns:
        One row per (prompt_id, user, num_context): ``response`` and
        ``new_tokens``.
    """
    _check_generation(generation, data["name"])
    import copy

    import torch

    from steerable_alignment.contracts import check_features, dataset_tensors
    from steerable_alignment.evaluation.generation import SamplingConfig, generate_answers
    from steerable_alignment.pipelines.dpo.nodes import _device

    name = data["name"]
    sampling = SamplingConfig.from_params(generation["sampling"], f"generation.{name}.sampling")
    device = _device(generation.get("device", "auto"), f"generation.{name}.device")
    progress = bool(generation.get("progress", True))
    split = dataset_tensors(pairs, features, data)
    aligned = check_features(
        features, pairs, f"{name}.features", f"{name}.pairs", data.get("allow_missing_features")
    )
    prompt_rows = users["prompt_rows"]  # (P,)
    context_rows = users["context_rows"]  # (P, C)
    prompts = aligned["prompt"].iloc[prompt_rows.numpy()].tolist()
    objectives = list(split.data.objectives)
    base = copy.deepcopy(base_policy.model)
    model = policy.build(base, base.name_or_path or "base_policy").to(device)
    tokenizer = base_policy.tokenizer

    def answer(z: torch.Tensor | None, label: str) -> tuple[list[str], torch.Tensor]:
        return generate_answers(
            model, tokenizer, prompts, sampling, z, device, f"{name} {label}", progress
        )

    frames = []
    generated: dict[tuple[str, int], tuple[list[str], torch.Tensor]] = {}

    def add(answers: list[str], lengths: torch.Tensor, user: str, num_context: int) -> None:
        generated[(user, num_context)] = (answers, lengths)
        frames.append(
            pd.DataFrame(
                {
                    "prompt_id": range(len(prompts)),
                    "user": user,
                    "num_context": num_context,
                    "response": answers,
                    "new_tokens": lengths.numpy(),
                }
            )
        )

    sizes = sorted(set(generation["context_sizes"]))
    continuum = continuum_users(generation, name, objectives)
    if not policy.config.uses_context:
        answers, lengths = answer(None, policy.config.type)
        for k in objectives:
            for c in sizes:
                add(answers, lengths, k, c)
        for label in continuum[0].labels if continuum else ():
            add(answers, lengths, label, continuum[1])
    else:
        embeddings = split.data.features.float()  # (F, 2, D)
        for c in sizes:
            if c == 0:
                empty = torch.zeros(len(prompts), 0, 2, embeddings.shape[-1])
                none = torch.zeros(len(prompts), 0, dtype=torch.long)
                with torch.no_grad():
                    z = model.encode_context(
                        empty.to(device), none.to(device), none.bool().to(device)
                    )  # (P, Z)
                answers, lengths = answer(z, "no context")
                for k in objectives:
                    add(answers, lengths, k, 0)
                continue
            rows = context_rows[:, :c]  # (P, c)
            for index, k in enumerate(objectives):
                choices = split.data.choices[rows, index]  # (P, c)
                with torch.no_grad():
                    z = model.encode_context(
                        embeddings[rows].to(device),
                        choices.to(device),
                        torch.ones_like(choices, dtype=torch.bool).to(device),
                    )  # (P, Z)
                answers, lengths = answer(z, f"{k} user, {c} pairs")
                add(answers, lengths, k, c)
        if continuum:
            _answer_continuum(
                continuum,
                pairs,
                features,
                data,
                split,
                context_rows,
                model,
                device,
                answer,
                add,
                generated,
            )
    out = pd.concat(frames, ignore_index=True)[OUTPUT_COLUMNS]
    logger.info(
        "%s: a %s policy answered %d prompts (%d answers, median %d new tokens)",
        name,
        policy.config.type,
        len(prompts),
        len(out),
        int(out["new_tokens"].median()),
    )
    return out


def _answer_continuum(
    continuum: tuple[Any, int, int],
    pairs: pd.DataFrame,
    features: dict[str, Any],
    data: dict[str, Any],
    split: Any,
    context_rows: Any,
    model: Any,
    device: Any,
    answer: Any,
    add: Any,
    generated: dict[tuple[str, int], Any],
) -> None:
    """NP-DPO's answers for the users on a continuum, each with the same context pairs.

    A user whose choices on those pairs equal a pure objective's (``w`` = 0
    or 1 on pairs without ties) has exactly that user's latent, so the
    answers already generated for it are reused (generation is seeded per
    prompt batch, so they would be the same tokens).
    """
    import torch

    from steerable_alignment.evaluation.mixed_users import mixed_choice_matrix, pair_ratings

    spec, size, seed = continuum
    objectives = list(split.data.objectives)
    ratings_a, ratings_b = pair_ratings(pairs, features, data)  # (F, K) each
    choices, _ = mixed_choice_matrix(
        ratings_a, ratings_b, spec.weight_vectors(objectives), seed
    )  # (F, W)
    rows = context_rows[:, :size]  # (P, c)
    embeddings = split.data.features.float()  # (F, 2, D)
    for index, label in enumerate(spec.labels):
        user = choices[rows, index]  # (P, c)
        same = [
            k for o, k in enumerate(objectives) if torch.equal(user, split.data.choices[rows, o])
        ]
        if same and (same[0], size) in generated:
            logger.info(
                "%s: user %s makes the %s user's choices; its answers are reused",
                data["name"],
                label,
                same[0],
            )
            add(*generated[(same[0], size)], label, size)
            continue
        with torch.no_grad():
            z = model.encode_context(
                embeddings[rows].to(device),
                user.to(device),
                torch.ones_like(user, dtype=torch.bool).to(device),
            )  # (P, Z)
        answers, lengths = answer(z, f"{label} user, {size} pairs")
        add(answers, lengths, label, size)


def score_answers(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    users: dict[str, Any],
    data: dict[str, Any],
    embedding: dict[str, Any],
    generation: dict[str, Any],
    base_policy: Any = None,
    **inputs: Any,
) -> pd.DataFrame:
    """Every policy's answers scored by both judges, with two fluency measures.

    - The learned judges: the (prompt, answer) texts are embedded exactly as
      the ``embedding`` pipeline embeds (prompt, response) pairs, then scored
      by ``<dataset>.btl_<objective>.reward_model`` (``reward_<objective>``).
    - The exact judge (:mod:`~steerable_alignment.ultrafeedback.judge`): the
      generator's own rules, noise-free (``judge_<objective>``, and the
      ``marker_<name>`` styles). Only for data sets whose prompts the project
      generated; otherwise these columns are absent and the reason is logged.
    - Fluency: ``distinct_2`` (share of distinct word bigrams) and
      ``base_nll``, the mean NLL per answer token under the frozen base
      model ``base_policy`` (adapters and FiLM off: the policy does not
      grade itself); off with ``fluency.enabled: false`` or no base policy.

    Args:
        embedding: the data set's ``embedding`` parameters.
        base_policy: the base causal LM and tokenizer (``base_policy``).
        inputs: ``<variant>`` -> that policy's generations and
            ``reward_model_<objective>`` -> the objective's BTL reward model.

    Returns:
        One row per (model, prompt_id, user, num_context): ``dataset``,
        ``prompt``, ``response``, ``new_tokens``, ``distinct_2``,
        ``base_nll``, ``reward_<objective>``, ``judge_<objective>`` and
        ``marker_<name>``.
    """
    _check_generation(generation, data["name"])
    import torch

    from steerable_alignment.contracts import check_features, check_same_embedding
    from steerable_alignment.embedding import EmbeddingConfig, embedding_settings
    from steerable_alignment.embedding import embed_pairs as embed
    from steerable_alignment.evaluation.checks import RETRAIN_HINT, trained_with
    from steerable_alignment.evaluation.generation import (
        DISTINCT_COLUMN,
        NLL_COLUMN,
        REWARD_PREFIX,
        distinct_bigram_share,
    )

    name = data["name"]
    objectives = list(data["objectives"])
    reward_models = {k: inputs.pop(f"reward_model_{k}") for k in objectives}
    aligned = check_features(
        features, pairs, f"{name}.features", f"{name}.pairs", data.get("allow_missing_features")
    )
    prompts = aligned["prompt"].iloc[users["prompt_rows"].numpy()].tolist()
    table = pd.concat(
        [frame.assign(model=variant) for variant, frame in inputs.items()], ignore_index=True
    )
    table["prompt"] = [prompts[i] for i in table["prompt_id"]]
    texts = table[["prompt", "response"]].drop_duplicates().reset_index(drop=True)
    config = EmbeddingConfig.from_params({**embedding, "shard_dir": None, "progress": False})
    for k, model in reward_models.items():  # the answers are embedded with today's settings
        check_same_embedding(
            trained_with(model).get("embedding"),
            embedding_settings(config),
            f"{name}.btl_{k}.reward_model",
            f"the parameters 'embedding.{name}'",
            RETRAIN_HINT,
        )
    result = embed(
        pd.DataFrame(
            {
                "pair_id": range(len(texts)),
                "prompt": texts["prompt"],
                "response_a": texts["response"],
                "response_b": texts["response"],
            }
        ),
        config,
        pairs_name=f"{name} generated answers",
    )
    kept = result.features["pair_id"].numpy()
    if result.stats.num_texts_truncated:
        logger.warning(
            "%s: %d of %d generated texts exceed the embedding model's max_length=%d: the "
            "learned judges score them cut to fit (overflow: truncate)",
            name,
            result.stats.num_texts_truncated,
            len(texts),
            config.max_length,
        )
    if len(kept) < len(texts):
        logger.warning(
            "%s: %d of %d generated texts do not fit in the embedding model's max_length and "
            "are not scored (overflow: %s)",
            name,
            len(texts) - len(kept),
            len(texts),
            config.overflow,
        )
    embedded = result.features["features"][:, 0].float()  # (N, D)
    scored = texts.iloc[kept].reset_index(drop=True)
    with torch.no_grad():
        for k, model in reward_models.items():
            model.eval()
            scored[f"{REWARD_PREFIX}{k}"] = model.reward(embedded).double().numpy()
    table = table.merge(scored, on=["prompt", "response"], how="inner")
    table.insert(0, "dataset", name)
    table[DISTINCT_COLUMN] = table["response"].map(distinct_bigram_share)
    fluency = generation.get("fluency") or {}
    nll_columns = []
    if base_policy is not None and fluency.get("enabled", True):
        nll = _base_model_nll(base_policy, scored, generation, name)
        table = table.merge(nll, on=["prompt", "response"], how="left")
        nll_columns = [NLL_COLUMN]
    judged = _judge(scored, objectives, name)
    if judged is not None:
        table = table.merge(judged, on=["prompt", "response"], how="left")
    columns = ["dataset", "model", "prompt_id", "prompt", "user", "num_context", "response"]
    rewards = [f"{REWARD_PREFIX}{k}" for k in objectives]
    extra = [] if judged is None else [c for c in judged if c not in ("prompt", "response")]
    return table[
        columns + ["new_tokens", DISTINCT_COLUMN, *nll_columns, *rewards, *extra]
    ].sort_values(["model", "user", "num_context", "prompt_id"], ignore_index=True)


def _judge(texts: pd.DataFrame, objectives: list[str], name: str) -> pd.DataFrame | None:
    """The exact judge's scores of distinct (prompt, response) texts, or None (logged)."""
    from steerable_alignment.ultrafeedback.generate import OBJECTIVES
    from steerable_alignment.ultrafeedback.judge import (
        JUDGE_PREFIX,
        MARKER_PREFIX,
        JudgeUnavailable,
        judge_answers,
    )

    lacking = [k for k in objectives if k not in OBJECTIVES]
    if lacking:
        logger.warning(
            "%s: no exact-judge columns: the judge scores %s, not %s", name, OBJECTIVES, lacking
        )
        return None
    try:
        scores = judge_answers(texts["prompt"].tolist(), texts["response"].tolist())
    except JudgeUnavailable as error:
        logger.warning("%s: no exact-judge columns: %s", name, error)
        return None
    keep = [f"{JUDGE_PREFIX}{k}" for k in objectives] + [
        c for c in scores if c.startswith(MARKER_PREFIX)
    ]
    return pd.concat([texts[["prompt", "response"]], scores[keep]], axis=1)


def _base_model_nll(
    base_policy: Any, texts: pd.DataFrame, generation: dict[str, Any], name: str
) -> pd.DataFrame:
    """``base_nll`` of distinct (prompt, response) texts under the frozen base model."""
    import torch

    from steerable_alignment.evaluation.generation import NLL_COLUMN, answer_nll
    from steerable_alignment.pipelines.dpo.nodes import _device

    device = _device(generation.get("device", "auto"), f"generation.{name}.device")
    model = base_policy.model
    batch_size = int((generation.get("fluency") or {}).get("batch_size", 16))
    with torch.no_grad():
        values = answer_nll(
            model.to(device),
            base_policy.tokenizer,
            texts["prompt"].tolist(),
            texts["response"].tolist(),
            batch_size,
            device,
            progress=bool(generation.get("progress", True)),
        )
    model.cpu()
    logger.info(
        "%s: base-model NLL of %d answers: median %.3f nats per token",
        name,
        len(texts),
        float(values.nanmedian()),
    )
    return texts[["prompt", "response"]].assign(**{NLL_COLUMN: values.numpy()})


def summarise_generations(
    generation: dict[str, Any], **scores: pd.DataFrame
) -> tuple[pd.DataFrame, ...]:
    """Win-rates, steering gaps, mean scores, markers and the continuum of every data set.

    Args:
        generation: ``generation`` (per data set: ``model``, the steered
            policy; ``baseline``, the policy its win-rate is against;
            ``bootstrap``: ``replicates`` and ``seed``; ``continuum``).
        scores: data set -> its scored answers (:func:`score_answers`).

    Returns:
        ``generation_win_rates``, ``steering_gap``, ``generation_rewards``,
        ``generation_samples`` (all scored answers), ``generation_markers``
        (share of answers showing each judge marker) and ``steering_continuum``
        (score difference of the answers by user weight).
    """
    from steerable_alignment.evaluation.generation import (
        CONTINUUM_COLUMNS,
        GAP_COLUMNS,
        MARKER_COLUMNS,
        REWARD_COLUMNS,
        REWARD_PREFIX,
        WIN_RATE_COLUMNS,
        continuum_rows,
        marker_rows,
        mean_reward_rows,
        steering_gap_rows,
        win_rate_rows,
    )

    wins, gaps, rewards, markers, continuum = [], [], [], [], []
    for name, table in scores.items():
        params = generation[name]
        _check_generation(params, name)
        bootstrap = params.get("bootstrap", {"replicates": 1000, "seed": 7})
        replicates, seed = int(bootstrap["replicates"]), int(bootstrap["seed"])
        objectives = [c.removeprefix(REWARD_PREFIX) for c in table if c.startswith(REWARD_PREFIX)]
        model, baseline = params.get("model", "nppl_mixed"), params.get("baseline", "btl_mixed")

        def tag(rows: list[dict[str, Any]], name: str = name) -> list[dict[str, Any]]:
            return [{**row, "dataset": name} for row in rows]

        wins += tag(win_rate_rows(table, model, baseline, objectives, replicates, seed))
        gaps += tag(steering_gap_rows(table, model, objectives, replicates, seed))
        rewards += tag(mean_reward_rows(table, objectives, replicates, seed))
        markers += tag(marker_rows(table, replicates, seed))
        spec = continuum_users(params, name, objectives)
        if spec is not None:
            users, size = list(zip(spec[0].weights, spec[0].labels)), spec[1]
            continuum += tag(
                continuum_rows(table, users, spec[0].objectives, size, replicates, seed)
            )
    return (
        pd.DataFrame(wins, columns=WIN_RATE_COLUMNS),
        pd.DataFrame(gaps, columns=GAP_COLUMNS),
        pd.DataFrame(rewards, columns=REWARD_COLUMNS),
        pd.concat(list(scores.values()), ignore_index=True),
        pd.DataFrame(markers, columns=MARKER_COLUMNS),
        pd.DataFrame(continuum, columns=CONTINUUM_COLUMNS),
    )


def plot_continuum(steering_continuum: pd.DataFrame, generation: dict[str, Any]) -> Any:
    """The steered policy's answers by user weight, the other policies as reference points."""
    from steerable_alignment.evaluation.generation import plot_continuum as plot

    steered = sorted({params.get("model", "nppl_mixed") for params in generation.values()})
    return plot(steering_continuum, steered)


def plot_steering_gap(steering_gap: pd.DataFrame) -> Any:
    """The steering gap vs context size, one line per ordered pair of objectives, ± 2 s.e."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (dataset, model, k, j), rows in steering_gap.groupby(
        ["dataset", "model", "objective", "context_objective"], sort=True
    ):
        rows = rows.sort_values("num_context")
        fig.add_trace(
            go.Scatter(
                x=rows["num_context"],
                y=rows["gap"],
                error_y={"type": "data", "array": 2 * rows["gap_se"], "visible": True},
                mode="lines+markers",
                name=f"{dataset} {model}: {k} reward, {k} vs {j} user",
            )
        )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Steering gap: objective-k reward of answers to a k-user minus to a j-user "
        "(same prompts, pairs and seeds; error bars ± 2 bootstrap s.e. over prompts)",
        xaxis_title="context pairs",
        yaxis_title="reward difference",
        template="plotly_white",
    )
    return fig
