"""Embeddings of (prompt, response) texts for the pairs of a pairs table.

Framework-free (never imports Kedro): the ``embedding`` pipeline's node and
the ``python -m steerable_alignment.embedding`` entry point (plain, or
data-parallel under ``accelerate launch`` / ``torchrun``) both call
:func:`embed_pairs`. See docs/embedding.md.

Importing this package loads torch; the Kedro pipeline imports it inside its
node so that building the catalog stays fast.
"""

from steerable_alignment.embedding.batching import token_budget_batches
from steerable_alignment.embedding.config import (
    PACKAGED_MINILM,
    EmbeddingConfig,
    ModelSource,
    resolve_model_source,
)
from steerable_alignment.embedding.core import (
    EmbeddingResult,
    EmbeddingStats,
    KnownEmbeddings,
    check_pair_texts,
    differing_settings,
    embed_pairs,
    embed_texts,
    embedding_settings,
    unique_texts,
)
from steerable_alignment.embedding.pooling import last_token_pool, mean_pool, pool
from steerable_alignment.embedding.text import (
    TokenizedText,
    TokenizedTexts,
    resolve_input_format,
    tokenize_text,
    tokenize_texts,
    truncate_texts,
)

__all__ = [
    "PACKAGED_MINILM",
    "EmbeddingConfig",
    "EmbeddingResult",
    "EmbeddingStats",
    "KnownEmbeddings",
    "ModelSource",
    "TokenizedText",
    "TokenizedTexts",
    "check_pair_texts",
    "differing_settings",
    "embedding_settings",
    "embed_pairs",
    "embed_texts",
    "last_token_pool",
    "mean_pool",
    "pool",
    "resolve_input_format",
    "resolve_model_source",
    "token_budget_batches",
    "tokenize_text",
    "tokenize_texts",
    "truncate_texts",
    "unique_texts",
]
