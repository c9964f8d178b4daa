"""The memory plan of an environment at the real data sizes (no model is loaded).

Prints, per data set, what every cached artefact and each step's parts will
take on the GPU and in host memory (``steerable_alignment.runtime.memory``):
features, token ids, reference log-probs, prefix states, the embedding step
and the DPO step (frozen weights, trainable state, activations, logits).

    python benchmarks/memory_plan.py [--env gpu] [--pairs 250000] [--dataset hh]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="gpu")
    parser.add_argument("--dataset", default="hh")
    parser.add_argument(
        "--pairs", type=int, default=250_000, help="pairs (real HH: ~250k before filtering)"
    )
    parser.add_argument("--variant", default="nppl_mixed")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()

    from kedro.config import OmegaConfigLoader

    from steerable_alignment.runtime.memory import GB, dpo_step_bytes, format_plan, plan

    loader = OmegaConfigLoader(
        str(ROOT / "conf"),
        base_env="base",
        default_run_env=args.env,
        merge_strategy={"parameters": "soft"},
    )
    rows = plan(
        loader["parameters"],
        args.dataset,
        args.pairs,
        variant=args.variant,
        processes=args.processes,
    )
    print(
        f"env {args.env}, {args.dataset}, {args.pairs:,} pairs, {args.variant}, "
        f"{args.processes} process(es)\n"
    )
    print(format_plan(rows))
    print(f"\nDPO step total: {dpo_step_bytes(rows) / GB:.1f} GB (target <= 60 GB on an 80 GB GPU)")


if __name__ == "__main__":
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    main()
