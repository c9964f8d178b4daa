"""Training-seed spread of the HH DPO headline figures: every policy retrained per seed.

The bootstrap s.e. in the DPO and steering tables resamples the test prompts;
it says nothing about how much the figures move when the policies are
trained again. For each ``--seeds`` value this retrains the four HH policies
(``dpo.hh.<variant>.training.seed``; data, reference log-probs, evaluation
episodes, generation users and prompts stay fixed) with the project's own
pipelines, then scores them on the test split, and prints per seed and as
mean ± s.d. over seeds:

- implicit-reward accuracy at ``--context`` pairs: NP-DPO minus each
  objective's own BTL-DPO (per objective) and minus BTL-DPO-mixed (pooled
  over objectives: it settles on one side by chance);
- the steering gap at ``--context`` pairs per direction, on the learned
  reward model (``gap``) and on the exact judge (``judge_gap``);
- fluency of NP-DPO's answers at ``--context`` pairs: base-model NLL per
  token and distinct-2, and BTL-DPO-mixed's NLL;
- the exact judge's style-marker shares of NP-DPO's answers at
  ``--context`` pairs (``generation_markers``): hedges and admissions for
  honesty users, hedges and concrete steps for helpfulness users;
- the continuum (``steering_continuum``): NP-DPO's judge score (honesty −
  helpfulness) per user weight ``w``, its smallest paired step in ``w`` and
  its rise from the first ``w`` to the last.

Each seed is two ``kedro run`` commands in this project (``--pipeline dpo
--from-nodes hh.<variant>.train_policy ...``, then ``--pipeline evaluation
--tags generation``), with that seed's checkpoints in a scratch folder. The
project's trained policies and tables are copied aside first and put back at
the end, so the catalog ends as the default run left it. Needs a finished
``make run``. About 15 minutes per seed on this 2-core CPU.

    python benchmarks/policy_seeds.py [--seeds 1 2] [--context 10] [--out data/09_tuning]

Seed 0 (the default) is read from the project's own tables unless listed.
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
VARIANTS = ("btl_helpfulness", "btl_honesty", "btl_mixed", "nppl_mixed")
OBJECTIVES = ("helpfulness", "honesty")
#: What one seed's runs overwrite (copied aside first, restored at the end).
KEPT = (
    "data/06_models/hh/btl_helpfulness",
    "data/06_models/hh/btl_honesty",
    "data/06_models/hh/btl_mixed",
    "data/06_models/hh/nppl_mixed",
    "data/07_model_output/hh",
    "data/08_reporting",
)
TABLES = (
    "dpo_metrics",
    "steering_gap",
    "generation_rewards",
    "generation_markers",
    "steering_continuum",
)
#: (marker, user) shares of NP-DPO's answers the seeds spread (issue 13's style targets).
MARKERS = (
    ("calibrated_hedge", "honesty"),
    ("uncertainty_admission", "honesty"),
    ("calibrated_hedge", "helpfulness"),
    ("concrete_steps", "helpfulness"),
    ("concrete_steps", "honesty"),
)


def _kedro(*args: str) -> None:
    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    subprocess.run([str(kedro), "run", *args], cwd=ROOT, env=env, check=True)


def run_seed(seed: int, scratch: Path) -> None:
    """Retrain the four HH policies with ``seed`` and rebuild the DPO and generation tables."""
    params = []
    for variant in VARIANTS:
        prefix = f"dpo.hh.{variant}.training"
        params += [f"{prefix}.seed={seed}", f"{prefix}.checkpoint_dir={scratch / variant}"]
    from_nodes = ",".join(f"hh.{v}.train_policy" for v in VARIANTS)
    _kedro("--pipeline", "dpo", "--from-nodes", from_nodes, "--params", ",".join(params))
    _kedro("--pipeline", "evaluation", "--tags", "generation")


def headline(tables: dict, context: int) -> dict[str, float]:
    """The figures this benchmark spreads, from one seed's tables."""
    metrics, gap, rewards, markers, continuum = (tables[t] for t in TABLES)
    at = metrics[metrics["num_context"] == context].set_index(["model", "objective"])["accuracy"]
    out = {}
    for k in OBJECTIVES:
        out[f"acc NP-DPO - BTL-DPO({k}), {k} users"] = 100 * (
            at[("nppl_mixed", k)] - at[(f"btl_{k}", k)]
        )
    pooled = sum(at[("nppl_mixed", k)] - at[("btl_mixed", k)] for k in OBJECTIVES) / 2
    out["acc NP-DPO - BTL-DPO-mixed, pooled"] = 100 * pooled
    g = gap[gap["num_context"] == context].set_index("objective")
    for k in OBJECTIVES:
        out[f"RM steering gap, {k}"] = float(g.loc[k, "gap"])
        out[f"judge steering gap, {k}"] = float(g.loc[k, "judge_gap"])
    r = rewards[(rewards["num_context"] == context) & (rewards["objective"] == OBJECTIVES[0])]
    r = r.set_index(["model", "user"])
    for k in OBJECTIVES:
        out[f"NP-DPO base NLL, {k} users"] = float(r.loc[("nppl_mixed", k), "base_nll"])
        out[f"NP-DPO distinct-2, {k} users"] = float(r.loc[("nppl_mixed", k), "distinct_2"])
    out["BTL-DPO-mixed base NLL"] = float(r.loc[("btl_mixed", OBJECTIVES[0]), "base_nll"])
    m = markers[(markers["num_context"] == context) & (markers["model"] == "nppl_mixed")]
    share = m.set_index(["marker", "user"])["share"]
    for marker, user in MARKERS:
        out[f"NP-DPO % {marker}, {user} users"] = 100 * float(share[(marker, user)])
    judged = continuum["score"].str.startswith("judge_")
    c = continuum[(continuum["model"] == "nppl_mixed") & judged].sort_values("w")
    for w, value in zip(c["w"], c["value"], strict=True):
        out[f"continuum judge score, w={w:g}"] = float(value)
    if len(c):
        out["continuum: smallest step in w"] = float(c["step_diff"].min())
        first, last = c["w"].iloc[0], c["w"].iloc[-1]
        out[f"continuum: w={last:g} minus w={first:g}"] = float(
            c["value"].iloc[-1] - c["value"].iloc[0]
        )
    return out


def read_tables(folder: Path) -> dict:
    import pandas as pd

    return {t: pd.read_parquet(folder / f"{t}.parquet") for t in TABLES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "data/09_tuning")
    args = parser.parse_args()
    missing = [t for t in TABLES if not (ROOT / f"data/08_reporting/{t}.parquet").is_file()]
    if missing:
        sys.exit(f"policy_seeds.py: error: no {missing} under data/08_reporting: run `make run`")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if 0 not in args.seeds:
        results[0] = headline(read_tables(ROOT / "data/08_reporting"), args.context)
    with tempfile.TemporaryDirectory(prefix="policy_seeds_") as tmp:
        backup = Path(tmp) / "backup"
        for path in KEPT:
            shutil.copytree(ROOT / path, backup / path)
        try:
            for seed in args.seeds:
                run_seed(seed, Path(tmp) / f"seed_{seed}")
                tables = read_tables(ROOT / "data/08_reporting")
                for name, table in tables.items():
                    table.to_parquet(args.out / f"policy_seeds_{seed}_{name}.parquet")
                results[seed] = headline(tables, args.context)
        finally:
            for path in KEPT:
                shutil.rmtree(ROOT / path, ignore_errors=True)
                shutil.copytree(backup / path, ROOT / path)
    seeds = sorted(results)
    print(f"\nHH, test split, {args.context} context pairs; training seeds {seeds}")
    print(
        f"{'figure':<48}"
        + "".join(f"{'seed ' + str(s):>10}" for s in seeds)
        + f"{'mean':>9}{'s.d.':>8}"
    )
    for key in results[seeds[0]]:
        values = [results[s][key] for s in seeds]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        cells = "".join(f"{v:>10.3f}" for v in values)
        print(f"{key:<48}{cells}{statistics.mean(values):>9.3f}{sd:>8.3f}")
    print(f"\nper-seed tables: {args.out}/policy_seeds_<seed>_<table>.parquet")


if __name__ == "__main__":
    main()
