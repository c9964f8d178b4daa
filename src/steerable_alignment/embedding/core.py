"""Embed every pair of a pairs table: dedup, tokenise, shard, embed, gather.

The steps, in order (nothing heavy is loaded before the checks pass):

1. check the pairs table and the parameters; resolve the model folder/id and
   the device;
2. collect the distinct (prompt, response) texts: every completion appears
   in several pairs but is embedded once;
3. tokenise them (:mod:`.text`); a text longer than ``max_length`` is cut to
   fit (``overflow: truncate``) or dropped together with every pair that uses
   it (``overflow: drop``), counted and logged either way;
4. sort the kept texts longest first and cut them into shards of
   ``shard_size``; process ``r`` of ``W`` embeds shards ``r, r+W, ...`` that
   are not already finished on disk, in token-budget batches
   (:mod:`.batching`), and writes each shard atomically (:mod:`.shards`);
5. after a barrier the main process loads every shard and gathers the pair
   features: ``features[i, 0]`` is (prompt, response_a) of kept pair ``i``,
   ``features[i, 1]`` is (prompt, response_b).

A shard's content depends only on its texts and the settings, so a run that
was killed and started again ends with the same file as one that was not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerable_alignment.contracts import EMBEDDING_KEY, DataContractError
from steerable_alignment.embedding.batching import length_order, token_budget_batches
from steerable_alignment.embedding.config import EmbeddingConfig, ModelSource, resolve_model_source
from steerable_alignment.embedding.pooling import pool
from steerable_alignment.embedding.shards import MemoryShardStore, ShardStore
from steerable_alignment.embedding.text import (
    TokenizedTexts,
    resolve_input_format,
    tokenize_texts,
    truncate_texts,
)
from steerable_alignment.models.config import ConfigError
from steerable_alignment.runtime.distributed import Processes, SingleProcess

logger = logging.getLogger(__name__)

PAIR_TEXT_COLUMNS = ("pair_id", "prompt", "response_a", "response_b")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FINGERPRINT_VERSION = 1


def check_pair_texts(pairs: pd.DataFrame, name: str) -> None:
    """Raise :class:`DataContractError` naming the data set and the column at fault."""
    if not isinstance(pairs, pd.DataFrame):
        raise DataContractError(f"Dataset '{name}': expected a DataFrame, got {type(pairs)}")
    missing = [c for c in PAIR_TEXT_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataContractError(
            f"Dataset '{name}': missing column(s) {missing}; the embedding step needs "
            f"{list(PAIR_TEXT_COLUMNS)}"
        )
    ids = pairs["pair_id"]
    if not pd.api.types.is_integer_dtype(ids):
        raise DataContractError(
            f"Dataset '{name}', column 'pair_id': expected integers, got {ids.dtype}"
        )
    if not ids.is_unique:
        raise DataContractError(f"Dataset '{name}', column 'pair_id': ids must be unique")
    for column in PAIR_TEXT_COLUMNS[1:]:
        values = pairs[column]
        bad = ~values.map(lambda v: isinstance(v, str)).astype(bool)
        if bool(bad.any()):
            raise DataContractError(
                f"Dataset '{name}', column '{column}': every value must be a string; "
                f"{int(bad.sum())} row(s) are not (e.g. {values[bad].head(3).tolist()})"
            )


@dataclass(frozen=True)
class UniqueTexts:
    """The distinct (prompt, response) texts of a pairs table.

    Attributes:
        prompts, responses: the U distinct texts, in order of first appearance.
        side_a, side_b: (P,) int64: the text of each pair's response_a / response_b.
    """

    prompts: list[str]
    responses: list[str]
    side_a: np.ndarray
    side_b: np.ndarray


def unique_texts(pairs: pd.DataFrame) -> UniqueTexts:
    """Map every pair's two sides to distinct (prompt, response) texts."""
    index: dict[tuple[str, str], int] = {}
    sides = np.empty((len(pairs), 2), dtype=np.int64)  # (P, 2)
    columns = zip(pairs["prompt"], pairs["response_a"], pairs["response_b"])
    for row, (prompt, response_a, response_b) in enumerate(columns):
        for side, response in enumerate((response_a, response_b)):
            sides[row, side] = index.setdefault((prompt, response), len(index))
    prompts = [p for p, _ in index]
    responses = [r for _, r in index]
    return UniqueTexts(prompts, responses, sides[:, 0].copy(), sides[:, 1].copy())


#: EmbeddingConfig fields the embedding values depend on: two data sets whose
#: settings agree on all of them give a shared text the same embedding.
VALUE_SETTINGS = (
    "model",
    "pooling",
    "normalize",
    "input_format",
    "chat_template",
    "max_length",
    "overflow",
    "dtype",
    "output_dtype",
)


def embedding_settings(config: EmbeddingConfig) -> dict[str, Any]:
    """The value-affecting settings of ``config`` (stored with the features it makes)."""
    return {key: getattr(config, key) for key in VALUE_SETTINGS}


def differing_settings(config: EmbeddingConfig, other: EmbeddingConfig) -> list[str]:
    """The value-affecting settings (:data:`VALUE_SETTINGS`) on which two configs differ."""
    return [key for key in VALUE_SETTINGS if getattr(config, key) != getattr(other, key)]


@dataclass(frozen=True)
class KnownEmbeddings:
    """Embeddings another data set already holds, looked up by (prompt, response) text.

    Attributes:
        source: the data set they come from (for messages).
        index: (prompt, response) -> row of ``table``.
        table: (K, D) one embedding per distinct text.
    """

    source: str
    index: dict[tuple[str, str], int]
    table: torch.Tensor

    @classmethod
    def from_features(
        cls, pairs: pd.DataFrame, features: dict[str, torch.Tensor], name: str
    ) -> KnownEmbeddings:
        """The embeddings of a data set's pairs table and its features file.

        Raises:
            DataContractError: naming ``<name>.features`` when it holds a pair
                id that ``<name>.pairs`` lacks, or has the wrong shape.
        """
        check_pair_texts(pairs, f"{name}.pairs")
        pair_id = features["pair_id"]  # (N,)
        table = features["features"]  # (N, 2, D)
        if table.dim() != 3 or table.shape[:2] != (len(pair_id), 2):
            raise DataContractError(
                f"Dataset '{name}.features': 'features' must have shape (N, 2, D) with "
                f"N = {len(pair_id)} pair ids, got {tuple(table.shape)}"
            )
        rows = pd.Index(pairs["pair_id"]).get_indexer(pair_id.numpy())  # (N,)
        if (rows < 0).any():
            raise DataContractError(
                f"Dataset '{name}.features': {int((rows < 0).sum())} pair id(s) are not in "
                f"'{name}.pairs' (e.g. {int(pair_id[np.flatnonzero(rows < 0)[0]])})"
            )
        texts = unique_texts(pairs.iloc[rows])  # the features' rows, in order
        known = torch.empty((len(texts.prompts), table.shape[-1]), dtype=table.dtype)  # (K, D)
        known[torch.from_numpy(texts.side_a)] = table[:, 0]
        known[torch.from_numpy(texts.side_b)] = table[:, 1]
        index = {key: k for k, key in enumerate(zip(texts.prompts, texts.responses))}
        return cls(name, index, known)

    def lookup(self, texts: UniqueTexts) -> np.ndarray:
        """(U,) row of ``table`` holding each text, -1 where none does."""
        return np.array(
            [self.index.get(key, -1) for key in zip(texts.prompts, texts.responses)],
            dtype=np.int64,
        )


@dataclass(frozen=True)
class EmbeddingStats:
    """What a run did (logged, and returned for tests and benchmarks).

    Attributes:
        num_pairs: rows of the pairs table.
        num_pairs_kept: rows in the features (pairs whose two texts fit).
        num_texts: distinct (prompt, response) texts.
        num_texts_dropped: texts longer than ``max_length``, left out.
        num_texts_truncated: texts longer than ``max_length``, cut to fit
            (``overflow: truncate``).
        num_shards: shards of the kept texts.
        shards_reused: shards of this process found finished on disk.
        texts_embedded: texts this process put through the model in this run.
        tokens_embedded: their tokens (no padding).
        padded_tokens: tokens including padding in this process's batches.
        seconds: wall time of this process.
    """

    num_pairs: int
    num_pairs_kept: int
    num_texts: int
    num_texts_dropped: int
    num_shards: int
    shards_reused: int
    texts_embedded: int
    tokens_embedded: int
    padded_tokens: int
    seconds: float
    num_texts_truncated: int = 0


@dataclass(frozen=True)
class EmbeddingResult:
    """Features (``None`` on processes other than the main one) and statistics.

    Attributes:
        features: ``pair_id`` (N,) int64 and ``features`` (N, 2, D).
        stats: see :class:`EmbeddingStats`.
    """

    features: dict[str, torch.Tensor] | None
    stats: EmbeddingStats


def resolve_device(config: EmbeddingConfig, processes: Processes) -> torch.device:
    """The device of this process: ``auto`` picks CUDA when available.

    Under a launcher with several processes, process ``r`` uses ``cuda:<local r>``.

    Raises:
        ConfigError: CUDA was asked for but is not available.
    """
    name = config.device
    wants_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if wants_cuda and not torch.cuda.is_available():
        raise ConfigError(
            f"Parameter '{config.prefix}.device' is {name!r} but CUDA is not available here"
        )
    if not wants_cuda:
        return torch.device("cpu")
    if processes.count > 1:
        if name.startswith("cuda:"):
            logger.warning("device %s ignored: process %d uses its own GPU", name, processes.index)
        return torch.device("cuda", processes.local_index)
    return torch.device(name if name != "auto" else "cuda")


def load_tokenizer(source: ModelSource, config: EmbeddingConfig) -> Any:
    """The model's tokenizer (never with remote code)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"Parameter '{config.prefix}.model': cannot load a tokenizer from "
            f"{config.model!r} ({source.location}): {err}"
        ) from err


def load_model(source: ModelSource, config: EmbeddingConfig, device: torch.device) -> Any:
    """The model without its head, in eval mode on ``device`` (never with remote code)."""
    from transformers import AutoModel

    kwargs: dict[str, Any] = {"trust_remote_code": False, "dtype": TORCH_DTYPES[config.dtype]}
    if device.type == "cuda":
        kwargs["device_map"] = {"": str(device)}  # weights straight to this process's GPU
    try:
        model = AutoModel.from_pretrained(source.location, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"Parameter '{config.prefix}.model': cannot load {config.model!r} "
            f"({source.location}): {err}"
        ) from err
    if device.type != "cuda":  # on CUDA, device_map already placed the weights
        model = model.to(device)
    return model.eval()


def _model_identity(source: ModelSource) -> dict[str, Any]:
    """What identifies the model's weights: file names, sizes and times, or the hub commit."""
    folder = Path(source.location)
    if source.kind == "hub":
        try:
            from transformers.utils import cached_file

            folder = Path(cached_file(source.location, "config.json")).parent
        except (OSError, ValueError):
            return {"hub_id": source.location}
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return {
        "folder": folder.name,
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def _tokens_hash(tokens: TokenizedTexts, kept: np.ndarray) -> str:
    import hashlib

    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(tokens.offsets).tobytes())
    digest.update(np.ascontiguousarray(tokens.ids).tobytes())
    if tokens.type_ids is not None:
        digest.update(np.ascontiguousarray(tokens.type_ids).tobytes())
    digest.update(np.ascontiguousarray(kept).tobytes())
    return digest.hexdigest()


def _collate(tokens: TokenizedTexts, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded model inputs of some texts: each (B, L), L the longest of them."""
    lengths = tokens.lengths[rows]
    width = int(lengths.max())
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # (B, L)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, L)
    type_ids = None if tokens.type_ids is None else np.zeros((len(rows), width), dtype=np.int64)
    for b, (row, length) in enumerate(zip(rows, lengths)):
        lo = int(tokens.offsets[row])
        input_ids[b, :length] = tokens.ids[lo : lo + length]
        attention_mask[b, :length] = 1
        if type_ids is not None:
            type_ids[b, :length] = tokens.type_ids[lo : lo + length]
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
    }
    if type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(type_ids)
    return batch


def embed_texts(
    model: Any,
    tokens: TokenizedTexts,
    rows: np.ndarray,
    config: EmbeddingConfig,
    device: torch.device,
    pad_id: int,
    progress: Any = None,
) -> tuple[torch.Tensor, int]:
    """Embed some tokenised texts in token-budget batches.

    Args:
        model: a Hugging Face model returning ``last_hidden_state``.
        tokens: the tokenised texts.
        rows: (n,) which of them to embed.
        config: pooling, normalisation, token budget, output dtype.
        device: where the model is.
        pad_id: the padding token id.
        progress: a tqdm bar to advance, or ``None``.

    Returns:
        (n, D) embeddings in ``config.output_dtype``, in the order of ``rows``,
        and the number of padded tokens processed.
    """
    out_dtype = TORCH_DTYPES[config.output_dtype]
    out: torch.Tensor | None = None
    padded = 0
    with torch.inference_mode():
        for batch in token_budget_batches(tokens.lengths[rows], config.batch_tokens):
            inputs = _collate(tokens, rows[batch], pad_id)
            padded += inputs["input_ids"].numel()
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            hidden = model(**inputs).last_hidden_state  # (B, L, D)
            pooled = pool(hidden, inputs["attention_mask"], config.pooling)  # (B, D) float32
            if config.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            if out is None:
                out = torch.empty((len(rows), pooled.shape[-1]), dtype=out_dtype)  # (n, D)
            out[torch.from_numpy(batch)] = pooled.to("cpu", out_dtype)
            if progress is not None:
                progress.update(len(batch))
    if out is None:
        out = torch.empty((0, 0), dtype=out_dtype)
    return out, padded


@contextlib.contextmanager
def _cpu_threads(config: EmbeddingConfig, device: torch.device) -> Iterator[None]:
    """Use ``num_threads`` intra-op threads on the CPU for the block, then restore."""
    if config.num_threads is None or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def embed_pairs(
    pairs: pd.DataFrame,
    config: EmbeddingConfig,
    processes: Processes | None = None,
    pairs_name: str | None = None,
    known: KnownEmbeddings | None = None,
) -> EmbeddingResult:
    """Embed both sides of every pair of a pairs table.

    Args:
        pairs: the pairs table (``pair_id``, ``prompt``, ``response_a``,
            ``response_b``; other columns are ignored).
        config: the data set's embedding parameters.
        processes: this process among those of a launcher; default one process.
        pairs_name: the data set name used in messages (default ``<name>.pairs``).
        known: embeddings of another data set made with the same
            value-affecting settings (the caller checks them with
            :func:`differing_settings`); texts found there are copied, not
            embedded again.

    Returns:
        On the main process the features (``pair_id`` (N,) int64 and
        ``features`` (N, 2, D)), rows in the pairs table's order; pairs with
        a text longer than ``max_length`` are left out. ``None`` features on
        other processes.

    Raises:
        DataContractError: a column is missing or holds bad values.
        ConfigError: a parameter is invalid, the model folder does not
            exist, or CUDA was asked for but is missing.
    """
    started = time.perf_counter()
    processes = processes or SingleProcess()
    check_pair_texts(pairs, pairs_name or f"{config.name}.pairs")
    config.validate()
    source = resolve_model_source(config.model, f"{config.prefix}.model")
    device = resolve_device(config, processes)
    if processes.count > 1 and config.shard_dir is None:
        raise ConfigError(
            f"Parameter '{config.prefix}.shard_dir' is null but {processes.count} processes "
            "run: they exchange shards through that folder"
        )

    texts = unique_texts(pairs)
    tokenizer = load_tokenizer(source, config)
    input_format = resolve_input_format(
        tokenizer, config.input_format, config.chat_template, config.prefix
    )
    tokens = tokenize_texts(
        tokenizer, texts.prompts, texts.responses, input_format, config.chat_template
    )
    num_truncated = 0
    if config.overflow == "truncate":
        tokens, truncated = truncate_texts(tokens, config.max_length)
        num_truncated = int(truncated.sum())
        if num_truncated:
            logger.warning(
                "%s: %d of %d distinct texts are longer than max_length=%d tokens: cut to fit, "
                "keeping the start of the prompt and of the response (overflow: truncate)",
                config.name,
                num_truncated,
                len(truncated),
                config.max_length,
            )
    fits = tokens.lengths <= config.max_length  # (U,)
    pair_kept = fits[texts.side_a] & fits[texts.side_b]  # (P,)
    num_dropped = int((~fits).sum())
    if num_dropped:
        logger.warning(
            "%s: %d of %d distinct texts do not fit in max_length=%d tokens: dropping them "
            "and the %d pair(s) that use them (%d pairs kept)",
            config.name,
            num_dropped,
            len(fits),
            config.max_length,
            int((~pair_kept).sum()),
            int(pair_kept.sum()),
        )
    known_rows = known.lookup(texts) if known is not None else np.full(len(fits), -1)  # (U,)
    reused = fits & (known_rows >= 0)  # (U,) copied from ``known``
    if known is not None:
        logger.info(
            "%s: %d of %d distinct texts already embedded in %s: copied",
            config.name,
            int(reused.sum()),
            len(fits),
            known.source,
        )
    kept = np.flatnonzero(fits & ~reused)  # (U_kept,) unique-text indices to embed
    order = kept[length_order(tokens.lengths[kept])]  # longest first: a memory error shows early
    shards = [order[lo : lo + config.shard_size] for lo in range(0, len(order), config.shard_size)]
    logger.info(
        "%s: %d pairs, %d distinct texts (%d kept, %d tokens), format %s, %d shard(s) of <= %d",
        config.name,
        len(pairs),
        len(fits),
        len(kept),
        int(tokens.lengths[kept].sum()),
        input_format,
        len(shards),
        config.shard_size,
    )

    if config.shard_dir is None:
        store: ShardStore | MemoryShardStore = MemoryShardStore()
    else:
        fingerprint = {
            "version": FINGERPRINT_VERSION,
            "model": config.model,
            "model_identity": _model_identity(source),
            "pooling": config.pooling,
            "normalize": config.normalize,
            "input_format": input_format,
            "chat_template": config.chat_template,
            "max_length": config.max_length,
            "overflow": config.overflow,
            "dtype": config.dtype,
            "output_dtype": config.output_dtype,
            "shard_size": config.shard_size,
            "num_texts": len(kept),
            "tokens_sha256": _tokens_hash(tokens, kept),
        }
        store = ShardStore(config.shard_dir, fingerprint)
    if processes.is_main:
        store.prepare()
    processes.wait()

    mine = [k for k in range(len(shards)) if k % processes.count == processes.index]
    pending = [k for k in mine if store.load(k, shards[k]) is None]
    reused_here = len(mine) - len(pending)
    if reused_here:
        logger.info("Process %d: %d shard(s) already finished", processes.index, reused_here)
    texts_embedded = sum(len(shards[k]) for k in pending)
    tokens_embedded = int(sum(tokens.lengths[shards[k]].sum() for k in pending))
    padded_tokens = 0
    if pending:
        from tqdm.auto import tqdm

        model = load_model(source, config, device)
        pad_id = tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (tokenizer.eos_token_id or 0)
        bar = tqdm(
            total=texts_embedded,
            unit="text",
            desc=f"embedding {config.name}",
            disable=not (config.progress and processes.is_main),
        )
        with _cpu_threads(config, device), bar:
            for k in pending:
                shard_started = time.perf_counter()
                embeddings, padded = embed_texts(
                    model, tokens, shards[k], config, device, pad_id, bar
                )
                store.save(k, shards[k], embeddings)
                padded_tokens += padded
                seconds = time.perf_counter() - shard_started
                logger.info(
                    "%s: shard %d/%d (%d texts) in %.1f s, %.0f tokens/s",
                    config.name,
                    k + 1,
                    len(shards),
                    len(shards[k]),
                    seconds,
                    tokens.lengths[shards[k]].sum() / max(seconds, 1e-9),
                )
        del model
    processes.wait()

    features = None
    if processes.is_main:
        copied = None
        if reused.any():
            rows = np.flatnonzero(reused)
            copied = (rows, known.table[torch.from_numpy(known_rows[rows])])  # (R,), (R, D)
        features = _gather(store, shards, texts, pair_kept, pairs, source, config, copied)
    stats = EmbeddingStats(
        num_pairs=len(pairs),
        num_pairs_kept=int(pair_kept.sum()),
        num_texts=len(fits),
        num_texts_dropped=num_dropped,
        num_shards=len(shards),
        shards_reused=reused_here,
        texts_embedded=texts_embedded,
        tokens_embedded=tokens_embedded,
        padded_tokens=padded_tokens,
        seconds=time.perf_counter() - started,
        num_texts_truncated=num_truncated,
    )
    logger.info(
        "%s: %d texts embedded in %.1f s (%d shard(s) reused); features %s",
        config.name,
        texts_embedded,
        stats.seconds,
        reused_here,
        None if features is None else tuple(features["features"].shape),
    )
    return EmbeddingResult(features, stats)


def _gather(
    store: ShardStore | MemoryShardStore,
    shards: list[np.ndarray],
    texts: UniqueTexts,
    pair_kept: np.ndarray,
    pairs: pd.DataFrame,
    source: ModelSource,
    config: EmbeddingConfig,
    copied: tuple[np.ndarray, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Load every shard, add the ``copied`` (text rows, embeddings), build the pair features."""
    parts = []
    for k, index in enumerate(shards):
        embeddings = store.load(k, index)
        if embeddings is None:
            raise RuntimeError(
                f"{config.name}: shard {k} is missing after every process finished; "
                "did one of them fail? Run again to resume."
            )
        parts.append(embeddings)
    if parts:
        dim = parts[0].shape[-1]
    elif copied is not None:
        dim = copied[1].shape[-1]
    else:
        from transformers import AutoConfig

        dim = AutoConfig.from_pretrained(source.location, trust_remote_code=False).hidden_size
    out_dtype = TORCH_DTYPES[config.output_dtype]
    table = torch.zeros((len(texts.prompts), dim), dtype=out_dtype)  # (U, D)
    for index, embeddings in zip(shards, parts):
        table[torch.from_numpy(index)] = embeddings
    if copied is not None:
        table[torch.from_numpy(copied[0])] = copied[1].to(out_dtype)
    rows = np.flatnonzero(pair_kept)  # (N,)
    side_a = torch.from_numpy(texts.side_a[rows])
    side_b = torch.from_numpy(texts.side_b[rows])
    features = torch.stack([table[side_a], table[side_b]], dim=1)  # (N, 2, D)
    pair_id = torch.from_numpy(pairs["pair_id"].to_numpy(dtype=np.int64)[rows].copy())  # (N,)
    # The settings that made them (JSON): a model trained on these features records them,
    # and steer / the pipelines refuse features or a context embedded otherwise.
    settings = json.dumps(embedding_settings(config), sort_keys=True)
    return {"pair_id": pair_id, "features": features, EMBEDDING_KEY: settings}
