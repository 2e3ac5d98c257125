"""Loading and saving models as standard Hugging Face directories.

A checkpoint directory holds config.json, model.safetensors, tokenizer files and
generation_config.json, and nothing postlab-specific: plain `transformers` loads it.
Saves are atomic (write to a temporary sibling, then rename) so an interrupted save never
destroys the previous checkpoint. Every save also writes checksums.json (sha256 and size of each
file; transformers ignores it), so damage after the save (a bad disk, a partial copy) is caught
at load time instead of training or evaluating silently damaged weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from postlab.models.errors import CheckpointError, DamagedFileError


def quiet_transformers() -> None:
    """transformers' per-shard progress bars drown postlab's own progress output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def check_safetensors(path: Path) -> None:
    """Validate every safetensors file's header and size before transformers touches it.

    Cheap (headers only) and works without checksums.json; it misses damage inside the tensor data,
    which only verify_checkpoint catches."""
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
                    raise DamagedFileError(f, "corrupted safetensors header (file truncated?)")
                header = json.loads(fh.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + header_len + end != size:
                raise DamagedFileError(f, f"expected {8 + header_len + end} bytes, found {size} (truncated or "
                                          "corrupted)")
            with safe_open(str(f), framework="pt") as st:
                list(st.keys())
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - any parse failure is a corrupted file
            raise DamagedFileError(f, f"cannot read safetensors ({e}); the file is corrupted") from None


# ------------------------------------------------------------------------------ checksums

CHECKSUMS = "checksums.json"
_CHUNK = 1 << 20  # hash in 1 MiB reads: constant memory for multi-GB shards


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(directory: Path) -> Path:
    """Record sha256 and size of every file under `directory` in checksums.json (call it after the last file)."""
    directory = Path(directory)
    files = {f.relative_to(directory).as_posix(): {"sha256": file_sha256(f), "size": f.stat().st_size}
             for f in sorted(directory.rglob("*")) if f.is_file() and f.name != CHECKSUMS}
    out = directory / CHECKSUMS
    out.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n")
    return out


def verify_checkpoint(path: str | Path, select: Callable[[str], bool] | None = None) -> None:
    """Check every file listed in `path`/checksums.json (or those whose name `select` accepts) against its
    recorded size and sha256; raise DamagedFileError naming the first damaged or missing one.

    A directory without checksums.json (written by plain transformers or an older postlab) passes: there
    is nothing to compare with, and check_safetensors still catches truncated or garbled weights."""
    path = Path(path)
    manifest = path / CHECKSUMS
    if not manifest.exists():
        return
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedFileError(manifest, f"unreadable ({e}); the file is corrupted") from None
    for name, rec in listed.items():
        if select is None or select(name):
            _verify_file(path / name, rec, manifest)


def _verify_file(f: Path, rec: dict, manifest: Path) -> None:
    if not f.is_file():
        raise DamagedFileError(f, f"missing (listed in {manifest.name})")
    size = f.stat().st_size
    # A size check first: a truncated multi-GB shard fails without being read.
    if size != rec["size"]:
        raise DamagedFileError(f, f"truncated or corrupted: {size} bytes, {rec['size']} recorded in {manifest.name}")
    found = file_sha256(f)
    if found != rec["sha256"]:
        raise DamagedFileError(f, f"corrupted: sha256 {found} found, {rec['sha256']} expected "
                                  f"(recorded in {manifest.name} when it was saved)")


def _is_trainer_state(name: str) -> bool:
    return name.startswith("trainer_state.")


def _is_model_file(name: str) -> bool:
    """Files load_model reads: config, generation config and weight shards (not the optimizer state)."""
    return name in ("config.json", "generation_config.json") or (
        name.endswith((".safetensors", ".safetensors.index.json")) and not _is_trainer_state(name))


def _is_tokenizer_file(name: str) -> bool:
    """The small files left over (tokenizer.json, special tokens, vocab...): cheap to verify on every load."""
    return not _is_model_file(name) and not _is_trainer_state(name) and not name.endswith(".safetensors")


# ------------------------------------------------------------------------------ model paths

# Hub ids are "org/name" (or a bare legacy "name" such as "gpt2"); postlab's own model directories.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_RUN_DIR_NAME = re.compile(r"final|step_\d+|checkpoints")


def _local_dir(path: str | Path) -> Path | None:
    """The local directory `path` names; None for a hub id; CheckpointError for a local path that does not exist.

    Without this a typo'd directory reaches transformers, which answers with a hub-id validation or
    network error that never says the directory is missing."""
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        if local.is_file():
            raise CheckpointError(f"{local}: is a file; pass the model directory holding it ({local.parent})")
        return local
    last = re.split(r"[/\\]", text.rstrip("/\\"))[-1]
    hub_id = _HUB_ID.fullmatch(text) is not None and ".." not in text and not _RUN_DIR_NAME.fullmatch(last)
    # "org/name" also contains a separator: hub_id decides for that shape.
    looks_local = (text.startswith((".", "/", "~")) or "/" in text or "\\" in text
                   or _RUN_DIR_NAME.fullmatch(last) is not None)
    if looks_local and not hub_id:
        raise CheckpointError(f"{path}: no such model directory; pass a directory holding config.json and "
                              "*.safetensors (e.g. RUN/final), or a Hugging Face hub id")
    return None


def load_model(path: str, dtype: str = "float32", attn_implementation: str = "sdpa",
               trust_remote_code: bool = False, device: str | torch.device = "cpu"):
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    local = _local_dir(path)
    if local is not None:
        from postlab.models import lora

        if lora.is_adapter_dir(local):  # a LoRA run's checkpoint or final/: its base with the adapter merged in
            verify_checkpoint(local, lambda name: name.startswith("adapter_"))
            model = lora.load_merged(local, lambda base: load_model(base, dtype, attn_implementation,
                                                                     trust_remote_code, device="cpu"))
            return model.to(device)
        if not (local / "config.json").exists():
            raise CheckpointError(f"{local}: not a model directory (no config.json)")
        verify_checkpoint(local, _is_model_file)
        check_safetensors(local)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(local or path), dtype=DTYPES[dtype],
                                                     attn_implementation=attn_implementation,
                                                     trust_remote_code=trust_remote_code, use_safetensors=True)
    except OSError as e:  # hub id not found / offline, unreadable local file
        where = "" if local is not None else "no such local directory, and as a Hugging Face hub id: "
        raise CheckpointError(f"{path}: cannot load the model ({where}{e})") from None
    return model.to(device)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    local = _local_dir(path)
    if local is not None:
        from postlab.models.lora import ADAPTER_CONFIG

        if not (local / "config.json").exists() and not (local / ADAPTER_CONFIG).exists():
            raise CheckpointError(f"{local}: not a model directory (no config.json)")
        if not any((local / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                   "vocab.json")):
            raise CheckpointError(f"{local}: no tokenizer files (tokenizer.json / tokenizer_config.json); "
                                  "save the tokenizer next to the model")
        verify_checkpoint(local, _is_tokenizer_file)
    try:
        tok = AutoTokenizer.from_pretrained(str(local or path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load the tokenizer ({e})") from None
    if tok.pad_token is None:
        # Padding is only used at generation time; reusing EOS is the usual convention.
        tok.pad_token = tok.eos_token
    return tok


def save_pretrained_atomic(model, tokenizer, out: str | Path, extra_files: dict[str, bytes] | None = None,
                           state_dict: dict | None = None, final: bool = False) -> Path:
    """Write a Hugging Face directory to `out` atomically (tmp dir + rename), with checksums.json.

    `state_dict`: the weights to write instead of the model's own (a sharded model's gathered ones).
    A LoRA model (postlab.models.lora) writes its adapter instead of its weights; `final` (a run's
    final save) adds the merged model in merged/ when model.lora.save_merged asks for it."""
    from postlab.models import lora

    quiet_transformers()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if lora.is_lora(model):
        lora.save(model, tokenizer, tmp, final=final)
    elif state_dict is None:
        model.save_pretrained(tmp, safe_serialization=True)
    else:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    for name, data in (extra_files or {}).items():
        (tmp / name).write_bytes(data)
    write_checksums(tmp)  # last: it covers every file above
    return publish_directory(tmp, out)


def publish_directory(tmp: Path, out: Path) -> Path:
    """Make the complete directory `tmp` appear as `out` (fsync, then rename; an older `out` is
    moved aside first and removed last), so a crash never leaves a half-written `out`."""
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
