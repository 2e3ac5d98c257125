"""The one training loop. A trainer is a set-up plus a step function; this module owns the rest.

    session = open_run(cfg, "sft", resume, data_fingerprint=...)   # refuse misuse of a run dir
    ... set-up: model (from session.checkpoint when resuming), optimizer, data, reference ...
    state = session.restore(optimizer)                             # step, RNGs, trainer state
    return run_loop(Trainer(name, model, tokenizer, optimizer, optim_cfg, step=..., ...), cfg.run, session)

`run_loop` owns what every trainer shares, so no trainer re-implements it:
- the learning-rate schedule (`lr_at`, set before every step);
- cadence: logging every `run.log_every` steps, evaluation every `run.eval_every`, atomic
  checkpoints every `run.save_every`, all three at the last step;
- integer token accounting: every train row carries `tokens_trained` / `tokens_generated`
  of its step and their running totals, which are checkpointed, so compute does not depend on
  `log_every` and survives a resume;
- errors: a `TrainingError` (non-finite loss or gradient) is re-raised naming the step, the
  last good checkpoint and the resume command;
- the end: the final model is saved before the final evaluation, so an evaluation error can
  never lose a trained model.

Data parallel (torchrun, `postlab.distributed`): `open_run` starts the process group; every rank
runs the loop; rank 0 alone logs, evaluates and writes run files. A set-up that shards its
model (`distributed.shard`) gets distributed checkpoints (each rank its shard, rank 0 the
Hugging Face copy) and a final save from the gathered full state dict; evaluation of a sharded
model runs on rank 0 inside `distributed.gathered(model)`, which every rank enters.

`open_run` owns the run directory's contract: a fresh run refuses a directory that already
holds one; `--resume` refuses a path that holds no run, another trainer, other data or another
config (only the keys in `RESUMABLE_CHANGES` may change, and each change is recorded in
`RUN/resumes.jsonl`); it resumes from the newest checkpoint whose checksums verify.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from postlab import distributed
from postlab.config import ConfigError, OptimConfig, RunConfig, to_dict
from postlab.progress import StepProgress, console, summary_table
from postlab.runs import RunDir, load_trainer_state
from postlab.trainers.common import TrainingError, lr_at, seed_everything, set_lr, world

# Keys a resumed run may change: how long it runs and how it reports, never what it learns from.
RESUMABLE_CHANGES = ("run.max_steps", "run.log_every", "run.eval_every", "run.save_every", "run.keep_checkpoints",
                     "run.num_samples", "run.device", "run.tensorboard", "run.wandb", "run.progress", "run.out_dir")


@dataclasses.dataclass
class StepOutput:
    """What one step reports: metrics to log and the step's integer token counts."""

    metrics: dict
    tokens_trained: int = 0
    tokens_generated: int = 0
    show: dict = dataclasses.field(default_factory=dict)  # shown in the progress line
    # more metrics.jsonl rows of this step, (kind, metrics), e.g. RASFT's `refresh` rows; logged before
    # the step's own row, at every step (log_every thins only the step rows)
    rows: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Trainer:
    """A set-up's product: the model and optimizer plus the functions the loop calls."""

    name: str  # "sft", "rl:grpo", ...
    model: object
    tokenizer: object
    optimizer: object
    optim: OptimConfig
    step: Callable[[int], StepOutput]  # one optimizer step (its 0-based index); may raise TrainingError
    evaluate: Callable[[int], dict] | None = None  # metrics at eval cadence (rank 0)
    state: Callable[[], dict] = dict  # JSON resume state besides weights/optimizer/RNG (data order, pools)
    save_extra: Callable[[Path], None] | None = None  # writes extra files into a checkpoint dir (e.g. value head)
    summary: Callable[[dict], dict] | None = None  # rows for the final table from the last metrics
    # Other modules whose parameters `optimizer` holds (e.g. PPO's value head): a sharded run's
    # distributed checkpoint stores their optimizer state with the model's. Pass the same dict to
    # `Session.restore`.
    modules: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Session:
    """An opened run directory: where a trainer writes and, when resuming, what it continues from."""

    run: RunDir
    checkpoint: Path | None  # the checkpoint to resume from (None: a fresh start)
    step: int = 0
    state: dict = dataclasses.field(default_factory=dict)

    def restore(self, optimizer, model=None, modules: dict | None = None) -> dict:
        """Load optimizer, RNG and trainer state from the resume checkpoint; returns the trainer state.

        A sharded run passes its (already sharded) `model` and the `Trainer.modules` it will
        build: its checkpoints hold model and optimizer shards that are restored together."""
        if self.checkpoint is None:
            return {}
        self.state = load_trainer_state(self.checkpoint, optimizer, model, modules)
        self.step = int(self.state["step"])
        self.run.truncate_metrics(self.step)  # rows the dead run logged after its last checkpoint
        console.print(f"resumed from {self.checkpoint} at step {self.step}")
        return self.state


# ----------------------------------------------------------------------------- the run directory


def fingerprint(obj) -> str:
    """A short stable hash of JSON-able data (training records, a dataset description)."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def holds_run(path: Path) -> bool:
    """True when `path` holds (the start of) a postlab run."""
    return (path / "config.yaml").exists() or (path / "final").exists() or any(path.glob("checkpoints/step_*"))


def never_started(path: Path) -> bool:
    """True when the run in `path` failed before its first step: no checkpoint, no final model and no
    logged step >= 1 (a bad model path, a hyperparameter that fails at set-up). Such a run holds nothing
    to lose, so a fresh run may replace it: a failed start never leaves a directory that refuses both
    the corrected command and --resume."""
    if (path / "final").exists() or any(path.glob("checkpoints/step_*")):
        return False
    metrics = path / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text(errors="replace").splitlines():
            try:
                if json.loads(line).get("step", 0) >= 1:
                    return False
            except (json.JSONDecodeError, AttributeError, TypeError):
                return False  # not a file postlab wrote: keep it
    return True


def open_run(cfg, trainer: str, resume: str | Path | None, data_fingerprint: str | None = None) -> Session:
    """Open `cfg.run.out_dir` for a fresh run, or `resume` to continue one (see the module doc)."""
    rank, _ = distributed.init_from_env()  # under torchrun: the process group, before anything else
    seed_everything(cfg.run.seed)
    if resume is None:
        out = Path(cfg.run.out_dir)
        replacing = holds_run(out) and never_started(out)
        if holds_run(out) and not replacing:
            raise ConfigError(f"run.out_dir: {out} already holds a run; continue it with --resume {out}, or choose "
                              "another run.out_dir (nothing was changed)")
        distributed.barrier()  # every rank has looked before rank 0 writes config.yaml
        run = RunDir(out, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb, rank=rank)  # locked: not in use
        if replacing:
            console.print(f"{out}: holds a run that failed before its first step; starting over in its place")
            run.truncate_metrics(0)
            for name in ("resumes.jsonl", "samples.jsonl"):
                if rank == 0 and (run.path / name).exists():
                    (run.path / name).unlink()
        run.write_meta(cfg, cfg.run.seed, trainer=trainer, data_fingerprint=data_fingerprint)
        return Session(run, None)
    path = Path(resume)
    if not (path / "config.yaml").exists() or not (path / "meta.json").exists():
        raise ConfigError(f"--resume {path}: no run there (no config.yaml / meta.json); give the run directory of "
                          "the run to continue, or drop --resume to start a new run")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("trainer") not in (None, trainer):
        raise ConfigError(f"--resume {path}: that directory holds a {meta['trainer']!r} run, not {trainer!r}; "
                          f"resume it with `postlab train {str(meta['trainer']).split(':')[0]}`, or start a new run")
    if data_fingerprint and meta.get("data_fingerprint") not in (None, data_fingerprint):
        raise ConfigError(f"--resume {path}: the training data differ from the run's (fingerprint "
                          f"{meta['data_fingerprint']} vs {data_fingerprint}); a resumed run must train on the same "
                          "data: restore them, or start a new run in another run.out_dir")
    run = RunDir(path, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb, rank=rank)
    changes = config_changes(_with_defaults(type(cfg), run.read_config()), to_dict(cfg))
    distributed.barrier()  # every rank has read the run's config before rank 0 rewrites it (record_resume)
    refused = [c for c in changes if c[0] not in RESUMABLE_CHANGES]
    if refused:
        lines = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in refused[:8])
        if never_started(path):
            run.close()
            raise ConfigError(f"--resume {path}: the config differs from the run's ({lines}), and that run failed "
                              "before its first step, so there is nothing to resume: drop --resume to start the "
                              f"corrected run in {path} (it replaces the failed start)")
        raise ConfigError(f"--resume {path}: the config differs from the run's ({lines}). A resumed run keeps its "
                          f"config except {', '.join(RESUMABLE_CHANGES)}; start a new run (another run.out_dir) "
                          "to change anything else")
    if changes:
        run.record_resume(cfg, changes)
    checkpoint = run.latest_good_checkpoint()
    if checkpoint is None:  # killed before its first checkpoint: start over, dropping the dead run's rows
        console.print(f"{path}: no good checkpoint to resume from; starting the run over")
        run.truncate_metrics(0)
        run.write_meta(cfg, cfg.run.seed, trainer=trainer, data_fingerprint=data_fingerprint)
    return Session(run, checkpoint)


def _with_defaults(cls, old: dict) -> dict:
    """The run's config with defaults for sections added since it was written (e.g. `rollout`), so a
    new key at its default is not a change; the config as written when it no longer loads."""
    from postlab.config import load_config

    try:
        return to_dict(load_config(cls, base=old))
    except (ConfigError, TypeError, ValueError):
        return old


def config_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old, new) for every leaf that differs between two config mappings."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".")
        elif _normal(a) != _normal(b):
            out.append((name, a, b))
    return out


def _normal(v):
    """YAML writes tuples as lists: compare the two alike."""
    return [_normal(x) for x in v] if isinstance(v, (list, tuple)) else v


# ----------------------------------------------------------------------------- the loop


def run_loop(trainer: Trainer, cfg: RunConfig, session: Session) -> Path:
    """Step `trainer` from `session.step` to `cfg.max_steps`; returns RUN/final."""
    rank, _ = world()
    run = session.run
    step = session.step
    totals = dict(session.state.get("totals") or {"tokens_trained": 0, "tokens_generated": 0})
    last: dict = {}
    start = time.time()
    with StepProgress(cfg.max_steps, trainer.name, start=step, enabled=cfg.progress) as progress:
        while step < cfg.max_steps:
            lr = lr_at(step, cfg.max_steps, trainer.optim.lr, trainer.optim)
            set_lr(trainer.optimizer, lr)
            t0 = time.time()
            try:
                out = trainer.step(step)
            except TrainingError as e:
                good = run.latest_good_checkpoint()
                raise TrainingError(f"{e} at step {step + 1}; stopping. Last good checkpoint: {good or 'none'}"
                                    + (f"; continue with --resume {run.path}" if good else "")) from None
            step += 1
            if world()[1] > 1:  # a step reports its rank's tokens; the run counts every rank's
                out.tokens_trained, out.tokens_generated = (int(x) for x in distributed.all_reduce_sum(
                    [float(out.tokens_trained), float(out.tokens_generated)]))
            totals["tokens_trained"] += int(out.tokens_trained)
            totals["tokens_generated"] += int(out.tokens_generated)
            elapsed = max(time.time() - t0, 1e-9)
            metrics = {**out.metrics, "lr": lr, "tokens_trained": int(out.tokens_trained),
                       "tokens_generated": int(out.tokens_generated),
                       "tokens_trained_total": totals["tokens_trained"],
                       "tokens_generated_total": totals["tokens_generated"],
                       "tokens_per_s": (out.tokens_trained + out.tokens_generated) / elapsed, "step_time_s": elapsed}
            progress.advance(tokens=out.tokens_trained + out.tokens_generated, **out.show)
            for kind, row in out.rows:
                run.log(step, row, kind=kind)
            final = step == cfg.max_steps
            if step % max(cfg.log_every, 1) == 0 or final:
                run.log(step, metrics)
            last = metrics
            if trainer.evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0 and not final:
                last.update(_evaluate(trainer, step))
            if (cfg.save_every and step % cfg.save_every == 0) or final:
                save_checkpoint(trainer, run, step, totals, cfg.keep_checkpoints)
    final_dir = save_final(trainer, run)
    if trainer.evaluate is not None:  # after the save: an eval error cannot lose the model
        last.update(_evaluate(trainer, step))
    rows = {"steps": step, "tokens trained": totals["tokens_trained"], "tokens generated": totals["tokens_generated"],
            "wall time (s)": round(time.time() - start, 1)}
    rows.update(trainer.summary(last) if trainer.summary else {k: v for k, v in last.items() if k.startswith("eval_")})
    summary_table(f"{trainer.name} finished: {run.path}", rows)
    run.close()
    return final_dir


def _evaluate(trainer: Trainer, step: int) -> dict:
    """`trainer.evaluate` on rank 0; a sharded model's weights are gathered on every rank around it."""
    with distributed.gathered(trainer.model):
        return trainer.evaluate(step) if world()[0] == 0 else {}


def save_checkpoint(trainer: Trainer, run: RunDir, step: int, totals: dict, keep: int) -> None:
    if distributed.is_sharded(trainer.model):  # every rank writes its shard
        extra = _extra_files(trainer.save_extra) if trainer.save_extra is not None and world()[0] == 0 else None
        run.save_sharded_checkpoint(step, trainer.model, trainer.tokenizer, trainer.optimizer,
                                    {**trainer.state(), "totals": dict(totals)}, keep, extra_files=extra,
                                    modules=trainer.modules)
        return
    if world()[0] == 0:
        extra = _extra_files(trainer.save_extra) if trainer.save_extra is not None else None
        run.save_checkpoint(step, trainer.model, trainer.tokenizer, trainer.optimizer,
                            {**trainer.state(), "totals": dict(totals)}, keep, extra_files=extra)
    distributed.barrier()


def save_final(trainer: Trainer, run: RunDir) -> Path:
    from postlab.models.io import save_pretrained_atomic

    final = run.path / "final"
    if distributed.is_sharded(trainer.model):
        full = distributed.full_state_dict(trainer.model)  # collective; the tensors land on rank 0 (CPU)
        if world()[0] == 0:
            extra = _extra_files(trainer.save_extra) if trainer.save_extra is not None else {}
            with distributed.plain_class(trainer.model) as plain:
                save_pretrained_atomic(plain, trainer.tokenizer, final, extra, state_dict=full)
        del full
        distributed.barrier()
        return final
    if world()[0] == 0:
        model = getattr(trainer.model, "module", trainer.model)
        extra = {}
        if trainer.save_extra is not None:
            extra = _extra_files(trainer.save_extra)
        save_pretrained_atomic(model, trainer.tokenizer, final, extra, final=True)  # LoRA: + merged/ if asked
    distributed.barrier()
    return final


def _extra_files(save_extra: Callable[[Path], None]) -> dict[str, bytes]:
    """Run `save_extra` into a scratch directory and return its files, so they join an atomic save."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_extra(Path(tmp))
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
