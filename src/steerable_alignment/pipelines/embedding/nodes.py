"""Nodes of the ``embedding`` pipeline: a pairs table to pair features.

torch and transformers are imported inside the node (through
``steerable_alignment.embedding``) so that building the catalog stays fast.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def embed_pairs(
    pairs: pd.DataFrame,
    params: dict[str, Any],
    reuse_pairs: pd.DataFrame | None = None,
    reuse_features: dict[str, Any] | None = None,
    reuse_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed (prompt, response_a) and (prompt, response_b) of every pair.

    The work is resumable: finished shards in ``params["shard_dir"]`` (for
    example computed beforehand on many GPUs with ``accelerate launch -m
    steerable_alignment.embedding``, see docs/embedding.md) are reused.

    Args:
        pairs: a data set's pairs table (``pair_id``, ``prompt``,
            ``response_a``, ``response_b``; other columns are ignored).
        params: the data set's ``embedding`` parameters (its ``name`` says
            which data set, for messages).
        reuse_pairs, reuse_features, reuse_params: another data set's pairs,
            features and embedding parameters. When the value-affecting
            settings agree (model, pooling, normalisation, input format,
            template, max_length, dtypes), texts it already embedded are
            copied rather than embedded again; otherwise a warning names the
            differing settings and every text is embedded.

    Returns:
        ``pair_id`` (N,) int64 and ``features`` (N, 2, D), rows in the pairs
        table's order. Pairs with a text longer than ``max_length`` tokens
        are left out (N can be below the number of pairs).

    Raises:
        ConfigError: a parameter is invalid or the model folder is missing.
        DataContractError: a column of the pairs table is missing or bad.
    """
    from steerable_alignment.embedding import EmbeddingConfig, KnownEmbeddings, differing_settings
    from steerable_alignment.embedding import embed_pairs as embed

    config = EmbeddingConfig.from_params(params)
    known = None
    if reuse_features is not None:
        other = EmbeddingConfig.from_params(reuse_params)
        differing = differing_settings(config, other)
        if differing:
            logger.warning(
                "%s: not reusing %s.features: the embedding settings differ in %s",
                config.name,
                other.name,
                differing,
            )
        else:
            known = KnownEmbeddings.from_features(reuse_pairs, reuse_features, other.name)
    result = embed(pairs, config, known=known)
    stats = result.stats
    if stats.num_pairs_kept < stats.num_pairs:
        logger.warning(
            "%s.features holds %d of %d pairs (%d dropped: a text over max_length=%d tokens)",
            config.name,
            stats.num_pairs_kept,
            stats.num_pairs,
            stats.num_pairs - stats.num_pairs_kept,
            config.max_length,
        )
    return result.features
