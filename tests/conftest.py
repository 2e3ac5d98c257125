"""Shared test set-up: CPU only, few threads, no network, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def char_tokenizer():
    """postlab's character tokenizer (needs no corpus)."""
    from postlab.models import build_tokenizer

    return build_tokenizer([], "char")
