"""Tiny random Qwen2 models (2 layers, hidden 32, intermediate 64) for the intervention tests."""

import pytest
import torch


def tiny_qwen2(vocab_size: int, seed: int = 0, intermediate_size: int = 64):
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=intermediate_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # random, not zero, biases and norm scales: every parameter takes part in every check
        gen = torch.Generator().manual_seed(seed + 100)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return model


def perturbed(model, scale: float = 0.05, seed: int = 1):
    """A stand-in for an SFT model: the base plus a random task vector."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen) + scale * 0.01)
    return out


@pytest.fixture
def tiny_pair(char_tokenizer):
    base = tiny_qwen2(len(char_tokenizer))
    return base, perturbed(base)


@pytest.fixture
def toy_calibration(char_tokenizer):
    from postlab.interventions.common import build_calibration, calibration_records
    from postlab.seeds import eval_seed

    records = calibration_records("toy", ["id", "ood"], 3, eval_seed)
    return build_calibration(char_tokenizer, records, micro_batch=4)


@pytest.fixture
def saved_pair(tmp_path, char_tokenizer, tiny_pair):
    from postlab.models import save_pretrained_atomic

    base, sft = tiny_pair
    save_pretrained_atomic(base, char_tokenizer, tmp_path / "base")
    save_pretrained_atomic(sft, char_tokenizer, tmp_path / "sft")
    return tmp_path / "base", tmp_path / "sft"
