"""The latent NP-BTL on UltraFeedback (HH, HHT): accuracy, NLL and ECE beside the deterministic one.

The default run trains the latent NP-BTL (``nppl_latent``) on the synthetic
task only. This trains it on each UltraFeedback data set with the same
tuning budget ``nppl_mixed`` had (docs/reward_sweep_uf.md: the same grid of
learning rate x run length, cosine decay, weight decay 0.01, validation
every max_steps/10; the candidate kept by validation accuracy, the data
sets' ``select_by``; the test split is not read for it). The model is
``nppl_mixed``'s with ``type: nppl_latent`` and the synthetic latent
model's settings (ELBO, KL weight 1, a deterministic path, 32 draws of z
at prediction). Then both are scored **once** on the evaluation pipeline's
test episodes (``evaluation.<dataset>``: same episodes, same bootstrap by
prompt): accuracy, NLL and ECE by context size, and latent − deterministic
paired differences. The deterministic model is the catalog's
``<dataset>.nppl_mixed.reward_model``.

Needs the features and the deterministic models first:
``kedro run --pipelines ultrafeedback,embedding`` and
``kedro run --pipeline reward_modelling --namespaces hh.nppl_mixed,hht.nppl_mixed``.

    python benchmarks/latent_uf.py [--datasets hh hht] [--jobs 2] [--out docs/latent_uf.md]
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: the synthetic latent model's settings (conf/base/parameters_reward_modelling.yml)
LATENT = ("type", "objective", "kl_weight", "deterministic_path", "predictive_samples")


def _init() -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _train(job: tuple) -> dict:
    """One candidate on the train split (checkpoint chosen on validation): weights and scores."""
    from steerable_alignment.models.config import RewardModelConfig
    from steerable_alignment.models.reward_models import build_model
    from steerable_alignment.recipes.reward_models import TrainingConfig, train
    from steerable_alignment.runtime.devices import seeded

    dataset, overrides, model_params, training_params, data, train_rows, val_rows = job
    started = time.perf_counter()
    training = TrainingConfig.from_params({**training_params, **overrides, "progress": False})
    config = RewardModelConfig.from_params(model_params, input_dim=int(data.features.shape[-1]))
    with seeded(training.seed):
        model = build_model(config)
    result = train(model, data, train_rows, val_rows, training)
    best = next(h for h in result.history if h["step"] == result.best_step)
    return {
        "dataset": dataset,
        "overrides": dict(overrides),
        "state": model.state_dict(),
        "val_accuracy": float(best["val_accuracy"]),
        "val_nll": float(best["val_nll"]),
        "best_step": result.best_step,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["hh", "hht"], choices=["hh", "hht"])
    parser.add_argument("--lr", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--max-steps", nargs="+", type=int, default=[1000, 3000])
    parser.add_argument(
        "--kl-weight",
        nargs="+",
        type=float,
        default=None,
        help="a grid of the ELBO's KL weight too (default: the synthetic model's, 1.0)",
    )
    parser.add_argument(
        "--objective",
        choices=["elbo", "ml"],
        default=None,
        help="the latent model's objective (default: the synthetic model's, elbo)",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "latent_uf.md")
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.models.config import RewardModelConfig
    from steerable_alignment.models.reward_models import build_model
    from steerable_alignment.pipelines.evaluation.nodes import (
        collect_reward_metrics,
        make_evaluation_episodes,
        predict_context_sizes,
        predict_reward_model,
    )
    from steerable_alignment.recipes.sweep import candidate_grid

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        params, catalog = context.params, context.catalog
        missing = [
            name
            for d in args.datasets
            for name in (f"{d}.pairs", f"{d}.features", f"{d}.nppl_mixed.reward_model")
            if not catalog.exists(name)
        ]
        if missing:
            raise SystemExit(f"Missing {missing}: see this script's docstring for the commands")
        loaded = {
            d: (
                catalog.load(f"{d}.pairs"),
                catalog.load(f"{d}.features"),
                catalog.load(f"{d}.nppl_mixed.reward_model"),
            )
            for d in args.datasets
        }
    grid = {
        "lr": args.lr,
        "max_steps": args.max_steps,
        "lr_schedule": ["cosine"],
        "weight_decay": [0.01],
    }
    candidates = candidate_grid(grid, 10)
    kl_grid = args.kl_weight or [None]
    runs = [(c, kl) for c in candidates for kl in kl_grid]  # (training overrides, KL weight)
    latent_block = params["reward_modelling"]["synthetic"]["nppl_latent"]["model"]
    jobs, splits, blocks, kl_of = [], {}, {}, []
    for d in args.datasets:
        pairs, features, _ = loaded[d]
        block = params["reward_modelling"][d]
        model = {**block["nppl_mixed"]["model"], **{k: latent_block[k] for k in LATENT}}
        if args.objective is not None:
            model["objective"] = args.objective
        blocks[d] = (block, model)
        splits[d] = split = dataset_tensors(pairs, features, block["data"])
        for c, kl in runs:
            kl_of.append(kl)
            jobs.append(
                (
                    d,
                    c,
                    model if kl is None else {**model, "kl_weight": kl},
                    block["nppl_mixed"]["training"],
                    split.data,
                    split.splits["train"],
                    split.splits["validation"],
                )
            )
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init) as pool:
        results = list(pool.map(_train, jobs))
    for r, kl, job in zip(results, kl_of, jobs, strict=True):
        r["kl_weight"] = job[2]["kl_weight"] if kl is None else kl
        r["model"] = job[2]
    wall = time.perf_counter() - started

    lines = [
        "# The latent NP-BTL on UltraFeedback: NLL and ECE beside the deterministic model",
        "",
        f"Command: `python benchmarks/latent_uf.py --datasets {' '.join(args.datasets)} "
        f"--jobs {args.jobs} --lr {' '.join(map(str, args.lr))} --max-steps "
        f"{' '.join(map(str, args.max_steps))}"
        + (f" --kl-weight {' '.join(map(str, args.kl_weight))}" if args.kl_weight else "")
        + (f" --objective {args.objective}" if args.objective else "")
        + f" --out {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}`. "
        "The latent model (`nppl_latent`: `nppl_mixed`'s model with "
        + ", ".join(
            f"{k} {args.objective if k == 'objective' and args.objective else latent_block[k]}"
            for k in LATENT[1:]
        )
        + f") is tuned on validation: {len(runs)} candidates ({grid}"
        + (f" x kl_weight {args.kl_weight}" if args.kl_weight else "")
        + "), kept by validation accuracy (`nppl_mixed` had 6 candidates, "
        "docs/reward_sweep_uf.md). "
        f"Training: {wall / 60:.1f} min wall, {args.jobs} runs in parallel, one torch thread "
        "each. Then both models are scored once on the test episodes of `evaluation.<dataset>` "
        "(± bootstrap s.e. over test prompts, paired).",
        "",
    ]
    for d in args.datasets:
        pairs, features, deterministic = loaded[d]
        block, _ = blocks[d]
        select_by = block["nppl_mixed"]["training"].get("select_by", "nll")
        mine = [r for r in results if r["dataset"] == d]
        if select_by == "accuracy":
            best = max(mine, key=lambda r: (r["val_accuracy"], -mine.index(r)))
        else:
            best = min(mine, key=lambda r: (r["val_nll"], mine.index(r)))
        lines += [
            f"## {d}",
            "",
            "Validation (the choice):",
            "",
            "| lr | max_steps | KL weight | val accuracy | val NLL | best step | run (s) "
            "| chosen |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            lines.append(
                f"| {r['overrides']['lr']:g} | {r['overrides']['max_steps']} | "
                f"{r['kl_weight']:g} | "
                f"{100 * r['val_accuracy']:.2f} | {r['val_nll']:.4f} | {r['best_step']} | "
                f"{r['seconds']:.0f} | {'**yes**' if r is best else ''} |"
            )
        data = block["data"]
        evaluation = {
            **params["evaluation"][d],
            "comparisons": [{"model": "nppl_latent", "baseline": "nppl_mixed"}],
        }
        episodes = make_evaluation_episodes(pairs, features, data, evaluation)
        latent = build_model(
            RewardModelConfig.from_params(
                best["model"], input_dim=int(splits[d].data.features.shape[-1])
            )
        )
        latent.load_state_dict(best["state"])
        latent.eval()
        predictions = {
            "nppl_latent": predict_context_sizes(
                latent,
                splits[d].data,
                EvaluationEpisodes.from_tensors(episodes),
                evaluation["context_sizes"],
                int(evaluation["seed"]),
                evaluation.get("batch_size", 1024),
                torch.device("cpu"),
            ),
            "nppl_mixed": predict_reward_model(
                deterministic, pairs, features, episodes, data, evaluation
            ),
        }
        metrics, comparisons = collect_reward_metrics(
            pairs, features, episodes, data, evaluation, **predictions
        )
        metrics = metrics[metrics["objective"] == "all"]
        comparisons = comparisons[comparisons["objective"] == "all"]
        lines += [
            "",
            "Test, all users (accuracy %, NLL nats, ECE):",
            "",
            "| context pairs | nppl_mixed acc / NLL / ECE | nppl_latent acc / NLL / ECE | "
            "latent − deterministic accuracy | NLL |",
            "|---:|---|---|---|---|",
        ]
        for n in evaluation["context_sizes"]:
            row = {m: metrics[(metrics.model == m) & (metrics.num_context == n)].iloc[0]
                   for m in ("nppl_mixed", "nppl_latent")}  # fmt: skip
            diff = comparisons[comparisons.num_context == n].iloc[0]
            cells = [
                f"{100 * r.accuracy:.1f} ± {100 * r.accuracy_se_bootstrap:.1f} / "
                f"{r.nll:.3f} ± {r.nll_se_bootstrap:.3f} / {r.ece:.3f}"
                for r in row.values()
            ]
            lines.append(
                f"| {n} | {cells[0]} | {cells[1]} | "
                f"{100 * diff.accuracy_diff:+.2f} ± {100 * diff.accuracy_diff_se:.2f} | "
                f"{diff.nll_diff:+.3f} ± {diff.nll_diff_se:.3f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
