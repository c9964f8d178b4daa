"""Generation throughput: batched vs one prompt at a time, same policy, same prompts.

The NP-DPO policy (LoRA + FiLM around the base model, each prompt with its
own latent z, as the ``evaluation`` pipeline generates) answers P prompts of
the generated HH data with exactly ``--new-tokens`` new tokens each
(``min_new_tokens`` = ``max_new_tokens``, greedy, so both ways do the same
work), once in batches of ``--batch-size`` left-padded prompts and once one
prompt at a time. Printed: new tokens per second of each, and the ratio,
measured side by side in one run (``--repeats`` runs of each, median).

    python benchmarks/generation.py [--model data/06_models/base_policy] \\
        [--prompts 16] [--batch-size 16] [--new-tokens 48] [--repeats 1] [--threads 2]

``--model`` is a ``save_pretrained`` folder (default: the ``dpo`` pipeline's
converted SmolLM2-135M-Instruct; run ``kedro run --pipeline dpo`` or
``--to-outputs base_policy`` first).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FALLBACK_PROMPTS = (
    "How do I cook rice?",
    "Why does a cat sleep all day?",
    "Write a short poem about a river.",
    "How can I fix a bug in my Python function?",
)


def _prompts(count: int) -> list[str]:
    """Distinct prompts of the generated HH pairs (or a few fixed ones if absent)."""
    path = ROOT / "data/03_primary/hh/pairs.parquet"
    if path.is_file():
        import pandas as pd

        prompts = pd.read_parquet(path, columns=["prompt"])["prompt"].drop_duplicates()
        return prompts.head(count).tolist()
    return [FALLBACK_PROMPTS[i % len(FALLBACK_PROMPTS)] for i in range(count)]


def _policy(model_dir: Path):
    from steerable_alignment.policy import PolicyConfig, PolicyModel, load_base_policy

    base, tokenizer = load_base_policy(model_dir)
    config = PolicyConfig.from_params(
        {
            "type": "np_dpo",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "target_modules": ["q_proj", "v_proj"],
            "layers_to_transform": "top_4",
            "film_layers": "top_4",
            "embedding_dim": 384,
        }
    )
    torch.manual_seed(0)
    return PolicyModel(config, base).eval(), tokenizer


def _time(policy, tokenizer, prompts, z, batch_size: int, new_tokens: int) -> tuple[float, int]:
    """Seconds and new tokens to answer every prompt in batches of ``batch_size``."""
    from steerable_alignment.evaluation.generation import prompt_batch

    generated = 0
    started = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        ids, mask = prompt_batch(tokenizer, prompts[start : start + batch_size])
        out = policy.generate(
            ids,
            mask,
            z=z[start : start + batch_size],
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        generated += (out.shape[1] - ids.shape[1]) * out.shape[0]
    return time.perf_counter() - started, generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "data/06_models/base_policy")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (args.model / "config.json").is_file():
        sys.stderr.write(
            f"No save_pretrained model at {args.model}: run `kedro run --pipeline dpo "
            "--to-outputs base_policy` first, or pass --model\n"
        )
        return 2
    torch.set_num_threads(args.threads)
    policy, tokenizer = _policy(args.model)
    prompts = _prompts(args.prompts)
    z = torch.randn(
        len(prompts), policy.config.latent_dim, generator=torch.Generator().manual_seed(0)
    )
    _time(policy, tokenizer, prompts[:2], z, 2, 4)  # warm-up
    rates: dict[str, list[float]] = {"batched": [], "one at a time": []}
    for _ in range(args.repeats):
        for name, size in (("batched", args.batch_size), ("one at a time", 1)):
            seconds, tokens = _time(policy, tokenizer, prompts, z, size, args.new_tokens)
            rates[name].append(tokens / seconds)
    batched = statistics.median(rates["batched"])
    single = statistics.median(rates["one at a time"])
    lines = [
        f"model {args.model.name}, {len(prompts)} prompts x {args.new_tokens} new tokens, "
        f"{args.threads} threads, median of {args.repeats} run(s)",
        f"batched ({args.batch_size} prompts per call): {batched:8.1f} new tokens/s",
        f"one prompt at a time:                 {single:8.1f} new tokens/s",
        f"batched / one at a time: {batched / single:.2f}x",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
