"""Cost of choosing the next pair to ask: one pair from a pool for many simulated users.

Times one step of active elicitation as ``evaluation/elicitation.py`` runs it
(the users' latents from their contexts, every pool pair scored, the best
unasked one picked) for ``--users`` users and a pool of ``--pool`` pairs, with
the project's model sizes (conf/base/parameters_reward_modelling.yml; random
weights: the cost does not depend on them). Cases: HH's deterministic
``nppl_mixed`` with ``uncertainty``, ``population`` (a bank of 256 users)
and ``random`` (the floor: latents and a uniform draw, no pool scoring);
the synthetic latent ``nppl_latent`` with ``information`` at each of
``--samples`` draws of z (the cost grows with the draws), scoring every
pool pair and, with ``--shortlist K``, only each user's K pairs most
uncertain under the mean z (``NPBTLView(shortlist=K)``; the ratio to the
full pool at the same draws is printed). Baseline in the
same run: the same code asked one user at a time (timed on
``--loop-users`` users, scaled to ``--users``). Target (issue 15): <= 1 s
for 1,000 users and a pool of 1,000.

    python benchmarks/elicitation_selection.py [--users 1000] [--pool 1000] [--repeats 5]
        [--samples 32 4] [--shortlist 32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from steerable_alignment.evaluation.elicitation import NPBTLView, PopulationView, select_next
from steerable_alignment.models.config import RewardModelConfig
from steerable_alignment.models.reward_models import build_model

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "conf" / "base" / "parameters_reward_modelling.yml"
CONTEXT = 2  # pairs each user has answered already


def model_config(dataset: str, variant: str, input_dim: int) -> RewardModelConfig:
    block = yaml.safe_load(PARAMS.read_text())["reward_modelling"][dataset][variant]["model"]
    return RewardModelConfig.from_params({**block, "input_dim": input_dim})


def one_step(view, context, pool, strategy, seed) -> torch.Tensor:
    """Latents of every user, then the pair each is asked next (B,)."""
    generator = torch.Generator().manual_seed(seed)
    features, choices, mask = context
    z = view.latents(features, choices, mask, generator)
    prepared = view.prepare_pool(pool)
    asked = torch.zeros(features.shape[0], pool.shape[0], dtype=torch.bool)
    return select_next(view, z, prepared, asked, strategy, generator)


def timed(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[32, 4], help="draws of z (latent model)"
    )
    parser.add_argument(
        "--shortlist", type=int, nargs="*", default=[32], help="shortlist sizes (latent model)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-users", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; {args.users} users, pool {args.pool}, "
        f"median of {args.repeats}"
    )
    cases = [
        ("hh", "nppl_mixed", 384, "uncertainty", 1, None),
        ("hh", "nppl_mixed", 384, "random", 1, None),
        ("hh", "nppl_mixed", 384, "population", 1, None),
    ] + [
        ("synthetic", "nppl_latent", 1, "information", s, k)
        for s in args.samples
        for k in [None, *args.shortlist]
    ]
    full: dict[int, float] = {}  # draws -> seconds with the whole pool scored
    print(f"{'case':66} {'batched s':>10} {'one user at a time s':>21} {'ratio':>7}  target")
    for dataset, variant, dim, strategy, samples, shortlist in cases:
        config = model_config(dataset, variant, dim)
        model = build_model(config)
        if strategy == "population":  # a bank of 256 users' latents (random: the cost is the same)
            bank = torch.randn(256, config.latent_dim, generator=torch.Generator().manual_seed(2))
            view = PopulationView(model, bank, samples=samples)
        else:
            view = NPBTLView(model, samples=samples, shortlist=shortlist)
        g = torch.Generator().manual_seed(1)
        context = (
            torch.randn(args.users, CONTEXT, 2, dim, generator=g),  # (B, N, 2, D)
            torch.randint(0, 2, (args.users, CONTEXT), generator=g),
            torch.ones(args.users, CONTEXT, dtype=torch.bool),
        )
        pool = torch.randn(args.pool, 2, dim, generator=g)  # (M, 2, D)
        with torch.no_grad():

            def batch(view=view, context=context, pool=pool, strategy=strategy):
                one_step(view, context, pool, strategy, 0)

            n = min(args.loop_users, args.users)

            def loop(n=n, context=context, pool=pool, view=view, strategy=strategy):
                for u in range(n):
                    one_step(view, tuple(t[u : u + 1] for t in context), pool, strategy, u)

            batched = timed(batch, args.repeats)
            looped = timed(loop, max(1, args.repeats // 2)) * args.users / n
        samples = f", S={view.samples}" if view.latent else ""
        label = f"{dataset} {variant} (D={dim}, H={config.hidden_dim}{samples}) {strategy}"
        if view.latent and shortlist is None:
            full[view.samples] = batched
        elif view.latent:
            label += f", shortlist {shortlist}"
        verdict = "met" if batched <= 1.0 else "missed"
        print(
            f"{label:66} {batched:10.3f} {looped:21.3f} {looped / batched:7.1f}  <= 1 s {verdict}"
            + (f"  ({full[view.samples] / batched:.1f}x the whole pool)" if shortlist else "")
        )


if __name__ == "__main__":
    main()
