"""Fixtures for the DRIFT tests: a char tokenizer and a tiny random Qwen2 model (its checkpoint on disk,
DRIFT's fixed reference, is tests/conftest.py's nano_checkpoint)."""

import pytest
import torch


@pytest.fixture(scope="session")
def tok():
    from postlab.models.tokenizer import build_tokenizer

    return build_tokenizer([])


@pytest.fixture(scope="session")
def nano(tok):
    from postlab.models.io import init_model

    torch.manual_seed(0)
    return init_model("nano", tok, seed=0)
