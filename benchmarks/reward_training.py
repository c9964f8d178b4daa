"""NP-BTL training throughput: the real training loop vs the bare compute limit.

Both run the same model, batch shape (64 episodes x 20 targets, context 0-10)
and number of optimiser steps, in the same process:

- loop: ``steerable_alignment.training.train`` as the pipeline runs it
  (fresh episodes every step, validation every ``eval_every`` steps,
  best-checkpoint copies, progress bar);
- bare: forward + backward + AdamW steps over batches built beforehand
  (no sampling, no validation, no bookkeeping): the compute limit.

Prints target pairs per second for each, and loop / bare.

    python benchmarks/reward_training.py [--steps 500] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from steerable_alignment.episodes.sampler import EpisodeSampler, PreferenceData
from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.recipes.reward_models import TrainingConfig, train
from steerable_alignment.runtime.devices import seeded
from steerable_alignment.synthetic.task import generate_pairs

PARAMS = "conf/base/parameters_reward_modelling.yml"


def load_variant(name: str) -> tuple[dict, dict]:
    with open(PARAMS) as handle:
        params = yaml.safe_load(handle)["reward_modelling"]["synthetic"][name]
    return params["model"], params["training"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="nppl")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_params, training_params = load_variant(args.variant)
    pairs = generate_pairs(20_000, 0.5, (0.8, 0.1, 0.1), seed=0)
    data = PreferenceData(pairs.options.unsqueeze(-1), pairs.choices, ("user_0", "user_1"))
    train_rows = (pairs.split == 0).nonzero().squeeze(1)
    val_rows = (pairs.split == 1).nonzero().squeeze(1)
    config = TrainingConfig.from_params(
        {**training_params, "max_steps": args.steps, "device": "cpu", "num_threads": args.threads}
    )
    model_config = RewardModelConfig.from_params(model_params)
    pairs_per_step = config.batch_episodes * config.num_targets

    def run_loop() -> float:
        with seeded(0):
            model = build_model(model_config)
        started = time.perf_counter()
        train(model, data, train_rows, val_rows, config)
        return time.perf_counter() - started

    sampler = EpisodeSampler(
        train_rows,
        torch.tensor([0, 1]),
        config.num_targets,
        config.min_context,
        config.max_context,
        seed=0,
    )
    batches = [
        sampler.sample(config.batch_episodes).batch(data, config.max_context) for _ in range(64)
    ]

    def run_bare() -> float:
        with seeded(0):
            model = build_model(model_config)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr)
        started = time.perf_counter()
        for step in range(args.steps):
            loss = model.loss(batches[step % len(batches)]).loss.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return time.perf_counter() - started

    run_bare()  # warm-up (allocator, kernels)
    loop_times, bare_times = [], []
    for _ in range(args.repeats):
        bare_times.append(run_bare())
        loop_times.append(run_loop())
    loop_s, bare_s = statistics.median(loop_times), statistics.median(bare_times)
    loop_tp = args.steps * pairs_per_step / loop_s
    bare_tp = args.steps * pairs_per_step / bare_s
    print(
        f"variant={args.variant} steps={args.steps} threads={args.threads} "
        f"batch={config.batch_episodes}x{config.num_targets} eval_every={config.eval_every} "
        f"repeats={args.repeats} (medians)"
    )
    print(
        f"training loop : {loop_s:7.2f} s  {loop_tp:9.0f} target pairs/s  (runs: "
        + ", ".join(f"{t:.2f}" for t in loop_times)
        + ")"
    )
    print(
        f"bare compute  : {bare_s:7.2f} s  {bare_tp:9.0f} target pairs/s  (runs: "
        + ", ".join(f"{t:.2f}" for t in bare_times)
        + ")"
    )
    print(f"loop / compute limit: {loop_tp / bare_tp:.1%}  (goal >= 80%)")


if __name__ == "__main__":
    main()
