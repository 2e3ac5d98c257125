"""The run directory: one per run, everything needed to inspect or resume it.

    RUN/
      config.yaml        resolved config
      meta.json          seed, git revision, versions, command line
      metrics.jsonl      one JSON object per logged step (and per eval)
      samples.jsonl      generated samples at each eval
      tb/                TensorBoard event files
      checkpoints/step_000100/   Hugging Face model dir + trainer_state.{json,safetensors}
                         (+ dcp/ and trainer_state.rankR.safetensors for a sharded multi-process run)
      final/             Hugging Face model dir of the last step

Checkpoints never use pickle: optimizer tensors and RNG states go to safetensors, the rest to
JSON. A checkpoint directory appears only complete (written to a temp dir, then renamed).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from postlab import locks
from postlab.models.io import CheckpointError, save_pretrained_atomic


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _environment() -> dict:
    """Machine, library versions and threads (postlab.runinfo); results are bit-identical only on the same."""
    try:
        from postlab.runinfo import environment
    except ImportError:
        return {}
    return environment()


def _json_default(x):
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)


class RunDir:
    def __init__(self, path: str | Path, tensorboard: bool = True, wandb: bool = False, rank: int = 0):
        self.path = Path(path)
        self.rank = rank
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self.path / ".lock"
        if rank == 0:  # rank 0 alone writes the directory; it holds the lock until close() or its death
            try:
                locks.acquire(self._lock)
            except locks.DirectoryInUse as e:
                from postlab.config import ConfigError

                raise ConfigError(f"run directory {self.path} is in use by another process ({e}); wait for that "
                                  f"run to finish or stop it, then resume with --resume {self.path}, or choose "
                                  "another run.out_dir (nothing was changed)") from None
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self._tb = None
        self._wandb = None
        if rank == 0 and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tb"))
            except ImportError:
                self._tb = None
        if rank == 0 and wandb:
            try:
                import wandb as wb

                self._wandb = wb.init(dir=str(self.path), config=self.read_config())
            except ImportError:
                print("wandb not installed; logging to JSONL and TensorBoard only", file=sys.stderr)

    # --------------------------------------------------------------- metadata
    def write_meta(self, cfg, seed: int, trainer: str | None = None, data_fingerprint: str | None = None) -> None:
        """config.yaml and meta.json of a fresh run: what `--resume` checks a continuation against."""
        from postlab import __version__
        from postlab.config import dump_yaml

        from postlab.distributed import backend, world

        if self.rank:
            return
        dump_yaml(cfg, self.path / "config.yaml")
        meta = {"trainer": trainer, "seed": seed, "world_size": world()[1], "backend": backend() or "none", "data_fingerprint": data_fingerprint, "git_revision": git_revision(),
                "postlab": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
                "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "environment": _environment()}
        (self.path / "meta.json").write_text(json.dumps(meta, indent=2))

    def record_resume(self, cfg, changes: list[tuple[str, object, object]]) -> None:
        """A resume that changed allowed keys (e.g. run.max_steps): log the change and make config.yaml current."""
        from postlab.config import dump_yaml

        if self.rank:
            return
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv,
               "changes": [{"key": k, "old": old, "new": new} for k, old, new in changes]}
        with open(self.path / "resumes.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=_json_default) + "\n")
        dump_yaml(cfg, self.path / "config.yaml")

    def read_config(self) -> dict:
        import yaml

        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.exists() else {}

    # --------------------------------------------------------------- logging
    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if self.rank:
            return
        rec = {"step": step, "kind": kind, "time": round(time.time(), 3), **metrics}
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(rec, default=_json_default) + "\n")
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                if self._tb is not None:
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in metrics.items()}, step=step)

    def log_samples(self, step: int, samples: list[dict]) -> None:
        if self.rank:
            return
        with open(self.path / "samples.jsonl", "a") as fh:
            for s in samples:
                fh.write(json.dumps({"step": step, **s}, ensure_ascii=False, default=_json_default) + "\n")

    def read_metrics(self, kind: str | None = None) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r.get("kind") == kind]

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after `step` (they belong to a run that died before checkpointing)."""
        p = self.path / "metrics.jsonl"
        if self.rank == 0 and p.exists():
            keep = [line for line in p.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            p.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self.rank == 0:
            locks.release(self._lock)

    # --------------------------------------------------------------- checkpoints
    def checkpoint_dirs(self) -> list[Path]:
        dirs = [d for d in (self.path / "checkpoints").glob("step_*") if d.is_dir() and not d.name.endswith((".tmp", ".old"))]
        return sorted(dirs, key=lambda d: int(d.name.split("_")[1]))

    def latest_checkpoint(self) -> Path | None:
        dirs = [d for d in self.checkpoint_dirs() if (d / "trainer_state.json").exists()]
        return dirs[-1] if dirs else None

    def latest_good_checkpoint(self) -> Path | None:
        """The newest checkpoint whose files verify (check_checkpoint); None when none does.

        Says on stderr which damaged checkpoints it skipped and why, so a resume that falls back
        never hides lost steps."""
        damaged: list[tuple[Path, CheckpointError]] = []
        good = None
        for ckpt in reversed(self.checkpoint_dirs()):
            try:
                check_checkpoint(ckpt)
            except CheckpointError as e:
                damaged.append((ckpt, e))
                continue
            good = ckpt
            break
        if self.rank == 0:
            for ckpt, e in damaged:
                print(_damaged_message(ckpt, e, good), file=sys.stderr)
        return good

    def save_checkpoint(self, step: int, model, tokenizer, optimizer, state: dict, keep: int = 2,
                        extra_files: dict[str, bytes] | None = None) -> Path:
        tensors, opt_meta = optimizer_to_flat(optimizer)
        tensors.update(rng_tensors())
        state = {**state, "step": step, "optimizer": opt_meta, "python_random": _py_random_state()}
        from safetensors.torch import save as st_save

        extra = {"trainer_state.safetensors": st_save({k: v.contiguous() for k, v in tensors.items()}),
                 "trainer_state.json": json.dumps(state, default=_json_default).encode(), **(extra_files or {})}
        unwrapped = getattr(model, "module", model)
        out = save_pretrained_atomic(unwrapped, tokenizer, self.path / "checkpoints" / f"step_{step:06d}", extra)
        self._rotate(keep)
        return out

    def _rotate(self, keep: int) -> None:
        for old in self.checkpoint_dirs()[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    def save_sharded_checkpoint(self, step: int, model, tokenizer, optimizer, state: dict, keep: int = 2,
                                extra_files: dict[str, bytes] | None = None, modules: dict | None = None) -> Path:
        """A checkpoint of an FSDP2-sharded run; every rank calls it (it holds collectives).

        Each rank writes its shard of model and optimizer (torch.distributed.checkpoint, `dcp/`)
        and its RNG state (`trainer_state.rankR.safetensors`); rank 0 writes the Hugging Face copy
        from the gathered full state dict, the tokenizer, trainer_state.json and, last,
        checksums.json over every file. As for one process, the directory appears only complete
        (written as step_N.tmp, then renamed by rank 0). Needs a file system all ranks share."""
        from safetensors.torch import save as st_save

        from postlab import distributed
        from postlab.models.io import publish_directory, quiet_transformers, write_checksums

        quiet_transformers()
        out = self.path / "checkpoints" / f"step_{step:06d}"
        tmp = out.with_name(out.name + ".tmp")
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        distributed.barrier()
        distributed.save_sharded(tmp / distributed.SHARDED_DIR, model, optimizer, modules)
        (tmp / f"trainer_state.rank{self.rank}.safetensors").write_bytes(
            st_save({k: v.contiguous() for k, v in rng_tensors().items()},
                    metadata={"python_random": json.dumps(_py_random_state())}))
        full = distributed.full_state_dict(model)  # collective; the tensors land on rank 0
        if self.rank == 0:
            with distributed.plain_class(model) as plain:
                plain.save_pretrained(tmp, state_dict=full, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            meta = {**state, "step": step, "sharded": True, "world_size": distributed.world()[1]}
            (tmp / "trainer_state.json").write_bytes(json.dumps(meta, default=_json_default).encode())
            for name, data in (extra_files or {}).items():
                (tmp / name).write_bytes(data)
        del full
        distributed.barrier()  # every rank's files are in tmp
        if self.rank == 0:
            write_checksums(tmp)
            publish_directory(tmp, out)
            self._rotate(keep)
        distributed.barrier()
        return out


def check_checkpoint(ckpt: Path) -> None:
    """Raise CheckpointError (DamagedFileError naming the file) unless checkpoint `ckpt` can be resumed from.

    Verifies checksums.json when present (weights, trainer state, tokenizer: every byte), then the cheap
    structural checks that also cover checkpoints saved before checksums existed."""
    from postlab.models.io import DamagedFileError, check_safetensors, verify_checkpoint

    state = ckpt / "trainer_state.json"
    if not state.exists():
        raise DamagedFileError(state, "missing (the save did not finish)")
    verify_checkpoint(ckpt)
    check_safetensors(ckpt)  # model and trainer_state safetensors: headers and sizes
    try:
        json.loads(state.read_text())
    except ValueError as e:
        raise DamagedFileError(state, f"unreadable JSON ({e})") from None


def _damaged_message(ckpt: Path, e: CheckpointError, fallback: Path | None) -> str:
    from postlab.models.io import DamagedFileError

    what = f"file {e.file.name}: {e.problem}" if isinstance(e, DamagedFileError) else str(e)
    then = (f"falling back to {fallback.name}" if fallback is not None else
            "no good checkpoint remains (a run keeps only its last run.keep_checkpoints checkpoints)")
    return f"checkpoint {ckpt} is damaged ({what}); {then}"


def load_trainer_state(ckpt: Path, optimizer, model=None, modules: dict | None = None) -> dict:
    """Restore optimizer and RNG states from a checkpoint; return its JSON state.

    A sharded checkpoint (`dcp/`) restores model and optimizer through torch distributed
    checkpointing (any world size: DCP reshards), so `model` must be given."""
    from safetensors.torch import load_file

    from postlab import distributed

    if (ckpt / distributed.SHARDED_DIR).is_dir():
        return _load_sharded_state(ckpt, optimizer, model, modules)
    if distributed.is_sharded(model):
        raise CheckpointError(f"{ckpt}: written by a single-process run, but this run is sharded over "
                              f"{distributed.world()[1]} processes; resume it with one process (plain `postlab`), "
                              "or start a new multi-process run from its weights (model.path)")

    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        tensors = load_file(str(ckpt / "trainer_state.safetensors"))
    except Exception as e:  # noqa: BLE001
        # Resume takes a run directory, not a checkpoint: say what resume does about a damaged one.
        raise CheckpointError(f"{ckpt}: cannot read trainer state ({e}); the checkpoint is damaged. "
                              "`--resume RUN_DIR` falls back to the previous good checkpoint automatically; "
                              f"or delete {ckpt} and resume again") from None
    optimizer_from_flat(optimizer, tensors, state["optimizer"])
    restore_rng(tensors)
    random.setstate(_py_random_from_json(state["python_random"]))
    return state


# ------------------------------------------------------------------------- no-pickle state helpers


def _load_sharded_state(ckpt: Path, optimizer, model, modules: dict | None) -> dict:
    from safetensors import safe_open

    from postlab import distributed

    if model is None:
        raise CheckpointError(f"{ckpt}: a sharded (multi-process) checkpoint restores model and optimizer together; "
                              "call session.restore(optimizer, model)")
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        distributed.load_sharded(ckpt / distributed.SHARDED_DIR, model, optimizer, modules)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{ckpt}: cannot read the sharded trainer state ({e}); the checkpoint is damaged. "
                              "`--resume RUN_DIR` falls back to the previous good checkpoint automatically") from None
    # Each rank's own RNG; a resume on another world size gives the extra ranks rank 0's.
    rank_file = ckpt / f"trainer_state.rank{distributed.world()[0]}.safetensors"
    if not rank_file.exists():
        rank_file = ckpt / "trainer_state.rank0.safetensors"
    with safe_open(str(rank_file), framework="pt") as f:
        restore_rng({k: f.get_tensor(k) for k in f.keys()})
        random.setstate(_py_random_from_json(json.loads(f.metadata()["python_random"])))
    return state


def optimizer_to_flat(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = val.detach().cpu()
            else:
                scalars[f"{idx}.{name}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    for key, val in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _py_random_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _py_random_from_json(s):
    return (s[0], tuple(s[1]), s[2])
