"""Steering gap on the validation split: how many prompts the test measurement needs.

Runs the ``evaluation`` pipeline's generation nodes on the trained artefacts,
with the simulated users drawn from the *validation* split (the test split
is never read), for one or more sampling settings. For each, it prints the
10-pair steering gap of NP-DPO in both directions (and the same gap between
the two per-objective BTL-DPO policies, for scale), with its standard error
over prompts and the per-prompt standard deviation, from which the number of
test prompts needed for a given standard error follows (s.e. = s.d./√P).
Every answer and its rewards are written to ``--out`` (one parquet file per
setting) for reading.

Needs the trained policies and reward models on disk (``make run``, or
``kedro run --pipelines synthetic_data,ultrafeedback,embedding,reward_modelling,dpo``).

    python benchmarks/steering_validation.py [--prompts 96] [--context 10] \\
        [--setting sampled='{}' --setting greedy='{"temperature": 0}'] [--out data/09_tuning]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("helpfulness", "honesty")


def _setting(text: str) -> tuple[str, dict]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    try:
        sampling = json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"{name}: not JSON ({err}): {value!r}") from err
    if not isinstance(sampling, dict):
        raise argparse.ArgumentTypeError(f"{name}: expected a JSON object of sampling keys")
    return name, sampling


def _gap(scores, model_k: str, model_j: str, k: str, user_k: str, user_j: str, size: int):
    """Per-prompt objective-k reward of (model_k, user_k) minus (model_j, user_j)."""
    from steerable_alignment.evaluation.generation import _paired_diff

    first = {"model": model_k, "user": user_k, "num_context": size}
    second = {"model": model_j, "user": user_j, "num_context": size}
    return _paired_diff(scores, first, second, f"reward_{k}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--dataset", default="hh")
    parser.add_argument("--setting", type=_setting, action="append", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "data/09_tuning")
    parser.add_argument("--env", default=None)
    args = parser.parse_args()
    settings = dict(args.setting or [("sampled", {})])
    logging.basicConfig(level=logging.WARNING)

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from steerable_alignment.pipelines.evaluation.generation_nodes import (
        generate_answers_for_users,
        make_generation_users,
        score_answers,
    )

    name = args.dataset
    models = ["nppl_mixed", *(f"btl_{k}" for k in OBJECTIVES)]
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=args.env) as session:
        catalog = session.load_context().catalog
        generation = catalog.load(f"params:generation.{name}")
        data = catalog.load(f"params:dpo.{name}.data")
        embedding = catalog.load(f"params:embedding.{name}")
        pairs = catalog.load(f"{name}.pairs")
        features = catalog.load(f"{name}.features")
        base = catalog.load("base_policy")
        policies = {m: catalog.load(f"{name}.{m}.policy") for m in models}
        reward_models = {
            f"reward_model_{k}": catalog.load(f"{name}.btl_{k}.reward_model") for k in OBJECTIVES
        }
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{name}, validation split, {args.prompts} prompts, {args.context} context pairs")
    for label, sampling in settings.items():
        params = copy.deepcopy(generation)
        params.update(
            split="validation",
            num_prompts=args.prompts,
            context_sizes=[args.context],
            progress=False,
        )
        params["sampling"].update(sampling)
        started = time.perf_counter()
        users = make_generation_users(pairs, features, data, params)
        answers = {
            m: generate_answers_for_users(base, p, pairs, features, users, data, params)
            for m, p in policies.items()
        }
        scores = score_answers(
            pairs, features, users, data, embedding, params, **answers, **reward_models
        )
        seconds = time.perf_counter() - started
        scores.to_parquet(args.out / f"steering_validation_{label}.parquet")
        print(f"\n[{label}] sampling {params['sampling']}  ({seconds:.0f} s)")
        print(f"{'gap':<52}{'mean':>8}{'s.e.':>8}{'s.d.':>8}{'n':>5}")
        for k, j in (OBJECTIVES, OBJECTIVES[::-1]):
            rows = {
                f"NP-DPO {k} reward, {k}-{j} user": _gap(
                    scores, "nppl_mixed", "nppl_mixed", k, k, j, args.context
                ),
                f"BTL-DPO {k} reward, {k}-{j} policy": _gap(
                    scores, f"btl_{k}", f"btl_{j}", k, k, k, args.context
                ),
            }
            for title, diff in rows.items():
                sd = float(diff.std())  # unbiased (n - 1)
                print(
                    f"{title:<52}{diff.mean():8.2f}{sd / math.sqrt(len(diff)):8.2f}"
                    f"{sd:8.2f}{len(diff):5d}"
                )


if __name__ == "__main__":
    main()
