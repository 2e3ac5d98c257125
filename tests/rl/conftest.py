"""Shared fixtures for the RL tests: a char tokenizer and a tiny random Qwen2 model (no downloads)."""

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
    return init_model("nano", tok, seed=0).eval()


@pytest.fixture(scope="session")
def prompts(tok):
    texts = ["<|user|>Say a digit larger than 5.<|end|><|assistant|>", "<|user|>Hi<|end|><|assistant|>",
             "<|user|>Cards: 3 3 8 8<|end|><|assistant|>"]
    return [tok.encode(t, add_special_tokens=False) for t in texts]
