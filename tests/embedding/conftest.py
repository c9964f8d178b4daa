"""Tiny models saved once per session for the embedding tests."""

from __future__ import annotations

import pytest

from tests.embedding.tiny_models import save_tiny_bert, save_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Folder of a random 2-layer Llama with a chat-template tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Folder of a random 2-layer BERT with a text-pair tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
