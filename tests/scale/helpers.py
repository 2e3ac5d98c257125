"""Tiny checkpoints written by the tests themselves (no downloads)."""

from __future__ import annotations

from pathlib import Path


def tiny_checkpoint(out: Path, preset: str = "nano", seed: int = 0, chat_template: str | None = None,
                    extra_special: list[str] | None = None, eos: str | None = None) -> Path:
    """A random-init `preset` model + postlab's char tokenizer saved as a plain Hugging Face directory
    (a stand-in for a real checkpoint: model.path). `chat_template` replaces the tokenizer's
    template (None: postlab's; "" removes it, like a base checkpoint without one)."""
    from postlab.models import build_tokenizer, init_model, save_pretrained_atomic

    tok = build_tokenizer([], "char")
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": extra_special})
    if eos is not None:
        tok.eos_token = eos
    if chat_template is not None:
        tok.chat_template = chat_template or None
    model = init_model(preset, tok, seed=seed)
    save_pretrained_atomic(model, tok, out)
    return out
