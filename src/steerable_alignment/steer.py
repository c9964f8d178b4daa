"""``python -m steerable_alignment.steer``: steer the trained models with a user's few choices.

Reads a user's context pairs (``--context``, JSON Lines) and either scores
candidate responses with the NP-BTL reward model (``--candidates``),
answers prompts with the NP-DPO policy (``--prompts``), both conditioned on
that context, or names the pairs of a pool most worth asking the user next
(``--suggest K --pool FILE``, with the NP-BTL reward model). The models are
the latest trained artefacts of the Kedro catalog:
``<dataset>.nppl_mixed.reward_model``, ``<dataset>.nppl_mixed.policy`` on
``base_policy``, and the ``embedding`` pipeline's model for the texts.
See docs/steer.md.

This module is the command line and the thin Kedro layer (bootstrap the
project, read parameters, check and load catalog entries); the work is done
by the framework-free :mod:`steerable_alignment.steering`. Expected failures
(bad input lines, missing artefacts, an over-long context) print one message
on stderr and exit with status 1, without a traceback; command-line usage
errors exit with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from steerable_alignment.steering.errors import MissingArtifactError, SteeringError
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

PROG = "python -m steerable_alignment.steer"
#: The namespace of the context-conditioned models (reward model and policy).
VARIANT = "nppl_mixed"
EXIT_ERROR = 1


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


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Relative paths of the project (catalog, parameters) resolve from its root."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def kedro_project(project_path: str | None, env: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The project's catalog and parameters in ``env``, inside its root folder.

    Args:
        project_path: a folder of the project (its root or below); ``None``: the
            current folder. The project is that folder or its nearest parent
            with a pyproject.toml holding ``[tool.kedro]``.
        env: the configuration environment; ``base`` is what a plain ``kedro run``
            uses (conf/base with conf/local over it).

    Raises:
        SteeringError: no Kedro project there.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    start = Path(project_path or Path.cwd()).expanduser().resolve()
    root = find_kedro_project(start)
    if root is None:
        raise SteeringError(
            f"{start} is not a Kedro project (no pyproject.toml with [tool.kedro]); run from "
            "the repository or give --project-path"
        )
    with _working_directory(root):
        bootstrap_project(root)
        # KedroSession maps env None to the project's default run env ("local").
        session_env = None if env == "base" else env
        with KedroSession.create(project_path=root, env=session_env) as session:
            context = session.load_context()
            yield context.catalog, context.params


def check_artifacts(catalog: Any, dataset: str, mode: str, env: str) -> None:
    """Raise :class:`MissingArtifactError` naming every missing entry and its pipeline."""
    from kedro.framework.project import pipelines

    from steerable_alignment.hooks import missing_datasets

    missing = missing_datasets(catalog, requirements(dataset, mode))
    if missing:
        found = [(name, producing_pipeline(name, pipelines)) for name in missing]
        raise MissingArtifactError(missing_artifacts_message(found, env))


def _version(catalog: Any, name: str) -> str | None:
    """The version a versioned catalog entry loads (the latest), else ``None``."""
    from kedro.io.core import AbstractVersionedDataset

    dataset = catalog.get(name)
    if isinstance(dataset, AbstractVersionedDataset):
        return dataset.resolve_load_version()
    return None


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
    args: argparse.Namespace, catalog: Any, params: Mapping[str, Any], mode: str, pairs: int
) -> LoadedRewardModel:
    """Load and check ``<dataset>.nppl_mixed.reward_model``: kind, context size, embedding."""
    from steerable_alignment.steering import core

    dataset = _check_dataset(params, args.dataset)
    check_artifacts(catalog, dataset, mode, args.env)
    name = f"{dataset}.{VARIANT}.reward_model"
    version = _version(catalog, name)
    model = catalog.load(name)
    core.check_reward_model(model, name)
    facts = getattr(model, "trained_with", None) or {}
    max_context, source = _trained_max_context(
        facts.get("max_context"), params, f"reward_modelling.{dataset}.{VARIANT}.training"
    )
    check_context_size(pairs, max_context, name, source, args.context)
    embedding = _embedding_config(params, dataset, args.device)
    _check_embedding(facts.get("embedding"), embedding, name, dataset)
    return LoadedRewardModel(dataset, name, version, model, max_context, source, embedding)


def score(args: argparse.Namespace, context_pairs: list[ContextPair]) -> str:
    """Rank candidates with the NP-BTL reward model conditioned on the context."""
    from steerable_alignment.steering import core, report

    candidates = read_candidates(args.candidates)
    with kedro_project(args.project_path, args.env) as (catalog, params):
        loaded = _reward_model(args, catalog, params, "score", len(context_pairs))
        dim = loaded.model.config.input_dim
        context = core.context_tensors(context_pairs, loaded.embedding, dim, args.context)
        options = core.embed_candidates(candidates, loaded.embedding, dim, args.candidates)
    scored = core.score_candidates(loaded.model, context, candidates, options)
    info = loaded.info(args, len(context_pairs))
    return report.scores_json(info, scored) if args.json else report.scores_text(info, scored)


#: Training users in the ``population`` strategy's bank (as the evaluation's default).
POPULATION_SIZE = 256


def _population(catalog: Any, params: Mapping[str, Any], loaded: LoadedRewardModel, seed: int):
    """(K, Z') latents of simulated training users of the data set, for ``population``."""
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.evaluation.elicitation import population_bank

    data = parameter(params, f"reward_modelling.{loaded.dataset}.data")
    pairs = catalog.load(f"{loaded.dataset}.pairs")
    split = dataset_tensors(pairs, catalog.load(f"{loaded.dataset}.features"), data)
    return population_bank(
        loaded.model,
        split.data.features.float(),
        split.data.choices,
        split.splits["train"],
        POPULATION_SIZE,
        loaded.max_context,
        seed,
    )


def suggest(args: argparse.Namespace, context_pairs: list[ContextPair]) -> str:
    """The pool pairs most worth asking next, by the NP-BTL reward model given the context."""
    from steerable_alignment.steering import core, report

    pool, skipped = usable_pool(read_pool(args.pool), context_pairs)
    for item in skipped:
        logger.warning("%s, line %d: skipped, %s", args.pool, item.line, item.reason)
    check_suggest_size(args.suggest, len(pool), len(skipped), args.pool)
    with kedro_project(args.project_path, args.env) as (catalog, params):
        loaded = _reward_model(args, catalog, params, "suggest", len(context_pairs))
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
            bank = _population(catalog, params, loaded, args.seed)
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


def generate(args: argparse.Namespace, context_pairs: list[ContextPair]) -> str:
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
    with kedro_project(args.project_path, args.env) as (catalog, params):
        dataset = _check_dataset(params, args.dataset)
        check_artifacts(catalog, dataset, "generate", args.env)
        name = f"{dataset}.{VARIANT}.policy"
        trained = catalog.load(name)
        max_context, source = _trained_max_context(
            trained.info.get("max_context"), params, f"dpo.{dataset}.{VARIANT}.training"
        )
        check_context_size(len(context_pairs), max_context, name, source, args.context)
        embedding = _embedding_config(params, dataset, args.device)
        _check_embedding(trained.info.get("embedding"), embedding, name, dataset)
        base = catalog.load("base_policy")
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


def _number(value: str, cast: type) -> Any:
    try:
        return cast(value)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {value!r}") from None


def _positive_int(value: str) -> int:
    number = _number(value, int)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _temperature(value: str) -> float:
    number = _number(value, float)
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return number


def _top_p(value: str) -> float:
    number = _number(value, float)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return number


def _non_negative_int(value: str) -> int:
    number = _number(value, int)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = _number(value, float)
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return number


def _device_name(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, and CUDA only where it exists."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{value!r}: CUDA is not available here")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/steer.md)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Condition the trained NP-BTL reward model or NP-DPO policy on a user's few "
            "choices: score candidate responses, answer prompts, or suggest which pairs to "
            "ask the user next."
        ),
        epilog="See docs/steer.md.",
    )
    parser.add_argument(
        "--context",
        required=True,
        type=Path,
        metavar="FILE",
        help="JSON Lines of the user's choices: prompt, response_a, response_b, choice "
        "(1 = response_b preferred, 0 = response_a); an empty file gives the population model",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--candidates",
        type=Path,
        metavar="FILE",
        help="JSON Lines of prompt, response: score each with the NP-BTL reward model, "
        "ranked per prompt",
    )
    mode.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="JSON Lines of prompt: answer each with the NP-DPO policy",
    )
    mode.add_argument(
        "--suggest",
        type=_positive_int,
        metavar="K",
        help="print the K pairs of --pool most worth asking the user next (NP-BTL reward model)",
    )
    parser.add_argument(
        "--pool",
        type=Path,
        metavar="FILE",
        help="--suggest: JSON Lines of prompt, response_a, response_b to choose from",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "random", "uncertainty", "information", "population"),
        help="--suggest: how to rank the pool (default auto: information for a latent model, "
        "else population)",
    )
    parser.add_argument("--dataset", default="hh", help="the data set of the models (default hh)")
    parser.add_argument(
        "--env", default="base", help="Kedro configuration environment (default base)"
    )
    parser.add_argument(
        "--project-path",
        default=None,
        help="the Kedro project, or a folder inside it (default: the current folder)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        type=_device_name,
        help="auto (CUDA if available; the embedding model keeps its parameter), cpu, cuda "
        "or cuda:N",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--max-new-tokens", type=_positive_int, default=64, help="--prompts: default 64"
    )
    parser.add_argument(
        "--temperature",
        type=_temperature,
        default=0.7,
        help="--prompts: 0 decodes greedily (default 0.7)",
    )
    parser.add_argument("--top-p", type=_top_p, default=0.9, help="--prompts: default 0.9")
    parser.add_argument(
        "--top-k", type=_non_negative_int, default=50, help="--prompts: 0 is off (default 50)"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=_positive_float,
        default=1.0,
        help="--prompts: 1.0 is off (default 1.0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="--prompts: sampling seed; --suggest: draws of z (0)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="--prompts: prompts per generate() call (8)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Kedro's and the models' log messages"
    )
    return parser


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Without ``--verbose``: warnings and errors only, no progress bars.

    Kedro configures its log handlers when imported and again when the
    project is bootstrapped, so INFO messages are switched off process-wide
    (``logging.disable``) rather than per logger; Kedro's warnings and the
    libraries' ``FutureWarning``s are hidden too. Restored on exit.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"kedro(\.|$)")
            warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' API changes
            yield
    finally:
        logging.disable(logging.NOTSET)


def run(args: argparse.Namespace) -> str:
    """Everything but the printing: the report text (table or JSON)."""
    context_pairs = read_context(args.context)
    if args.candidates is not None:
        return score(args, context_pairs)
    if args.suggest is not None:
        return suggest(args, context_pairs)
    return generate(args, context_pairs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status.

    Only the report goes to stdout: while the project and the models load,
    anything printed there (Kedro's rich log handler writes to stdout) is sent
    to stderr, so ``--json`` output can be piped.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.suggest is None) != (args.pool is None):
        parser.error("--suggest K and --pool FILE go together")
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr), _quiet(args.verbose):
        try:
            text = run(args)
        except SteeringError as err:
            sys.stderr.write(f"steer: error: {err}\n")
            return EXIT_ERROR
        except Exception as err:
            if not _is_configuration_error(err):
                raise
            sys.stderr.write(f"steer: error: {err}\n")
            return EXIT_ERROR
    out.write(text)
    out.flush()
    return 0


def _is_configuration_error(err: Exception) -> bool:
    """The project's own checks of parameters, data and catalog entries (clear messages)."""
    from kedro.io.core import DatasetError

    from steerable_alignment.contracts import DataContractError
    from steerable_alignment.models.config import ConfigError

    return isinstance(err, ConfigError | DataContractError | DatasetError)


if __name__ == "__main__":
    sys.exit(main())
