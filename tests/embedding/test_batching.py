import numpy as np
import pytest
import torch

from steerable_alignment.embedding import (
    EmbeddingConfig,
    embed_texts,
    token_budget_batches,
    tokenize_texts,
)


@pytest.mark.parametrize("budget", [64, 100, 257, 1000])
def test_no_batch_exceeds_the_budget_and_every_text_is_in_one_batch(budget):
    lengths = np.random.default_rng(0).integers(1, 64, size=200)
    batches = token_budget_batches(lengths, budget)
    assert all(len(b) * lengths[b].max() <= budget for b in batches)
    together = np.concatenate(batches)
    assert sorted(together.tolist()) == list(range(200))
    assert np.all(np.diff(lengths[together]) <= 0)  # longest first
    # the budget is used: only the last batch may leave room for one more text
    for b in batches[:-1]:
        assert (len(b) + 1) * lengths[b].max() > budget


def test_scattering_batches_restores_the_order():
    lengths = np.array([3, 9, 1, 9, 4])
    out = np.full(5, -1)
    for batch in token_budget_batches(lengths, 10):
        out[batch] = lengths[batch] * 10  # a "result" computed per batch
    assert out.tolist() == [30, 90, 10, 90, 40]


def test_a_text_longer_than_the_budget_gets_its_own_batch():
    batches = token_budget_batches([50, 2, 3], 10)
    assert [b.tolist() for b in batches] == [[0], [2, 1]]


@pytest.mark.parametrize(
    ("model", "pooling"), [("tiny_llama", "last_token"), ("tiny_bert", "mean")]
)
def test_batched_embeddings_equal_one_text_at_a_time(model, pooling, request):
    from transformers import AutoModel, AutoTokenizer

    folder = request.getfixturevalue(model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    network = AutoModel.from_pretrained(folder).eval()
    prompts = [f"question {i} : cook" for i in range(7)]
    responses = ["answer " + "water " * (3 * i % 11) for i in range(7)]
    fmt = "chat" if model == "tiny_llama" else "pair"
    tokens = tokenize_texts(tokenizer, prompts, responses, fmt)
    config = EmbeddingConfig(model=str(folder), pooling=pooling, batch_tokens=64, max_length=64)
    rows = np.array([6, 0, 3, 2, 5])
    batched, padded = embed_texts(network, tokens, rows, config, torch.device("cpu"), 0)
    assert padded <= 64 * len(token_budget_batches(tokens.lengths[rows], 64))
    for i, row in enumerate(rows):
        alone, _ = embed_texts(network, tokens, np.array([row]), config, torch.device("cpu"), 0)
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)
