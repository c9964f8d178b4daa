"""Equal-budget hyper-parameter sweep of the reward models, on the validation split only.

For each data set and each of its model variants (pipelines/variants.py),
train every candidate of the same grid (learning rate x run length, cosine
decay, weight decay 0.01 by default) and keep the candidate with the best
validation score under the data set's criterion (``training.select_by``:
validation NLL for the synthetic task, validation accuracy for UltraFeedback).
Each run's checkpoint is itself chosen on validation. The test split is
never read. Prints and writes a markdown report with every candidate's
score, the chosen training parameters per variant (copy them into
conf/base/parameters_reward_modelling.yml), and the sweep's wall time.

Needs the data sets on disk first:
``kedro run --pipelines synthetic_data,ultrafeedback,embedding``.

    python benchmarks/reward_sweep.py [--datasets hh hht synthetic] [--jobs 2]
        [--lr 1e-4 3e-4 1e-3] [--max-steps 1000 3000] [--out docs/reward_sweep.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _run(args: tuple) -> dict:
    from dataclasses import asdict

    from steerable_alignment.recipes.sweep import run_candidate

    return asdict(run_candidate(*args))


def load_project(env: str | None) -> tuple[dict, object]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    session = KedroSession.create(project_path=ROOT, env=env)
    context = session.load_context()
    return context.params, context.catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["hh", "hht", "synthetic"])
    parser.add_argument("--variants", nargs="*", default=None, help="default: all of each data set")
    parser.add_argument("--lr", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--max-steps", nargs="+", type=int, default=[1000, 3000])
    parser.add_argument("--weight-decay", nargs="+", type=float, default=[0.01])
    parser.add_argument("--evals-per-run", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--env", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reward_sweep.md")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.pipelines.variants import REWARD_DATASETS
    from steerable_alignment.recipes.sweep import CandidateResult, candidate_grid, select_best

    params, catalog = load_project(args.env)
    unknown = [d for d in args.datasets if d not in REWARD_DATASETS]
    if unknown:
        raise SystemExit(f"--datasets: unknown {unknown}; valid: {sorted(REWARD_DATASETS)}")
    if args.variants:
        valid = {v for d in args.datasets for v in REWARD_DATASETS[d].variants}
        bad = sorted(set(args.variants) - valid)
        if bad:
            raise SystemExit(
                f"--variants: unknown {bad} for {args.datasets}; valid: {sorted(valid)}"
            )
    missing = [
        name
        for d in args.datasets
        for name in (f"{d}.pairs", f"{d}.features")
        if not catalog.exists(name)
    ]
    if missing:
        raise SystemExit(
            f"Missing inputs {missing}: run `kedro run --pipelines "
            "synthetic_data,ultrafeedback,embedding` first"
        )
    grid = {
        "lr": args.lr,
        "max_steps": args.max_steps,
        "lr_schedule": ["cosine"],
        "weight_decay": args.weight_decay,
    }
    candidates = candidate_grid(grid, args.evals_per_run)
    started = time.perf_counter()
    report = [
        "# Reward-model sweep (validation split only)",
        "",
        f"Command: `python benchmarks/reward_sweep.py --datasets {' '.join(args.datasets)} "
        f"--jobs {args.jobs} --lr {' '.join(map(str, args.lr))} --max-steps "
        f"{' '.join(map(str, args.max_steps))}`",
        "",
        f"Grid, the same for every model: {json.dumps(grid)}; validation every "
        f"max_steps/{args.evals_per_run} steps, the best checkpoint kept. One torch thread "
        "per run.",
        "",
    ]
    chosen: dict[str, dict[str, dict]] = {}
    for dataset in args.datasets:
        data_params = params["reward_modelling"][dataset]
        split = dataset_tensors(
            catalog.load(f"{dataset}.pairs"),
            catalog.load(f"{dataset}.features"),
            data_params["data"],
        )
        variants = [v for v in REWARD_DATASETS[dataset].variants if v in (args.variants or [v])]
        criteria = {data_params[v]["training"].get("select_by", "nll") for v in variants}
        if len(criteria) != 1:
            raise SystemExit(f"{dataset}: variants use different select_by {criteria}")
        select_by = criteria.pop()
        jobs = [
            (
                v,
                data_params[v]["model"],
                data_params[v]["training"],
                c,
                split.data,
                split.splits["train"],
                split.splits["validation"],
            )
            for v in variants
            for c in candidates
        ]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_init) as pool:
            results = [CandidateResult(**r) for r in pool.map(_run, jobs)]
        elapsed = time.perf_counter() - t0
        report += [
            f"## {dataset} (criterion: validation {select_by}; {len(jobs)} runs, "
            f"{elapsed / 60:.1f} min wall)",
            "",
            "| variant | lr | max_steps | val accuracy | val NLL | best step | run (s) | chosen |",
            "|---|---|---|---|---|---|---|---|",
        ]
        chosen[dataset] = {}
        for variant in variants:
            mine = [r for r in results if r.variant == variant]
            best = select_best(mine, select_by)
            chosen[dataset][variant] = best.overrides
            for r in mine:
                report.append(
                    f"| {variant} | {r.overrides['lr']:g} | {r.overrides['max_steps']} | "
                    f"{100 * r.val_accuracy:.2f} | {r.val_nll:.4f} | {r.best_step} | "
                    f"{r.seconds:.0f} | {'**yes**' if r is best else ''} |"
                )
        report.append("")
    total = time.perf_counter() - started
    report += [
        "## Chosen training parameters",
        "",
        "```json",
        json.dumps(chosen, indent=2),
        "```",
        "",
        f"Whole sweep: {total / 60:.1f} min wall with {args.jobs} parallel runs.",
        "",
    ]
    text = "\n".join(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
