"""Scale-feature tests (LoRA, precision switches, real data, gpu_check) on tiny CPU models."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tests time nothing; one thread avoids oversubscribing a shared CPU (10x slower steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
