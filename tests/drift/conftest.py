"""Fixtures for the DRIFT tests: a char tokenizer, a tiny random Qwen2 model and its checkpoint (no downloads)."""

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


@pytest.fixture(scope="session")
def reference_ckpt(tmp_path_factory, nano, tok):
    """The fixed reference checkpoint DRIFT samples from: a from-scratch nano model on disk."""
    from postlab.models.io import save_pretrained_atomic

    return save_pretrained_atomic(nano, tok, tmp_path_factory.mktemp("drift") / "reference")
