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


@pytest.fixture
def nano_model(char_tokenizer):
    """A fresh random-init nano model (seed 0) for `char_tokenizer`, in eval mode: each test may train
    or change it. Also seeds the global torch RNG (0), so a test that draws from it is reproducible
    whatever ran before."""
    import torch

    from postlab.models import init_model

    torch.manual_seed(0)
    return init_model("nano", char_tokenizer, seed=0).eval()


@pytest.fixture(scope="session")
def nano_checkpoint(tmp_path_factory):
    """A random-init nano model (seed 0) and the char tokenizer saved as a Hugging Face directory
    (model.path of trainer tests, DRIFT's reference). Shared by the whole session: never write into it
    (copy it first, as tests that damage a checkpoint do)."""
    from harness import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("nano") / "nano")
