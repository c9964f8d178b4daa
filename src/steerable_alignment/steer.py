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

This module is the entry point and the thin Kedro layer (find and bootstrap
the project, read its parameters, check and load catalog entries); the
command line is :mod:`steerable_alignment.steering.cli` and the work
:mod:`steerable_alignment.steering.commands`, both framework-free. Expected
failures (bad input lines, missing artefacts, an over-long context) print
one message on stderr and exit with status 1, without a traceback;
command-line usage errors exit with status 2 (argparse).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from steerable_alignment.steering.cli import build_parser, quiet
from steerable_alignment.steering.commands import (
    missing_artifacts_message,
    producing_pipeline,
    requirements,
    run,
)
from steerable_alignment.steering.errors import MissingArtifactError, SteeringError

EXIT_ERROR = 1


@dataclasses.dataclass(frozen=True)
class KedroProject:
    """A Kedro project's catalog and parameters, as the commands read them."""

    catalog: Any
    params: Mapping[str, Any]
    env: str

    def load(self, name: str) -> Any:
        return self.catalog.load(name)

    def version(self, name: str) -> str | None:
        """The version a versioned catalog entry loads (the latest), else ``None``."""
        from kedro.io.core import AbstractVersionedDataset

        dataset = self.catalog.get(name)
        if isinstance(dataset, AbstractVersionedDataset):
            return dataset.resolve_load_version()
        return None

    def check(self, dataset: str, mode: str) -> None:
        """Raise :class:`MissingArtifactError` naming every missing entry and its pipeline."""
        from kedro.framework.project import pipelines

        from steerable_alignment.hooks import missing_datasets

        missing = missing_datasets(self.catalog, requirements(dataset, mode))
        if missing:
            found = [(name, producing_pipeline(name, pipelines)) for name in missing]
            raise MissingArtifactError(missing_artifacts_message(found, self.env))


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
def kedro_project(project_path: str | None, env: str) -> Iterator[KedroProject]:
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
            yield KedroProject(context.catalog, context.params, env)


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
    with contextlib.redirect_stdout(sys.stderr), quiet(args.verbose):
        try:
            text = run(args, lambda: kedro_project(args.project_path, args.env))
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
