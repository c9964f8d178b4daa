"""Train one DPO policy variant, data-parallel under ``accelerate launch``.

``accelerate launch -m steerable_alignment.pipelines.dpo --namespace <dataset>.<variant>``:

Every process loads the variant's inputs from the project's catalog and runs
the ``train_policy`` node's code; the training loop splits each step's
episodes over the processes and sums their gradients (docs/dpo.md). The main
process writes the checkpoints and, at the end, the variant's ``policy`` and
``policy_history`` through the catalog, so a following
``kedro run --pipeline dpo ...`` finds them (``--only-missing-outputs``), or
resumes from the final checkpoint at once.

Example (8 GPUs; the inputs made first by ``kedro run``)::

    kedro run --env gpu --pipeline dpo_all \\
        --to-outputs hh.reference_logps,hh.prefix_states,hh.policy_evaluation_episodes
    accelerate launch --multi_gpu --num_processes 8 -m steerable_alignment.pipelines.dpo \\
        --env gpu --namespace hh.nppl_mixed
    kedro run --env gpu --pipeline dpo_all --only-missing-outputs
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def train_namespace(
    catalog: Any, params: dict[str, Any], namespace: str, save: bool | None = None
) -> Any:
    """Run ``<namespace>.train_policy`` on the catalog's inputs; save its outputs if ``save``.

    Args:
        catalog: the project's data catalog.
        params: the project's parameters (``dpo.<dataset>.<variant>`` is read).
        namespace: ``<dataset>.<variant>``, e.g. ``hh.nppl_mixed``.
        save: write ``<namespace>.policy`` and ``<namespace>.policy_history``;
            None: on the main process only (rank 0, or the only process).

    Returns:
        The trained policy's weights (a ``TrainedPolicy``).

    Raises:
        ValueError: an unknown namespace.
    """
    from steerable_alignment.pipelines.dpo.nodes import train_policy
    from steerable_alignment.pipelines.dpo.pipeline import DPO_DATASETS, ENCODER_INIT

    dataset, _, variant = namespace.partition(".")
    if variant not in DPO_DATASETS.get(dataset, ()):
        known = [f"{d}.{v}" for d, variants in DPO_DATASETS.items() for v in variants]
        raise ValueError(f"--namespace {namespace!r} is not a DPO variant; known: {known}")
    trained, history = train_policy(
        catalog.load("base_policy"),
        catalog.load(f"{dataset}.pairs"),
        catalog.load(f"{dataset}.features"),
        catalog.load(f"{dataset}.policy_pairs"),
        catalog.load(f"{dataset}.reference_logps"),
        catalog.load(f"{dataset}.prefix_states"),
        params["dpo"][dataset]["data"],
        params["dpo"][dataset][variant],
        encoder_init=(
            catalog.load(f"{dataset}.{ENCODER_INIT[variant]}.reward_model")
            if variant in ENCODER_INIT
            else None
        ),
    )
    if save is None:
        import torch.distributed as dist

        save = not dist.is_initialized() or dist.get_rank() == 0
    if save:
        catalog.save(f"{namespace}.policy", trained)
        catalog.save(f"{namespace}.policy_history", history)
        logger.info("Saved %s.policy and %s.policy_history", namespace, namespace)
    return trained


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m steerable_alignment.pipelines.dpo",
        description="Train one DPO policy variant (data-parallel under accelerate launch).",
    )
    parser.add_argument(
        "--namespace", required=True, help="<dataset>.<variant>, e.g. hh.nppl_mixed"
    )
    parser.add_argument("--env", default=None, help="Kedro configuration environment, e.g. gpu")
    parser.add_argument("--project-path", default=".", help="the Kedro project (default: here)")
    args = parser.parse_args(argv)

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = Path(args.project_path).resolve()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        context = session.load_context()
        train_namespace(context.catalog, context.params, args.namespace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
