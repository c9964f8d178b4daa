"""One DPO optimiser step: our BTL-DPO and NP-DPO against a deep-copied reference and TRL.

Every design runs on the same base model (loaded afresh for each), the same
LoRA (r, alpha, no dropout, ``q_proj``/``v_proj`` of every block), the same
batch of P preference pairs (random word prompts and responses through the
chat template), AdamW and gradient clipping at 1:

- ``btl_dpo``: our policy (``steerable_alignment.policy``) as the DPO loop
  runs it: the reference log-probs of the pairs computed once and cached (they
  never change), chosen and rejected in one forward pass, logits only at the
  response positions;
- ``btl_dpo_ref_in_step``: the same, the reference computed in the step
  (adapters off, no_grad), as TRL does by default;
- ``np_dpo``: NP-DPO: FiLM after every block and the context encoder, each
  pair conditioned on a latent of its own context (``--context-pairs`` random
  embeddings); reference cached as in ``btl_dpo``;
- ``deepcopy_ref``: the original research code's design, a second full copy
  of the LLM (``copy.deepcopy``) as the frozen reference, the policy is the
  base model + LoRA (peft), full logits;
- ``trl``: ``trl.DPOTrainer`` (sigmoid loss, LoRA through ``peft_config``,
  no gradient checkpointing, reference with adapters off in the step),
  timed per optimiser step by a callback (its data collation excluded).

Per design: the median step time, and the peak memory above what the process
held before the design loaded its model (so the base weights count): on the
CPU the peak resident set size (Linux ``VmHWM``, reset per design), on CUDA
``torch.cuda.max_memory_allocated``. Then the ratios: each design / TRL, and
NP-DPO / BTL-DPO.

    python benchmarks/dpo_step.py [--model DIR] [--steps 5] [--batch-pairs 8] \\
        [--device cpu|cuda] [--threads 1]

``--model`` is a ``save_pretrained`` folder (default: a tiny random model built
here, to check that the script works). The ``trl`` row needs the ``bench``
extra (``pip install -e '.[bench]'``); without trl it is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ("btl_dpo", "btl_dpo_ref_in_step", "np_dpo", "deepcopy_ref", "trl")
WORDS = (
    "how do i cook rice boil water add salt wait ten minutes then serve it is safe to eat "
    "the answer yes no maybe please explain why a cat sleeps all day because it likes warm "
    "places write short poem about river tree city honest helpful true false quick slow good"
).split()
MIB = 2**20

logger = logging.getLogger("dpo_step")


@dataclass
class Setup:
    """What every design shares."""

    args: argparse.Namespace
    folder: Path
    device: torch.device
    prompts: list[str]
    chosen: list[str]
    rejected: list[str]


# -- memory -------------------------------------------------------------------------------------

_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _fixed_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold after frees (M_MMAP_THRESHOLD = -3), so
    large tensors freed by one design go back to the system instead of into its heap."""
    if _LIBC is not None:
        _LIBC.mallopt(-3, 128 * 1024)


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif _LIBC is not None:
        _LIBC.malloc_trim(0)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory above the level at :meth:`start` (bytes)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"

    def start(self) -> None:
        _release_memory(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return
        with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM to the current RSS
            handle.write("5")
        self.baseline = _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        return _status_kib("VmHWM") * 1024 - self.baseline


# -- data ---------------------------------------------------------------------------------------


def _texts(count: int, words: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=words)) for _ in range(count)]


def _load(setup: Setup):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(setup.folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(setup.folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(setup.device), tokenizer


def _sequences(setup: Setup, tokenizer):
    """Chosen and rejected :class:`SequenceBatch` of the P pairs, on the device."""
    from steerable_alignment.policy import tokenise_pairs
    from steerable_alignment.policy.pairs import pair_sequences

    count = len(setup.prompts)
    pairs, _ = tokenise_pairs(
        tokenizer, setup.prompts, setup.chosen, setup.rejected, list(range(count)), 100_000
    )
    rows = torch.arange(count)
    chosen = pair_sequences(pairs, rows, torch.zeros_like(rows)).to(setup.device)
    rejected = pair_sequences(pairs, rows, torch.ones_like(rows)).to(setup.device)
    return chosen, rejected


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- designs: each returns a step function, after any one-off work ------------------------------


def _optimiser_step(params: list[torch.nn.Parameter], optimiser, loss: torch.Tensor) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimiser.step()


def _ours(setup: Setup, policy_type: str, reference_in_step: bool) -> Callable[[], None]:
    from steerable_alignment.policy import PolicyConfig, PolicyModel, dpo_loss

    args = setup.args
    model, tokenizer = _load(setup)
    chosen, rejected = _sequences(setup, tokenizer)
    config = PolicyConfig.from_params(
        {
            "type": policy_type,
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "lora_dropout": 0.0,
            "layers_to_transform": "all",
            "film_layers": "all",
            "embedding_dim": args.embedding_dim,
        }
    )
    torch.manual_seed(0)
    policy = PolicyModel(config, model).to(setup.device)
    params = list(policy.trainable_parameters().values())
    optimiser = torch.optim.AdamW(params, lr=args.lr)
    count = len(chosen)
    g = torch.Generator().manual_seed(0)
    context = torch.randn(count, args.context_pairs, 2, args.embedding_dim, generator=g)
    context = context.to(setup.device)  # (P, N, 2, D)
    context_choices = torch.randint(0, 2, (count, args.context_pairs), generator=g)
    context_choices = context_choices.to(setup.device)  # (P, N)
    context_mask = torch.ones(count, args.context_pairs, dtype=torch.bool, device=setup.device)

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(setup.device):
            return policy.reference_logps(chosen), policy.reference_logps(rejected)

    cached = None if reference_in_step else reference()  # the loop caches them once per pair

    def step() -> None:
        ref_chosen, ref_rejected = reference() if cached is None else cached
        with _autocast(setup.device):
            z = None
            if config.uses_context:
                z = policy.encode_context(context, context_choices, context_mask)  # (P, Z)
            policy_chosen, policy_rejected = policy.pair_logps(chosen, rejected, z)
            out = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, args.beta)
            loss = out.loss.float().mean()
        _optimiser_step(params, optimiser, loss)

    return step


def _deepcopy_reference(setup: Setup) -> Callable[[], None]:
    from peft import LoraConfig, get_peft_model

    from steerable_alignment.policy import dpo_loss, sequence_logps
    from steerable_alignment.policy.pairs import SequenceBatch

    args = setup.args
    model, tokenizer = _load(setup)
    chosen, rejected = _sequences(setup, tokenizer)
    both = SequenceBatch.cat([chosen, rejected], pad_token_id=tokenizer.pad_token_id)  # (2P, L)
    reference = copy.deepcopy(model).eval().requires_grad_(False)  # the second copy
    torch.manual_seed(0)
    policy = get_peft_model(model, _lora_config(LoraConfig, args))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=args.lr)
    count = len(chosen)

    def logps(lm) -> torch.Tensor:
        output = lm(input_ids=both.input_ids, attention_mask=both.attention_mask)
        return sequence_logps(output, both.input_ids, both.response_start, both.response_len)

    def step() -> None:
        with _autocast(setup.device):
            with torch.no_grad():
                ref = logps(reference)  # (2P,)
            pol = logps(policy)  # (2P,)
            out = dpo_loss(pol[:count], pol[count:], ref[:count], ref[count:], args.beta)
            loss = out.loss.float().mean()
        _optimiser_step(params, optimiser, loss)

    return step


def _lora_config(lora_class, args: argparse.Namespace):
    return lora_class(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )


def _trl(setup: Setup, memory: PeakMemory) -> list[float] | None:
    """TRL's DPOTrainer for warm-up + steps optimiser steps; the timed steps' seconds."""
    try:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError as error:
        logger.warning("trl row skipped (%s): pip install -e '.[bench]'", error)
        return None
    args = setup.args
    total = args.warmup + args.steps
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in zip(setup.prompts, setup.chosen, setup.rejected, strict=True)
    ]
    dataset = Dataset.from_list(rows * total)  # P pairs per step, the same P pairs every step

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, *_, **__) -> None:
            _sync(setup.device)
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__) -> None:
            _sync(setup.device)
            self.seconds.append(time.perf_counter() - self.started)

    timer = StepTimer()
    memory.start()
    model, tokenizer = _load(setup)
    with tempfile.TemporaryDirectory(prefix="dpo-step-trl-") as output_dir:
        config = DPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=len(rows),
            max_steps=total,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            beta=args.beta,
            max_grad_norm=1.0,
            max_length=None,
            gradient_checkpointing=False,
            bf16=setup.device.type == "cuda",
            use_cpu=setup.device.type == "cpu",
            report_to=[],
            logging_steps=10**6,
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        torch.manual_seed(0)
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=_lora_config(LoraConfig, args),
            callbacks=[timer],
        )
        trainer.train()
    return timer.seconds[args.warmup :]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(setup: Setup, build: Callable[[], Callable[[], None]], memory: PeakMemory) -> list[float]:
    memory.start()
    step = build()
    for _ in range(setup.args.warmup):
        step()
    seconds = []
    for _ in range(setup.args.steps):
        _sync(setup.device)
        started = time.perf_counter()
        step()
        _sync(setup.device)
        seconds.append(time.perf_counter() - started)
    return seconds


# -- main ---------------------------------------------------------------------------------------


def _tiny_model(folder: Path) -> Path:
    """A tiny random 2-block Qwen2 and its tokenizer (tests/models/tiny_causal_lm.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.models.tiny_causal_lm import save_tiny_causal_lm

    return save_tiny_causal_lm(folder)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a save_pretrained folder (default: a tiny random model)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimiser steps per design")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-pairs", type=int, default=8, help="P, preference pairs per step")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated subset")
    parser.add_argument("--prompt-words", type=int, default=13)
    parser.add_argument("--response-words", type=int, default=50)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32.0)
    parser.add_argument("--context-pairs", type=int, default=5, help="N, NP-DPO's context")
    parser.add_argument("--embedding-dim", type=int, default=384, help="context embeddings' D")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-5)
    args = parser.parse_args()
    unknown = sorted(set(args.designs.split(",")) - set(DESIGNS))
    if unknown:
        parser.error(f"unknown design(s) {unknown}; choose from {list(DESIGNS)}")
    return args


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parse()
    torch.set_num_threads(args.threads)
    _fixed_mmap_threshold()
    device = torch.device(args.device)
    rng = random.Random(0)
    count = args.batch_pairs
    with tempfile.TemporaryDirectory(prefix="dpo-step-") as tmp:
        folder = Path(args.model) if args.model else _tiny_model(Path(tmp) / "tiny")
        setup = Setup(
            args,
            folder,
            device,
            _texts(count, args.prompt_words, rng),
            _texts(count, args.response_words, rng),
            _texts(count, args.response_words, rng),
        )
        _report_setup(setup)
        memory = PeakMemory(device)
        _warm_up(setup, Path(tmp) / "warm_up", memory)
        builders = {
            "btl_dpo": lambda: _ours(setup, "btl_dpo", reference_in_step=False),
            "btl_dpo_ref_in_step": lambda: _ours(setup, "btl_dpo", reference_in_step=True),
            "np_dpo": lambda: _ours(setup, "np_dpo", reference_in_step=False),
            "deepcopy_ref": lambda: _deepcopy_reference(setup),
        }
        results: dict[str, tuple[float, float]] = {}
        for name in args.designs.split(","):
            if name == "trl":
                seconds = _trl(setup, memory)
                if seconds is None:
                    continue
            else:
                seconds = _time(setup, builders[name], memory)
            results[name] = (statistics.median(seconds), memory.peak() / MIB)
            _release_memory(device)
    _report(results, memory.kind)


def _warm_up(setup: Setup, folder: Path, memory: PeakMemory) -> None:
    """One untimed step of our designs and TRL's on a 1-block copy of the model's config, so
    that no design's peak memory holds one-time costs (library code, thread pools, CUDA
    context and workspaces) that the first design run would pay."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(setup.folder)
    config.num_hidden_layers = 1
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:1]
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(setup.folder).save_pretrained(folder)
    args = argparse.Namespace(**{**vars(setup.args), "steps": 1, "warmup": 0})
    warm = Setup(args, folder, setup.device, setup.prompts, setup.chosen, setup.rejected)
    for policy_type in ("btl_dpo", "np_dpo"):
        _time(warm, lambda t=policy_type: _ours(warm, t, reference_in_step=False), memory)
    if "trl" in args.designs.split(","):
        _trl(warm, memory)
    _release_memory(setup.device)


def _report_setup(setup: Setup) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from steerable_alignment.policy import pair_lengths

    args = setup.args
    config = AutoConfig.from_pretrained(setup.folder)
    tokenizer = AutoTokenizer.from_pretrained(setup.folder)
    lengths = pair_lengths(tokenizer, setup.prompts, setup.chosen, setup.rejected)
    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    print(f"model: {args.model or 'tiny random Qwen2 (tests/models/tiny_causal_lm.py)'}")
    print(
        f"  {config.model_type}, {config.num_hidden_layers} blocks, hidden {config.hidden_size}, "
        f"vocab {config.vocab_size}"
    )
    print(
        f"device {setup.device}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, trl {trl_version}"
    )
    print(
        f"batch: {args.batch_pairs} pairs = {2 * args.batch_pairs} sequences, "
        f"{lengths.mean():.0f} tokens each on average (max {lengths.max()}); LoRA r {args.lora_r} "
        f"alpha {args.lora_alpha:g} on q_proj/v_proj of every block; NP-DPO context "
        f"{args.context_pairs} pairs x D {args.embedding_dim}; {args.warmup} warm-up + "
        f"{args.steps} timed steps"
    )


def _report(results: dict[str, tuple[float, float]], memory_kind: str) -> None:
    trl_time, trl_memory = results.get("trl", (None, None))
    print(f"\n{'design':<22}{'step s':>10}{'/ trl':>8}{'peak MiB':>11}{'/ trl':>8}")
    for name, (seconds, mib) in results.items():
        time_ratio = f"{seconds / trl_time:.2f}" if trl_time else "-"
        memory_ratio = f"{mib / trl_memory:.2f}" if trl_memory else "-"
        print(f"{name:<22}{seconds:>10.4f}{time_ratio:>8}{mib:>11.1f}{memory_ratio:>8}")
    print(f"(median step; peak memory: {memory_kind} above the level before loading the model)")
    if "np_dpo" in results and "btl_dpo" in results:
        (np_time, np_memory), (btl_time, btl_memory) = results["np_dpo"], results["btl_dpo"]
        print(
            f"np_dpo / btl_dpo: step {np_time / btl_time:.2f}, peak memory "
            f"{np_memory / btl_memory:.2f}"
        )
    if "deepcopy_ref" in results and "btl_dpo_ref_in_step" in results:
        (copy_time, copy_memory) = results["deepcopy_ref"]
        (ours_time, ours_memory) = results["btl_dpo_ref_in_step"]
        print(
            f"deepcopy_ref / btl_dpo_ref_in_step: step {copy_time / ours_time:.2f}, peak memory "
            f"{copy_memory / ours_memory:.2f}"
        )


if __name__ == "__main__":
    main()
