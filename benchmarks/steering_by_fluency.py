"""The steering gap restricted to prompts whose two answers are both fluent.

A reward model can score degenerate, looping text well, so a steering gap
could come from broken answers rather than steered ones. This reads the
scored answers of the default run (``generation_samples``) and recomputes the
10-pair steering gap of NP-DPO on the prompts where *both* users' answers
have a distinct-word-bigram share of at least each threshold (1.0: nothing
repeats), with the plain s.e. over those prompts. Descriptive only: the
thresholds select on the answers themselves.

    python benchmarks/steering_by_fluency.py \\
        [--samples data/08_reporting/generation_samples.parquet] \\
        [--context 10] [--thresholds 0 0.9 0.95]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("helpfulness", "honesty")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=Path, default=ROOT / "data/08_reporting/generation_samples.parquet"
    )
    parser.add_argument("--model", default="nppl_mixed")
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.9, 0.95])
    args = parser.parse_args()
    if not args.samples.is_file():
        parser.error(f"--samples {args.samples}: no such file; run `make run` first")
    samples = pd.read_parquet(args.samples)
    if "distinct_2" not in samples:
        parser.error(f"--samples {args.samples}: no 'distinct_2' column (made before it existed)")
    rows = samples[(samples["model"] == args.model) & (samples["num_context"] == args.context)]
    users = {k: rows[rows["user"] == k].set_index("prompt_id").sort_index() for k in OBJECTIVES}
    first, second = OBJECTIVES
    print(f"{args.model}, {args.context} context pairs, {len(users[first])} prompts")
    print(f"{'distinct_2 >=':<15}{'reward':<13}{'gap':>8}{'s.e.':>7}{'prompts':>9}")
    for threshold in args.thresholds:
        keep = (users[first]["distinct_2"] >= threshold) & (
            users[second]["distinct_2"] >= threshold
        )
        for k, j in ((first, second), (second, first)):
            diff = (users[k][f"reward_{k}"] - users[j][f"reward_{k}"])[keep]
            se = diff.std() / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            print(f"{threshold:<15}{k:<13}{diff.mean():+8.2f}{se:7.2f}{len(diff):9d}")


if __name__ == "__main__":
    main()
