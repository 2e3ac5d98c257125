"""Loading and saving models as standard Hugging Face directories.

A checkpoint directory holds config.json, model.safetensors, tokenizer files and
generation_config.json, and nothing postlab-specific: plain `transformers` loads it.
Saves are atomic (write to a temporary sibling, then rename) so an interrupted save never
destroys the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

def _quiet_transformers() -> None:
    """transformers' per-shard progress bars drown postlab's own progress output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message says which file and what to do."""


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():  # under torchrun each process takes its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_model(preset: str, tokenizer, dtype: str = "float32", attn_implementation: str = "sdpa", seed: int = 0):
    """A freshly initialized tiny model sized to `tokenizer`."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from postlab.models.presets import build_config

    cfg = build_config(preset, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    cfg._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=DTYPES[dtype])
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    return model


def _check_safetensors(path: Path) -> None:
    """Validate every safetensors file's header and size before transformers touches it."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        bins = list(path.glob("*.bin"))
        if bins:
            raise CheckpointError(f"{path}: only pickled *.bin weights found; postlab loads safetensors only "
                                  "(convert with `transformers` save_pretrained(safe_serialization=True))")
        raise CheckpointError(f"{path}: no *.safetensors weights found")
    for f in files:
        try:
            size = f.stat().st_size
            with open(f, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                if header_len <= 0 or 8 + header_len > size:
                    raise CheckpointError(f"{f}: corrupted safetensors header (file truncated?); "
                                          "restore it or pick another checkpoint")
                header = json.loads(fh.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + header_len + end != size:
                raise CheckpointError(f"{f}: expected {8 + header_len + end} bytes, found {size} (truncated or "
                                      "corrupted); restore it or pick another checkpoint")
            with safe_open(str(f), framework="pt") as st:
                list(st.keys())
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - any parse failure is a corrupted file
            raise CheckpointError(f"{f}: cannot read safetensors ({e}); the file is corrupted") from None


def load_model(path: str, dtype: str = "float32", attn_implementation: str = "sdpa",
               trust_remote_code: bool = False, device: str | torch.device = "cpu"):
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    local = Path(path)
    if local.exists():
        if not (local / "config.json").exists():
            raise CheckpointError(f"{local}: not a model directory (no config.json)")
        _check_safetensors(local)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], attn_implementation=attn_implementation,
                                                 trust_remote_code=trust_remote_code, use_safetensors=True)
    return model.to(device)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    local = Path(path)
    if local.exists():
        if not local.is_dir() or not (local / "config.json").exists():
            raise CheckpointError(f"{local}: not a model directory (no config.json)")
        if not any((local / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                   "vocab.json")):
            raise CheckpointError(f"{local}: no tokenizer files (tokenizer.json / tokenizer_config.json); "
                                  "save the tokenizer next to the model")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load the tokenizer ({e})") from None
    if tok.pad_token is None:
        # Padding is only used at generation time; reusing EOS is the usual convention.
        tok.pad_token = tok.eos_token
    return tok


def save_pretrained_atomic(model, tokenizer, out: str | Path, extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a Hugging Face directory to `out` atomically (tmp dir + rename)."""
    _quiet_transformers()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name, data in (extra_files or {}).items():
        (tmp / name).write_bytes(data)
    _fsync_dir(tmp)
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return out


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
