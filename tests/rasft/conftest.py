"""Fixtures for the RASFT / RFT trainer tests: a from-scratch nano checkpoint on disk (no downloads)."""

import pytest


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A from-scratch nano model and the char tokenizer: the starting policy (and RASFT's frozen reference)."""
    from postlab.models.io import init_model, save_pretrained_atomic
    from postlab.models.tokenizer import build_tokenizer

    tok = build_tokenizer([])
    return save_pretrained_atomic(init_model("nano", tok, seed=0), tok, tmp_path_factory.mktemp("rasft") / "init")
