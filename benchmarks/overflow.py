"""Over-long texts: how many pairs the embedding keeps with `overflow: truncate` vs `drop`.

Reads the pairs tables the `ultrafeedback` pipeline writes
(`data/03_primary/<dataset>/pairs.parquet`; run `kedro run --pipeline
ultrafeedback` first) and the embedding parameters of `conf/base`. Prints,
per data set, the longest (prompt, response) text in tokens of the
configured encoder and how many are over its `max_length` (the offline
default: none). Then it embeds the first ``--pairs`` HH pairs at each
``--max-length`` (far below the default, so that most texts are too long, as
real data is at 256 tokens) with each overflow rule and prints the pairs
kept.

    python benchmarks/overflow.py [--pairs 300] [--max-length 48 64]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
import yaml

from steerable_alignment.embedding.config import EmbeddingConfig, resolve_model_source
from steerable_alignment.embedding.core import embed_pairs, load_tokenizer, unique_texts

ROOT = Path(__file__).resolve().parents[1]


def config(block: dict, **changes: object) -> EmbeddingConfig:
    block = {k: v for k, v in {**block, **changes}.items() if k != "shard_dir"}
    return EmbeddingConfig.from_params(
        {**block, "progress": False}, prefix=f"embedding.{block['name']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--max-length", type=int, nargs="+", default=[48, 64])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tree = yaml.safe_load((ROOT / "conf/base/parameters_embedding.yml").read_text())["embedding"]
    for name in ("hh", "hht"):
        path = ROOT / f"data/03_primary/{name}/pairs.parquet"
        if not path.exists():
            raise SystemExit(f"{path} not found: run `kedro run --pipeline ultrafeedback` first")
        pairs = pd.read_parquet(path)
        cfg = config(tree[name])
        tokenizer = load_tokenizer(resolve_model_source(cfg.model), cfg)
        texts = unique_texts(pairs)
        lengths = [
            len(tokenizer(prompt, response)["input_ids"])
            for prompt, response in zip(texts.prompts, texts.responses, strict=True)
        ]
        over = sum(n > cfg.max_length for n in lengths)
        print(
            f"{name}: {len(pairs)} pairs, {len(lengths)} distinct texts, longest {max(lengths)} "
            f"tokens; over max_length={cfg.max_length}: {over}"
        )
    subset = pd.read_parquet(ROOT / "data/03_primary/hh/pairs.parquet").iloc[: args.pairs]
    print(f"\nfirst {len(subset)} HH pairs, embedded:")
    print("| max_length | overflow | pairs kept | texts cut | texts dropped |")
    print("|---:|---|---:|---:|---:|")
    for max_length in args.max_length:
        for overflow in ("drop", "truncate"):
            stats = embed_pairs(
                subset, config(tree["hh"], max_length=max_length, overflow=overflow)
            ).stats
            print(
                f"| {max_length} | {overflow} | {stats.num_pairs_kept} / {stats.num_pairs} | "
                f"{stats.num_texts_truncated} / {stats.num_texts} | {stats.num_texts_dropped} |"
            )


if __name__ == "__main__":
    main()
