"""Shared fixtures for the RL tests: prompts (the char tokenizer and the nano model are tests/conftest.py's)."""

import pytest


@pytest.fixture(scope="session")
def prompts(char_tokenizer):
    texts = ["<|user|>Say a digit larger than 5.<|end|><|assistant|>", "<|user|>Hi<|end|><|assistant|>",
             "<|user|>Cards: 3 3 8 8<|end|><|assistant|>"]
    return [char_tokenizer.encode(t, add_special_tokens=False) for t in texts]
