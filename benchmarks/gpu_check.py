"""The device check for the first session with a GPU: real-size models, no hub, ~10 minutes.

Builds randomly initialised models of the real architectures and sizes from
their configurations (no download: the GPU machine has no hub) and prints:

1. **embedding**: a ``LlamaModel`` of Meta-Llama-3-8B's configuration in
   bf16, last-token pooling as the ``embedding`` pipeline does, on batches of
   ``batch x length`` random tokens: tokens/s and the model FLOPs
   utilisation (MFU: ``(2 N + 4 n_layers L h) x tokens/s`` over the card's
   bf16 dense peak, ``--peak-tflops``, 989 for H100/H200 SXM);
2. **bf16 vs fp32**: the mean log-prob per token of a few sequences under a
   Qwen2.5-1.5B-configured causal LM, in float32 and under bf16 autocast
   (the ``gpu`` environment's setting): the largest difference, against the
   tolerance ``--tolerance`` (nats per token);
3. **DPO step**: ``benchmarks/dpo_step.py`` on that model (saved with
   ``save_pretrained`` with a ChatML tokenizer built here) at the gpu
   environment's micro-batch (11 pairs = one episode of 11 targets, as
   ``grad_accum_steps: 2`` splits a step; the memory plan's 53.6 GB is for
   it), LoRA r 128 on ``q_proj``/``v_proj`` of every block: median step
   time and peak memory of
   our BTL-DPO and NP-DPO and of TRL's ``DPOTrainer`` (when trl is installed:
   ``pip install -e '.[bench]'``), with the ratios.

Output (one block per part; the numbers vary)::

    device cuda (NVIDIA H200), torch 2.x, size real, peak 989 TFLOP/s
    [embedding] llama 32 blocks, hidden 4096, 8.03B params, bf16: 4 batches of 32 x 1024
    [embedding] 51234 tokens/s, MFU 0.42
    [bf16] 4 sequences of 256 tokens: max |mean logp fp32 - bf16| 0.0123 nats/token
      (tolerance 0.05): ok   <- one line in the output
    [dpo] <benchmarks/dpo_step.py's table>

``--size tiny`` runs the same code on 2-block models of the same
architectures (a test runs it on the CPU, so the script is known to work
before a device is lent).

    python benchmarks/gpu_check.py [--size real|tiny] [--device auto] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/models/tiny_causal_lm.py: the ChatML tokenizer


def _real(name: str, **extra: object) -> dict:
    """A real model's config.json size fields (the planner's table) plus ``extra``."""
    from steerable_alignment.runtime.memory import KNOWN_CONFIGS

    return {**{k: v for k, v in KNOWN_CONFIGS[name].items() if k != "num_parameters"}, **extra}


_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 512,
}
#: Meta-Llama-3-8B and Qwen2.5-1.5B-Instruct at their real sizes
#: (steerable_alignment.runtime.memory.KNOWN_CONFIGS), and 2-block stand-ins.
SIZES = {
    "real": {
        "embedder": _real(
            "meta-llama/Meta-Llama-3-8B", max_position_embeddings=8192, rope_theta=500000.0
        ),
        "policy": _real(
            "Qwen/Qwen2.5-1.5B-Instruct",
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
        "embed": {"batch": 32, "length": 1024, "batches": 4},
        "bf16": {"sequences": 4, "length": 256},
        "dpo": [
            "--batch-pairs",
            "11",
            "--prompt-words",
            "40",
            "--response-words",
            "200",
            "--lora-r",
            "128",
            "--lora-alpha",
            "256",
            "--embedding-dim",
            "4096",
            "--steps",
            "3",
            "--warmup",
            "1",
        ],
    },
    "tiny": {
        "embedder": _TINY,
        "policy": {**_TINY, "tie_word_embeddings": True},
        "embed": {"batch": 2, "length": 32, "batches": 2},
        "bf16": {"sequences": 2, "length": 16},
        "dpo": [
            "--batch-pairs",
            "2",
            "--prompt-words",
            "5",
            "--response-words",
            "10",
            "--lora-r",
            "4",
            "--lora-alpha",
            "8",
            "--embedding-dim",
            "16",
            "--steps",
            "1",
            "--warmup",
            "0",
        ],
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return (
        torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
    )


def check_embedding(size: dict, device: torch.device, peak_tflops: float) -> float:
    """Embedding throughput of a random Llama in bf16; returns tokens/s."""
    from transformers import LlamaConfig, LlamaModel

    from steerable_alignment.embedding.pooling import pool

    config = LlamaConfig(**size["embedder"])
    with torch.device(device):
        model = LlamaModel(config).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    non_embedding = params - model.embed_tokens.weight.numel()
    shape = size["embed"]
    batch, length = shape["batch"], shape["length"]
    print(
        f"[embedding] llama {config.num_hidden_layers} blocks, hidden {config.hidden_size}, "
        f"{params / 1e9:.2f}B params, bf16: {shape['batches']} batches of {batch} x {length}"
    )
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=gen).to(device)
    mask = torch.ones_like(ids)
    mask[: batch // 2, length // 2 :] = 0  # right padding on half the rows, as real batches have
    with torch.no_grad():
        model(input_ids=ids[:1, :8], attention_mask=mask[:1, :8])  # warm-up (kernels, allocator)
        _sync(device)
        started = time.perf_counter()
        for _ in range(shape["batches"]):
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
            pooled = pool(hidden, mask, "last_token")  # (B, H)
        _sync(device)
        seconds = time.perf_counter() - started
    assert pooled.shape == (batch, config.hidden_size) and torch.isfinite(pooled.float()).all()
    tokens = shape["batches"] * batch * length
    rate = tokens / seconds
    flops_per_token = 2 * non_embedding + 4 * config.num_hidden_layers * length * config.hidden_size
    mfu = rate * flops_per_token / (peak_tflops * 1e12)
    print(f"[embedding] {rate:.0f} tokens/s, MFU {mfu:.2f}")
    del model
    return rate


def check_bf16(size: dict, device: torch.device, tolerance: float) -> float:
    """Largest |mean log-prob per token, fp32 - bf16 autocast| over a few sequences."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**size["policy"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).float().eval()
    shape = size["bf16"]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (shape["sequences"], shape["length"]), generator=gen)
    ids = ids.to(device)
    means = []
    with torch.no_grad():
        for autocast in (False, True):
            with _autocast(device, autocast):
                logits = model(input_ids=ids).logits[:, :-1].float()  # (S, L-1, V)
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            means.append(logp.mean(-1))  # (S,)
    difference = float((means[0] - means[1]).abs().max())
    verdict = "ok" if difference <= tolerance else "OVER THE TOLERANCE"
    print(
        f"[bf16] {shape['sequences']} sequences of {shape['length']} tokens: max |mean logp "
        f"fp32 - bf16| {difference:.4f} nats/token (tolerance {tolerance}): {verdict}"
    )
    del model
    return difference


def check_dpo_step(size: dict, device: torch.device, folder: Path) -> int:
    """benchmarks/dpo_step.py on a random Qwen2 of the size; returns its exit status."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.models.tiny_causal_lm import chatml_tokenizer

    tokenizer = chatml_tokenizer(vocab_size=400)
    config = Qwen2Config(
        **size["policy"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    designs = "btl_dpo,np_dpo"
    try:
        import trl  # noqa: F401

        designs += ",trl"
    except ImportError:
        print("[dpo] trl is not installed (pip install -e '.[bench]'): its row is skipped")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "dpo_step.py"),
        "--model",
        str(folder),
        "--device",
        str(device),
        "--designs",
        designs,
        *size["dpo"],
    ]
    print(f"[dpo] {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        print(f"[dpo] {line}")
    if result.returncode:
        print(f"[dpo] failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="real")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak")
    parser.add_argument("--tolerance", type=float, default=0.05, help="nats per token")
    parser.add_argument("--parts", default="embedding,bf16,dpo", help="comma-separated subset")
    args = parser.parse_args()
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA")
    device = torch.device(name)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"device {device}{gpu}, torch {torch.__version__}, size {args.size}, "
        f"peak {args.peak_tflops:g} TFLOP/s"
    )
    size = SIZES[args.size]
    parts = args.parts.split(",")
    status = 0
    if "embedding" in parts:
        check_embedding(size, device, args.peak_tflops)
    if "bf16" in parts:
        status |= check_bf16(size, device, args.tolerance) > args.tolerance
    if "dpo" in parts:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            status |= check_dpo_step(size, device, Path(tmp)) != 0
    sys.exit(int(status))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
