"""Fixtures for the policy data tests: the tiny ChatML tokenizer and model
(tests/models/tiny_causal_lm.py)."""

from __future__ import annotations

import pytest

from tests.models.tiny_causal_lm import chatml_tokenizer, tiny_model


@pytest.fixture(scope="session")
def tokenizer():
    return chatml_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_model(tokenizer)
