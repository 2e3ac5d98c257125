"""Tiny model presets: standard `transformers` architectures with a few million parameters.

A preset is only a set of config values; the model is a plain Qwen2/Llama model so that
every checkpoint postlab writes loads with `AutoModelForCausalLM` and no postlab import.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # ~0.2M parameters: unit tests.
    "nano": dict(arch="qwen2", hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    # ~0.63M parameters (with the char tokenizer): fast CPU learning tests and the lab-scale studies.
    "micro": dict(arch="qwen2", hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
    # ~3.4M parameters: the lab-scale default (design.md reference numbers).
    "tiny": dict(arch="qwen2", hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
    # ~3.4M parameters, Llama architecture.
    "tiny-llama": dict(arch="llama", hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
    # ~19M parameters: larger lab runs.
    "small": dict(arch="qwen2", hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
}


def build_config(preset: str, vocab_size: int, bos_token_id: int | None, eos_token_id: int, pad_token_id: int):
    from transformers import LlamaConfig, Qwen2Config

    values = dict(PRESETS[preset])
    arch = values.pop("arch")
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    return cls(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
               pad_token_id=pad_token_id, tie_word_embeddings=True, rope_theta=10000.0, **values)
