"""Training-seed spread of the NP-BTL − own-BTL comparison on one UltraFeedback data set.

The bootstrap s.e. in the tables resamples the test prompts; it says nothing
about how much the figures move when the models are trained again. This
retrains every reward model of one data set with other training seeds
(``reward_modelling.<dataset>.<variant>.training.seed``; the data, the
splits and the evaluation episodes stay fixed), scores each run with the
``evaluation`` pipeline, and prints NP-BTL (mixed) minus each objective's
own BTL model at ``--context`` pairs, per seed, with the mean and the s.d.
across seeds.

Each seed is a ``kedro run --pipelines reward_modelling,evaluation
--namespaces <dataset>`` that overwrites that data set's models and tables,
so the default seed (0) is always run last and the catalog ends as the
default run left it. Needs the data set's features first (``make run`` or
``kedro run --pipelines ultrafeedback,embedding``). About 3 minutes per seed
for HHT on this 2-core CPU.

    python benchmarks/training_seeds.py [--dataset hht] [--seeds 0 1 2] [--context 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="hht")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--context", type=int, default=10)
    args = parser.parse_args()

    import pandas as pd

    from steerable_alignment.pipelines.variants import REWARD_DATASETS

    if args.dataset not in REWARD_DATASETS:
        parser.error(f"--dataset: expected one of {sorted(REWARD_DATASETS)}")
    variants = REWARD_DATASETS[args.dataset].variants
    # the default seed last, so the catalog ends with the default run's artefacts
    seeds = sorted(set(args.seeds), key=lambda s: (s == DEFAULT_SEED, s))
    if DEFAULT_SEED not in seeds:
        seeds.append(DEFAULT_SEED)
    kedro = Path(sys.executable).with_name("kedro")
    table = ROOT / f"data/08_reporting/{args.dataset}/reward_comparisons.parquet"
    results: dict[int, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            params = ",".join(
                f"reward_modelling.{args.dataset}.{v}.training.seed={seed}" for v in variants
            )
            command = [
                str(kedro),
                "run",
                "--pipelines",
                "reward_modelling,evaluation",
                "--namespaces",
                args.dataset,
                "--params",
                params,
            ]
            print(f"seed {seed}: {' '.join(command)}", flush=True)
            log = Path(scratch) / f"seed_{seed}.log"
            with log.open("w") as out:
                done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                sys.exit(f"seed {seed} failed; the end of its log:\n{log.read_text()[-3000:]}")
            kept = Path(scratch) / f"comparisons_{seed}.parquet"
            shutil.copy(table, kept)
            results[seed] = pd.read_parquet(kept)

    objectives = sorted(
        {v.removeprefix("btl_") for v in variants if v.startswith("btl_") and v != "btl_mixed"}
    )
    print(f"\n{args.dataset}: NP-BTL − own BTL at {args.context} pairs (points ± bootstrap s.e.)")
    print(
        f"{'objective':<14}" + "".join(f"{'seed ' + str(s):>18}" for s in seeds) + "   mean   s.d."
    )
    for k in objectives:
        cells, values = [], []
        for seed in seeds:
            c = results[seed]
            row = c[
                (c["model"] == "nppl_mixed")
                & (c["baseline"] == f"btl_{k}")
                & (c["objective"] == k)
                & (c["num_context"] == args.context)
            ].iloc[0]
            values.append(100 * row["accuracy_diff"])
            cells.append(f"{values[-1]:+.2f} ± {100 * row['accuracy_diff_se']:.2f}")
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(
            f"{k:<14}"
            + "".join(f"{cell:>18}" for cell in cells)
            + f"  {statistics.mean(values):+.2f}  {spread:.2f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    main()
