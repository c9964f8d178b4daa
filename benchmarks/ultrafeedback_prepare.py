"""Benchmark: ``build_pairs`` on ~1,000,000 candidate pairs (target <= 60 s on 2 CPU cores).

The raw table (~170k prompts x 4 completions = ~1.02M candidate pairs before
ties are dropped) is the generated data set tiled: each copy gets new prompt
ids, a tagged prompt text and ratings jittered by -1/0/+1, so prompts stay
distinct and ties vary. Times the median of 3 ``build_pairs`` runs per
objective set and prints the figures.

Run: ``.venv/bin/python benchmarks/ultrafeedback_prepare.py [--prompts 170000]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import pandas as pd

from steerable_alignment.ultrafeedback.generate import OBJECTIVES
from steerable_alignment.ultrafeedback.pairing import build_pairs
from steerable_alignment.ultrafeedback.reading import load_raw

TARGET_SECONDS = 60.0
BASE_PROMPTS = 3000
REPEATS = 3


def big_raw_table(n_prompts: int, seed: int = 0) -> pd.DataFrame:
    """A raw table of ``n_prompts`` prompts built by tiling the generated one."""
    base = load_raw("generated", n_prompts=BASE_PROMPTS, completions_per_prompt=4, seed=seed)
    copies = -(-n_prompts // BASE_PROMPTS)
    rng = np.random.default_rng(seed)
    tile = np.repeat(np.arange(copies), len(base))  # (C,) copy of each row
    big = pd.DataFrame(
        {
            "prompt_id": np.tile(base["prompt_id"].to_numpy(), copies) + tile * BASE_PROMPTS,
            "prompt": np.tile(base["prompt"].to_numpy(dtype=object), copies)
            + pd.Series(tile).map(" (copy {})".format).to_numpy(dtype=object),
            "completion_idx": np.tile(base["completion_idx"].to_numpy(), copies),
            "response": np.tile(base["response"].to_numpy(dtype=object), copies),
        }
    )
    for k in OBJECTIVES:
        ratings = np.tile(base[f"rating_{k}"].to_numpy(), copies)
        big[f"rating_{k}"] = np.clip(ratings + rng.integers(-1, 2, ratings.size), 1, 5)
    return big[big["prompt_id"] < n_prompts].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=170_000)
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores; numpy/pandas single-threaded"
    )
    started = time.perf_counter()
    raw = big_raw_table(args.prompts)
    sizes = raw.groupby("prompt_id").size()
    n_candidates = int((sizes * (sizes - 1) // 2).sum())
    print(
        f"raw table: {raw['prompt_id'].nunique():,} prompts, {len(raw):,} completions, "
        f"{n_candidates:,} candidate pairs (built in {time.perf_counter() - started:.1f} s)"
    )
    cases = (
        (["helpfulness", "honesty"], 0.0),
        (["helpfulness", "honesty", "truthfulness"], 0.0),
        (["helpfulness", "honesty"], 1.0),  # every non-tied pair kept: the largest output
    )
    for objectives, fraction in cases:
        seconds, pairs = [], None
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            pairs = build_pairs(raw, objectives, non_conflicting_fraction=fraction, seed=0)
            seconds.append(time.perf_counter() - t0)
        median = statistics.median(seconds)
        print(
            f"build_pairs {objectives}, non_conflicting_fraction={fraction}: "
            f"median {median:.2f} s over {REPEATS} runs "
            f"({', '.join(f'{s:.2f}' for s in seconds)}); {n_candidates / median:,.0f} candidate "
            f"pairs/s; {len(pairs):,} pairs kept ({pairs['is_conflicting'].mean():.0%} "
            f"conflicting); target <= {TARGET_SECONDS:.0f} s: "
            f"{'met' if median <= TARGET_SECONDS else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
