"""Fixtures for the policy data tests: the tiny ChatML tokenizer and model (tiny_lm.py)."""

from __future__ import annotations

import pytest

from tests.policy_data.tiny_lm import tiny_model, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_model(tokenizer)
