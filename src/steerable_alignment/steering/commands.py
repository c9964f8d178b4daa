"""The ``steer`` command's work on a trained project: score, suggest, generate.

Framework-free: the project (its parameters and catalog) comes in as a
:class:`Project`, which ``steerable_alignment.steer`` builds from Kedro; a
test or another entry point can pass any object with the same methods.
Each command reads its input files first, then opens the project, checks
that the artefacts it needs exist (naming the pipeline that makes each
missing one), loads and checks them (kind, trained context size, embedding
settings) and hands the work to :mod:`.core`; the output is :mod:`.report`'s
text or JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from steerable_alignment.steering.errors import SteeringError
from steerable_alignment.steering.inputs import (
    ContextPair,
    check_context_size,
    check_suggest_size,
    read_candidates,
    read_context,
    read_pool,
    read_prompts,
    usable_pool,
)

logger = logging.getLogger(__name__)

#: The model variant the command steers: ``<dataset>.nppl_mixed.*``.
VARIANT = "nppl_mixed"


class Project(Protocol):
    """What the commands read of a trained project."""

    params: Mapping[str, Any]

    def load(self, name: str) -> Any:
        """The catalog entry ``name``."""

    def version(self, name: str) -> str | None:
        """The version a versioned entry loads (the latest), else ``None``."""

    def check(self, dataset: str, mode: str) -> None:
        """Raise :class:`MissingArtifactError` naming every entry of :func:`requirements`
        that does not exist and the pipeline that makes it."""


#: Opens the project for the duration of a ``with`` block.
OpenProject = Callable[[], contextlib.AbstractContextManager[Project]]


def requirements(dataset: str, mode: str) -> list[str]:
    """Catalog entries ``mode`` (``score``, ``suggest``, ``generate``) needs, in making order.

    The context texts are embedded here, so the pairs and features are read
    only by ``--suggest`` with ``population`` (its bank of training users);
    the models cannot exist without them either, so a missing one names the
    first pipeline to run.
    """
    needed = [f"{dataset}.pairs", f"{dataset}.features"]
    if mode in ("score", "suggest"):
        return [*needed, f"{dataset}.{VARIANT}.reward_model"]
    return [*needed, "base_policy", f"{dataset}.{VARIANT}.policy"]


def producing_pipeline(name: str, pipelines: Mapping[str, Any]) -> str | None:
    """The registered pipeline to run to make ``name``, or ``None`` if none makes it.

    Among those that output it (``__default__`` aside), the one with the
    shortest name: the narrowest (``dpo`` rather than ``dpo_all`` for ``hh``).
    """
    producers = [
        key
        for key, pipeline in pipelines.items()
        if not key.startswith("__") and name in pipeline.all_outputs()
    ]
    return min(producers, key=lambda key: (len(key), key)) if producers else None


def missing_artifacts_message(missing: Sequence[tuple[str, str | None]], env: str) -> str:
    """The message for artefacts that do not exist yet, naming the pipelines to run.

    Args:
        missing: (catalog entry, pipeline that makes it or ``None``), in the
            order they must be made.
        env: the configuration environment (repeated in the commands).
    """
    env_flag = "" if env == "base" else f" --env {env}"
    lines = [
        f"  - {name}: run `kedro run --pipeline {pipeline}{env_flag}`"
        if pipeline
        else f"  - {name}: made by no registered pipeline"
        for name, pipeline in missing
    ]
    pipelines = list(dict.fromkeys(p for _, p in missing if p))
    return (
        "No trained artefacts yet for this command:\n"
        + "\n".join(lines)
        + f"\nRun {', then '.join(f'`{p}`' for p in pipelines)} first (see docs/steer.md)."
    )


def parameter(params: Mapping[str, Any], path: str) -> Any:
    """The parameter at a dotted ``path``.

    Raises:
        SteeringError: naming the first missing key.
    """
    value: Any = params
    walked = []
    for key in path.split("."):
        walked.append(key)
        if not isinstance(value, Mapping) or key not in value:
            raise SteeringError(f"Parameter '{'.'.join(walked)}' is missing from the project")
        value = value[key]
    return value


def text_datasets(params: Mapping[str, Any]) -> list[str]:
    """Data sets with embedding parameters (the ones whose texts can be embedded)."""
    return sorted(k for k in params.get("embedding", {}) if not k.startswith("_"))


def _embedding_config(params: Mapping[str, Any], dataset: str, device: str) -> Any:
    """The data set's embedding parameters; ``--device`` other than auto replaces theirs."""
    from steerable_alignment.embedding import EmbeddingConfig

    block = parameter(params, f"embedding.{dataset}")
    config = EmbeddingConfig.from_params(block, prefix=f"embedding.{dataset}")
    return config if device == "auto" else dataclasses.replace(config, device=device)


def _trained_max_context(recorded: Any, params: Mapping[str, Any], prefix: str) -> tuple[int, str]:
    """The largest context a model was trained with, and where that figure comes from.

    Models record it when trained; for one saved before they did, the run's
    parameter is the best guess (and the message says so).
    """
    if recorded is not None:
        return int(recorded), f"parameter '{prefix}.max_context' when it was trained"
    logger.warning("The model records no max_context: using today's parameter %s", prefix)
    return int(parameter(params, f"{prefix}.max_context")), f"parameter '{prefix}.max_context'"


def _check_embedding(recorded: Any, embedding: Any, name: str, dataset: str) -> None:
    """Refuse to embed the context otherwise than the features the model was trained on."""
    from steerable_alignment.contracts import check_same_embedding
    from steerable_alignment.embedding import embedding_settings

    check_same_embedding(
        recorded,
        embedding_settings(embedding),
        name,
        f"today's parameters 'embedding.{dataset}'",
        "The context would be embedded differently from its training features: restore "
        "those parameters, or retrain on features made with these",
    )


@dataclasses.dataclass(frozen=True)
class LoadedRewardModel:
    """The NP-BTL reward model of a run, checked, with what it was trained on."""

    dataset: str
    name: str
    version: str | None
    model: Any
    max_context: int
    source: str
    embedding: Any

    def info(self, args: argparse.Namespace, pairs: int) -> Any:
        from steerable_alignment.steering import report

        return report.RunInfo(
            self.dataset, self.name, self.version, str(args.context), pairs, self.max_context
        )


def _reward_model(
    args: argparse.Namespace, project: Project, mode: str, pairs: int
) -> LoadedRewardModel:
    """Load and check ``<dataset>.nppl_mixed.reward_model``: kind, context size, embedding."""
    from steerable_alignment.steering import core

    params = project.params
    dataset = _check_dataset(params, args.dataset)
    project.check(dataset, mode)
    name = f"{dataset}.{VARIANT}.reward_model"
    version = project.version(name)
    model = project.load(name)
    core.check_reward_model(model, name)
    facts = getattr(model, "trained_with", None) or {}
    max_context, source = _trained_max_context(
        facts.get("max_context"), params, f"reward_modelling.{dataset}.{VARIANT}.training"
    )
    check_context_size(pairs, max_context, name, source, args.context)
    embedding = _embedding_config(params, dataset, args.device)
    _check_embedding(facts.get("embedding"), embedding, name, dataset)
    return LoadedRewardModel(dataset, name, version, model, max_context, source, embedding)


def score(
    args: argparse.Namespace, context_pairs: list[ContextPair], open_project: OpenProject
) -> str:
    """Rank candidates with the NP-BTL reward model conditioned on the context."""
    from steerable_alignment.steering import core, report

    candidates = read_candidates(args.candidates)
    with open_project() as project:
        loaded = _reward_model(args, project, "score", len(context_pairs))
        dim = loaded.model.config.input_dim
        context = core.context_tensors(context_pairs, loaded.embedding, dim, args.context)
        options = core.embed_candidates(candidates, loaded.embedding, dim, args.candidates)
    scored = core.score_candidates(loaded.model, context, candidates, options)
    info = loaded.info(args, len(context_pairs))
    return report.scores_json(info, scored) if args.json else report.scores_text(info, scored)


#: Training users in the ``population`` strategy's bank (as the evaluation's default).
POPULATION_SIZE = 256


def _population(project: Project, loaded: LoadedRewardModel, seed: int) -> Any:
    """(K, Z') latents of simulated training users of the data set, for ``population``."""
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.evaluation.elicitation import population_bank

    data = parameter(project.params, f"reward_modelling.{loaded.dataset}.data")
    pairs = project.load(f"{loaded.dataset}.pairs")
    split = dataset_tensors(pairs, project.load(f"{loaded.dataset}.features"), data)
    return population_bank(
        loaded.model,
        split.data.features.float(),
        split.data.choices,
        split.splits["train"],
        POPULATION_SIZE,
        loaded.max_context,
        seed,
    )


def suggest(
    args: argparse.Namespace, context_pairs: list[ContextPair], open_project: OpenProject
) -> str:
    """The pool pairs most worth asking next, by the NP-BTL reward model given the context."""
    from steerable_alignment.steering import core, report

    pool, skipped = usable_pool(read_pool(args.pool), context_pairs)
    for item in skipped:
        logger.warning("%s, line %d: skipped, %s", args.pool, item.line, item.reason)
    check_suggest_size(args.suggest, len(pool), len(skipped), args.pool)
    with open_project() as project:
        loaded = _reward_model(args, project, "suggest", len(context_pairs))
        if len(context_pairs) >= loaded.max_context:
            raise SteeringError(
                f"{args.context} already holds {len(context_pairs)} pairs, the most "
                f"{loaded.name} was trained with ({loaded.source}): the answer to one more "
                "could not be used"
            )
        latent = bool(getattr(loaded.model, "latent", False))
        strategy = args.strategy
        if strategy == "auto":
            strategy = "information" if latent else "population"
        bank = None
        if strategy == "population":
            bank = _population(project, loaded, args.seed)
        dim = loaded.model.config.input_dim
        context = core.context_tensors(context_pairs, loaded.embedding, dim, args.context)
        features = core.embed_pool(pool, loaded.embedding, dim, args.pool)
    chosen = core.suggest_pairs(
        loaded.model, context, pool, features, args.suggest, strategy, seed=args.seed, bank=bank
    )
    facts = (loaded.info(args, len(context_pairs)), strategy, str(args.pool), len(pool))
    if args.json:
        return report.suggestions_json(*facts, skipped, chosen)
    return report.suggestions_text(*facts, skipped, chosen, latent=latent)


def generate(
    args: argparse.Namespace, context_pairs: list[ContextPair], open_project: OpenProject
) -> str:
    """Answer prompts with the NP-DPO policy conditioned on the context."""
    from steerable_alignment.evaluation.generation import SamplingConfig, generate_answers
    from steerable_alignment.runtime.devices import resolve_device
    from steerable_alignment.steering import core, report

    prompts = read_prompts(args.prompts)
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    sampling.validate("options")
    with open_project() as project:
        params = project.params
        dataset = _check_dataset(params, args.dataset)
        project.check(dataset, "generate")
        name = f"{dataset}.{VARIANT}.policy"
        trained = project.load(name)
        max_context, source = _trained_max_context(
            trained.info.get("max_context"), params, f"dpo.{dataset}.{VARIANT}.training"
        )
        check_context_size(len(context_pairs), max_context, name, source, args.context)
        embedding = _embedding_config(params, dataset, args.device)
        _check_embedding(trained.info.get("embedding"), embedding, name, dataset)
        base = project.load("base_policy")
        device = resolve_device(args.device)
        policy = trained.build(base.model).to(device)
        core.check_policy(policy, name)
        context = core.context_tensors(
            context_pairs, embedding, policy.config.embedding_dim, args.context
        )
    z = core.policy_latent(policy, context)  # (Z,)
    answers, _ = generate_answers(
        policy,
        base.tokenizer,
        [p.prompt for p in prompts],
        sampling,
        z=z.expand(len(prompts), -1),  # (P, Z): the same user for every prompt
        device=device,
        desc="answering",
        progress=sys.stderr.isatty(),
    )
    info = report.RunInfo(dataset, name, None, str(args.context), len(context_pairs), max_context)
    if args.json:
        return report.answers_json(info, sampling, prompts, answers)
    return report.answers_text(info, sampling, prompts, answers)


def _check_dataset(params: Mapping[str, Any], dataset: str) -> str:
    known = text_datasets(params)
    if dataset not in known:
        raise SteeringError(
            f"--dataset {dataset!r} has no embedding parameters (embedding.{dataset}); steering "
            f"works on the text data sets {known}"
        )
    return dataset


def run(args: argparse.Namespace, open_project: OpenProject) -> str:
    """Everything but the printing: the report text (table or JSON)."""
    context_pairs = read_context(args.context)
    if args.candidates is not None:
        return score(args, context_pairs, open_project)
    if args.suggest is not None:
        return suggest(args, context_pairs, open_project)
    return generate(args, context_pairs, open_project)
