"""Memory planner: the bytes each cached artefact and each training step will need.

Reads an environment's parameters (``embedding``, ``dpo``) and the model
configurations (``config.json`` values; the real models' are in
:data:`KNOWN_CONFIGS`, so no hub is needed) and states, for given data sizes,
what every large tensor takes on the GPU and in host memory. An estimate,
not a measurement; its assumptions, per row:

- sequences are ``max_length`` tokens long (batches pad to their longest, so
  this is the worst case); a response is ``response_share`` of a sequence;
- a decoder block keeps, per token, about ``12 h + 4 i + 2 kv`` values for
  the backward pass in the autocast dtype (the norms' inputs and outputs,
  q/k/v, the attention output, the residuals, the MLP's gate, up, activation
  and product; LoRA's dropout copies of its inputs and FiLM's output), for
  ``h`` hidden size, ``i`` MLP size, ``kv`` the key/value width;
- the response logits are float32 with the log-softmax and its gradient
  beside them (3 copies of ``tokens x vocabulary``);
- trainable parameters (LoRA, FiLM, the context encoder) are float32 with a
  gradient and two AdamW moments (16 bytes each); the frozen base weights
  are in the base ``dtype``.

Framework-free (no Kedro, no torch). ``benchmarks/memory_plan.py`` prints
the table for an environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: config.json values of the real models (public configurations).
KNOWN_CONFIGS: dict[str, dict[str, int]] = {
    "Qwen/Qwen2.5-1.5B-Instruct": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "num_parameters": 1_543_714_304,
    },
    "meta-llama/Meta-Llama-3-8B": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "num_parameters": 8_030_261_248,
    },
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9


@dataclass(frozen=True)
class PlanRow:
    """One tensor (or group) and where it lives.

    Attributes:
        what: the artefact or step part.
        where: ``gpu`` or ``host``.
        bytes: its size.
        how: the arithmetic, in words.
    """

    what: str
    where: str
    bytes: float
    how: str


def _get(params: Mapping[str, Any], path: str, default: Any = None) -> Any:
    value: Any = params
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    return value


def model_config(name: str, given: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The size fields of a model's configuration: ``given`` (a config.json) or a known one.

    Raises:
        KeyError: ``name`` is not in :data:`KNOWN_CONFIGS` and no config was given.
    """
    if given is not None:
        config = dict(given)
    elif name in KNOWN_CONFIGS:
        config = dict(KNOWN_CONFIGS[name])
    else:
        raise KeyError(
            f"no configuration known for {name!r}: pass its config.json values "
            f"(known: {sorted(KNOWN_CONFIGS)})"
        )
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    if "num_parameters" not in config:
        h, i, n, v = (
            config[k]
            for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
        )
        kv = h * config["num_key_value_heads"] // config["num_attention_heads"]
        config["num_parameters"] = n * (2 * h * h + 2 * h * kv + 3 * h * i) + v * h
    return config


def activation_bytes_per_token_block(config: Mapping[str, int], dtype_bytes: int) -> int:
    """Saved activations of one token in one trained decoder block (module docstring)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    kv = h * config["num_key_value_heads"] // config["num_attention_heads"]
    return dtype_bytes * (12 * h + 4 * i + 2 * kv)


def _blocks(spec: Any, num_layers: int) -> int:
    if spec in (None, "all"):
        return num_layers
    if isinstance(spec, str) and spec.startswith("top_"):
        return min(int(spec.removeprefix("top_")), num_layers)
    return len(list(spec))


def lora_parameters(policy: Mapping[str, Any], config: Mapping[str, int]) -> int:
    """LoRA parameters of a policy: ``r (in + out)`` per adapted linear layer."""
    h, i = config["hidden_size"], config["intermediate_size"]
    kv = h * config["num_key_value_heads"] // config["num_attention_heads"]
    shapes = {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    r = int(policy.get("lora_r", 16))
    per_block = sum(r * sum(shapes[m]) for m in policy.get("target_modules", ("q_proj", "v_proj")))
    return per_block * _blocks(
        policy.get("layers_to_transform", "all"), config["num_hidden_layers"]
    )


def context_parameters(policy: Mapping[str, Any], config: Mapping[str, int], dim: int) -> int:
    """FiLM MLPs and the context encoder of an NP-DPO policy (0 for BTL-DPO)."""
    if policy.get("type", "np_dpo") != "np_dpo":
        return 0
    z, f = int(policy.get("latent_dim", 64)), int(policy.get("film_hidden_dim", 128))
    e, layers = int(policy.get("encoder_hidden_dim", 256)), int(policy.get("encoder_num_layers", 2))
    film = _blocks(policy.get("film_layers", "all"), config["num_hidden_layers"])
    film_params = film * (z * f + f * 2 * config["hidden_size"])
    encoder = 2 * dim * e + layers * 12 * e * e + e * z * 2
    return film_params + encoder


def plan(
    params: Mapping[str, Any],
    dataset: str,
    num_pairs: int,
    policy_model: Mapping[str, int] | None = None,
    embedding_model: Mapping[str, int] | None = None,
    variant: str = "nppl_mixed",
    response_share: float = 0.75,
    processes: int = 1,
) -> list[PlanRow]:
    """The memory rows of one data set's embedding and DPO steps at ``num_pairs`` pairs.

    Args:
        params: the environment's parameters (``embedding``, ``dpo``).
        dataset: e.g. ``hh``.
        num_pairs: pairs after filtering (the real HH: ~250k before).
        policy_model, embedding_model: config.json values; default the known
            configuration of the model the parameters name.
        variant: the DPO variant whose step is sized (NP-DPO is the largest).
        response_share: the response's share of a sequence's tokens.
        processes: data-parallel processes (each takes its share of a step).
    """
    rows: list[PlanRow] = []
    emb = _get(params, f"embedding.{dataset}", {})
    emb_name = emb.get("model", "")
    emb_cfg = model_config(emb_name, embedding_model)
    dim = emb_cfg["hidden_size"]
    out_bytes = DTYPE_BYTES[emb.get("output_dtype", "float32")]
    rows.append(
        PlanRow(
            "features (stored)",
            "host",
            num_pairs * 2 * dim * out_bytes,
            f"{num_pairs:,} pairs x 2 x {dim} x {out_bytes} B ({emb.get('output_dtype')})",
        )
    )
    rows.append(
        PlanRow(
            "features (float32, reward-model training)",
            "gpu",
            num_pairs * 2 * dim * 4,
            f"{num_pairs:,} x 2 x {dim} x 4 B",
        )
    )
    emb_dtype = DTYPE_BYTES[emb.get("dtype", "float32")]
    batch_tokens = int(emb.get("batch_tokens", 2048))
    work = batch_tokens * (4 * dim + 2 * emb_cfg["intermediate_size"]) * emb_dtype
    rows.append(
        PlanRow(
            "embedding step: weights + one batch",
            "gpu",
            emb_cfg["num_parameters"] * emb_dtype + work,
            f"{emb_cfg['num_parameters'] / 1e9:.2f}B params x {emb_dtype} B + {batch_tokens} "
            f"tokens x (4 h + 2 i) x {emb_dtype} B (inference: one block's tensors at a time)",
        )
    )

    dpo = _get(params, f"dpo.{dataset}", {})
    base_name = _get(params, "dpo.base.source", "")
    cfg = model_config(base_name, policy_model)
    base_bytes = DTYPE_BYTES[_get(params, "dpo.base.dtype", "float32")]
    max_length = int(_get(dpo, "tokenise.max_length", 512))
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    rows.append(
        PlanRow(
            "policy pairs (token ids + mask, int64)",
            "host",
            num_pairs * 2 * max_length * 8 * 2,
            f"{num_pairs:,} x 2 x {max_length} x 8 B x 2",
        )
    )
    rows.append(
        PlanRow("reference log-probs", "host", num_pairs * 2 * 4, f"{num_pairs:,} x 2 x 4 B")
    )
    trained_blocks = _get(dpo, "reference.trained_blocks", "all")
    if trained_blocks != "all":
        rows.append(
            PlanRow(
                "prefix states (float32)",
                "host",
                num_pairs * 2 * max_length * h * 4,
                f"{num_pairs:,} x 2 x {max_length} x {h} x 4 B "
                f"(refused over reference.max_prefix_state_gib)",
            )
        )
    policy = _get(dpo, f"{variant}.policy", {})
    training = _get(dpo, f"{variant}.training", {})
    train_dtype = DTYPE_BYTES[training.get("dtype", "float32")]
    accumulation = int(training.get("grad_accum_steps", 1))
    sequences = (
        int(training.get("batch_episodes", 2)) * int(training.get("num_targets", 11)) * 2
    ) // (accumulation * processes)
    adapted = min(
        _blocks(policy.get("layers_to_transform", "all"), layers),
        layers if trained_blocks == "all" else _blocks(trained_blocks, layers),
    )
    # gradients flow from the head down to the lowest adapted block: those blocks keep activations
    per_token = activation_bytes_per_token_block(cfg, train_dtype)
    trainable = lora_parameters(policy, cfg) + context_parameters(policy, cfg, dim)
    step = [
        PlanRow(
            "DPO step: frozen base weights",
            "gpu",
            cfg["num_parameters"] * base_bytes,
            f"{cfg['num_parameters'] / 1e9:.2f}B x {base_bytes} B",
        ),
        PlanRow(
            "DPO step: trainable params + grads + AdamW",
            "gpu",
            trainable * 16,
            f"{trainable / 1e6:.1f}M x 16 B",
        ),
        PlanRow(
            "DPO step: block activations (one micro-batch)",
            "gpu",
            sequences * max_length * adapted * per_token,
            f"{sequences} sequences x {max_length} tokens x {adapted} blocks x "
            f"{per_token / 1024:.0f} KiB (accumulation {accumulation}, {processes} process(es))",
        ),
        PlanRow(
            "DPO step: response logits (float32, x3)",
            "gpu",
            sequences * max_length * response_share * vocab * 4 * 3,
            f"{sequences} x {int(max_length * response_share)} response tokens x {vocab} x 4 B x 3",
        ),
    ]
    rows += step
    rows.append(
        PlanRow(
            "DPO step: total",
            "gpu",
            sum(r.bytes for r in step),
            "the four rows above (before the CUDA context and allocator slack, ~1-3 GB)",
        )
    )
    return rows


def dpo_step_bytes(rows: list[PlanRow]) -> float:
    """The DPO step's total from :func:`plan`'s rows."""
    return next(r.bytes for r in rows if r.what == "DPO step: total")


def format_plan(rows: list[PlanRow]) -> str:
    """The rows as a Markdown table (GB = 1e9 bytes)."""
    lines = ["| what | where | GB | arithmetic |", "|---|---|---:|---|"]
    lines += [f"| {r.what} | {r.where} | {r.bytes / GB:,.1f} | {r.how} |" for r in rows]
    return "\n".join(lines)
