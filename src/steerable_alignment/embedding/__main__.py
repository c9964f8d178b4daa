"""Command-line entry point: embed a pairs table into a features file.

Plain (one process)::

    python -m steerable_alignment.embedding --pairs data/03_primary/hh/pairs.parquet \\
        --out data/04_feature/hh/features.safetensors \\
        --params conf/base/parameters_embedding.yml --dataset hh

Data-parallel (one process per GPU; each embeds its share of the shards, the
main process merges after a barrier)::

    accelerate launch --multi_gpu --num_processes 8 -m steerable_alignment.embedding \\
        --pairs ... --out ... --params conf/base/parameters_embedding.yml \\
        --params conf/gpu/parameters_embedding.yml --dataset hh

``--params`` files are merged in order (later ones win, as Kedro's
environments do); ``--dataset`` picks ``embedding.<dataset>`` from them;
``--set key=value`` (YAML values) overrides single keys. See docs/embedding.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("steerable_alignment.embedding")


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of mappings, ``update`` winning (Kedro's ``soft`` merge)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def parameters_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """One data set's embedding parameters from ``--params``, ``--dataset`` and ``--set``."""
    import yaml

    from steerable_alignment.models.config import ConfigError

    merged: dict[str, Any] = {}
    for path in args.params:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"--params {path}: expected a mapping at the top")
        merged = _merge(merged, loaded)
    if "embedding" in merged:
        tree = merged["embedding"]
        if args.dataset is None:
            raise ConfigError(
                f"--dataset is required with these --params; choose one of "
                f"{sorted(k for k in tree if not k.startswith('_'))}"
            )
        if args.dataset not in tree:
            raise ConfigError(
                f"Parameter 'embedding.{args.dataset}' not found in {args.params}; "
                f"data sets: {sorted(k for k in tree if not k.startswith('_'))}"
            )
        block = dict(tree[args.dataset])
    else:
        block = merged
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        block[key.strip()] = yaml.safe_load(value)
    if args.dataset is not None:
        block.setdefault("name", args.dataset)
    return block


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m steerable_alignment.embedding",
        description="Embed both sides of every pair of a pairs table (Parquet) into a "
        "features file (safetensors: pair_id (N,), features (N, 2, D)).",
    )
    parser.add_argument("--pairs", required=True, help="the pairs table (Parquet)")
    parser.add_argument("--out", required=True, help="the features file to write")
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        help="parameters YAML, repeatable (later files win)",
    )
    parser.add_argument("--dataset", help="which 'embedding.<dataset>' block of --params to use")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter (YAML value), e.g. --set max_length=512",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the embedding step; returns the exit status (2 on bad parameters or data)."""
    args = build_parser().parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from steerable_alignment.contracts import DataContractError
    from steerable_alignment.embedding.config import EmbeddingConfig
    from steerable_alignment.embedding.core import embed_pairs
    from steerable_alignment.embedding.shards import save_tensors
    from steerable_alignment.models.config import ConfigError
    from steerable_alignment.runtime.distributed import current_processes

    try:
        config = EmbeddingConfig.from_params(parameters_from_args(args))
        processes = current_processes(config.device)
        import pandas as pd

        pairs = pd.read_parquet(args.pairs)
        result = embed_pairs(pairs, config, processes, pairs_name=str(args.pairs))
    except (ConfigError, DataContractError) as err:
        logger.error("%s", err)
        return 2
    if result.features is not None:
        save_tensors(args.out, result.features)
        logger.info("Wrote %s: features %s", args.out, tuple(result.features["features"].shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
