"""Supervised fine-tuning (and its variants: DFT, SFT+KL, ASFT, ProFit, weighted SFT).

One optimizer step:
    1. take the next `batch.sequences_per_step` records of a seeded, epoch-wise permutation;
    2. split them into micro-batches of `batch.micro_batch_sequences`, pack each padding-free;
    3. per micro-batch: per-token loss from the objective, reduced by `aggregate` with the
       step's global counts (so micro-batching and data parallelism do not change gradients);
       backward;
    4. clip, AdamW step at lr_at(step).
Every `run.eval_every` steps: held-out loss and greedy exact-match accuracy, samples written.
Every `run.save_every` steps: an atomic checkpoint (model, optimizer, RNG, data position), so
`--resume` continues bit-identically on CPU. A non-finite loss stops the run and names the step;
the last good checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.records import DataError, encode_all, iter_texts, load_records, prompt_and_target
from postlab.models.io import load_model, pick_device
from postlab.objectives.registry import AGGREGATION_MODES, AggregationMode, get_objective
from postlab.progress import StepProgress, console, summary_table
from postlab.rollout.engine import SamplingParams, generate
from postlab.runs import RunDir, load_trainer_state
from postlab.trainers.common import (TrainingError, accumulate_gradients, all_reduce_gradients, broadcast_parameters,
                                     count_parameters, lr_at, make_optimizer, optimizer_step, pack_micro_batches,
                                     seed_everything, set_lr, setup_model, shard_for_rank, step_normalizer, world)


@dataclasses.dataclass
class SFTDataConfig:
    train: str | None = None  # JSONL file (or hf:NAME); None when records are passed in Python
    eval: str | None = None
    eval_holdout: int = 0  # when eval is None: hold out this many training records
    max_length: int = 1024
    shuffle: bool = True


@dataclasses.dataclass
class BatchConfig:
    """Sequences per optimizer step, split into micro-batches; accumulation steps follow."""

    sequences_per_step: int = 32
    micro_batch_sequences: int = 32

    def __post_init__(self):
        if self.sequences_per_step <= 0 or self.micro_batch_sequences <= 0:
            raise ConfigError(f"batch: sequences_per_step ({self.sequences_per_step}) and micro_batch_sequences "
                              f"({self.micro_batch_sequences}) must be > 0")
        if self.micro_batch_sequences > self.sequences_per_step:
            raise ConfigError(f"batch.micro_batch_sequences ({self.micro_batch_sequences}) must be <= "
                              f"batch.sequences_per_step ({self.sequences_per_step})")

    @property
    def accumulation_steps(self) -> int:
        return -(-self.sequences_per_step // self.micro_batch_sequences)


@dataclasses.dataclass
class EvalConfig:
    max_examples: int = 64  # held-out records scored by greedy exact match
    max_new_tokens: int = 64


@dataclasses.dataclass
class SFTConfig:
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(preset="tiny"))
    data: SFTDataConfig = dataclasses.field(default_factory=SFTDataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    objective: str = "nll"  # nll | dft | weighted_nll | sft_kl | asft | profit (docs/objectives.md)
    objective_args: dict = dataclasses.field(default_factory=dict)
    aggregation: AggregationMode = "token_mean"

    def __post_init__(self):
        try:
            obj = get_objective(self.objective)
        except ValueError as e:
            raise ConfigError(f"objective: {e}") from None
        import inspect

        valid = [p for p in inspect.signature(obj.fn).parameters if p != "inp"]
        for k in self.objective_args:
            if k not in valid:
                raise ConfigError(f"objective_args.{k}: not a parameter of {self.objective!r}; valid: {valid or 'none'}")
        if self.aggregation not in AGGREGATION_MODES:
            raise ConfigError(f"aggregation: {self.aggregation!r}; valid: {', '.join(AGGREGATION_MODES)}")


class DataOrder:
    """Seeded epoch-wise permutation; its state (epoch, position) is saved in checkpoints."""

    def __init__(self, n: int, seed: int, shuffle: bool, epoch: int = 0, position: int = 0):
        self.n, self.seed, self.shuffle, self.epoch, self.position = n, seed, shuffle, epoch, position
        self._perm = self._permutation()

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation()
            out.append(self._perm[self.position])
            self.position += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}


def exact_match_eval(model, tokenizer, records: list[dict], max_new_tokens: int) -> tuple[float, list[dict]]:
    """Greedy generation on held-out records; fraction whose answer equals the target exactly."""
    pairs = [prompt_and_target(tokenizer, r) for r in records]
    outs = generate(model, tokenizer, [p for p, _ in pairs], SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
    samples = [{"prompt": tokenizer.decode(p), "target": t, "output": o.text.strip(), "correct": o.text.strip() == t.strip()}
               for (p, t), o in zip(pairs, outs)]
    return sum(s["correct"] for s in samples) / max(1, len(samples)), samples


@torch.no_grad()
def heldout_loss(model, seqs, micro: int) -> float:
    total, count = 0.0, 0
    for mb in pack_micro_batches(seqs, micro):
        from postlab.models.forward import token_outputs

        if mb.num_targets == 0:
            continue
        lp = token_outputs(model, mb.to(next(model.parameters()).device)).logp
        total, count = total - lp.sum().item(), count + lp.numel()
    return total / max(count, 1)


def train_sft(cfg: SFTConfig, train_records: list[dict] | None = None, eval_records: list[dict] | None = None,
              resume: str | Path | None = None, tokenizer_texts: list[str] | None = None) -> Path:
    """Run SFT; returns the path of the final Hugging Face checkpoint (RUN/final)."""
    rank, world_size = world()
    device = pick_device(cfg.run.device)
    if cfg.batch.sequences_per_step < world_size:
        raise ConfigError(f"batch.sequences_per_step ({cfg.batch.sequences_per_step}) must be >= the number of "
                          f"data-parallel processes ({world_size})")
    if train_records is None:
        if cfg.data.train is None:
            raise ConfigError("data.train: no training data given (a JSONL path)")
        train_records = load_records(cfg.data.train)
    if eval_records is None and cfg.data.eval is not None:
        eval_records = load_records(cfg.data.eval)
    if eval_records is None and cfg.data.eval_holdout:
        if cfg.data.eval_holdout >= len(train_records):
            raise DataError(f"data.eval_holdout ({cfg.data.eval_holdout}) >= number of records ({len(train_records)})")
        train_records, eval_records = train_records[cfg.data.eval_holdout:], train_records[:cfg.data.eval_holdout]
    if not train_records:
        raise DataError("training data is empty")

    if not resume and ((Path(cfg.run.out_dir) / "final").exists() or any(Path(cfg.run.out_dir).glob("checkpoints/step_*"))):
        raise ConfigError(f"run.out_dir: {cfg.run.out_dir} already holds a run; continue it with --resume "
                          f"{cfg.run.out_dir} (train_sft(..., resume=...)), or choose another run.out_dir")
    run = RunDir(resume or cfg.run.out_dir, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb, rank=rank)
    seed_everything(cfg.run.seed)
    ckpt = run.latest_checkpoint() if resume else None
    if ckpt is not None:
        model, tokenizer = setup_model(dataclasses.replace(cfg.model, path=str(ckpt), preset=None), device)
    else:
        texts = tokenizer_texts or list(iter_texts(train_records + (eval_records or [])))
        model, tokenizer = setup_model(cfg.model, device, texts_for_tokenizer=texts, seed=cfg.run.seed)
        run.write_meta(cfg, cfg.run.seed)
        if resume:  # killed before its first checkpoint: start over, dropping the dead run's metrics
            run.truncate_metrics(0)
    broadcast_parameters(model)
    objective = get_objective(cfg.objective)
    ref_model = None
    if objective.needs_ref:  # the frozen initial checkpoint
        ref_model = load_model(cfg.model.path, dtype=cfg.model.dtype, device=device) if cfg.model.path else None
        if ref_model is None:
            raise ConfigError(f"objective {cfg.objective!r} needs a reference: set model.path to a checkpoint")
        ref_model.eval().requires_grad_(False)

    train_seqs = _trainable(encode_all(tokenizer, train_records, cfg.data.max_length), "training")
    eval_seqs = encode_all(tokenizer, eval_records, cfg.data.max_length) if eval_records else []
    optimizer = make_optimizer(model, cfg.optim)
    order = DataOrder(len(train_seqs), cfg.run.seed, cfg.data.shuffle)
    step = 0
    if ckpt is not None:
        state = load_trainer_state(ckpt, optimizer)
        step = state["step"]
        order = DataOrder(len(train_seqs), cfg.run.seed, cfg.data.shuffle, **state["data"])
        run.truncate_metrics(step)
        console.print(f"resumed from {ckpt} at step {step}")

    console.print(f"SFT: {count_parameters(model) / 1e6:.2f}M parameters, {len(train_seqs)} train / {len(eval_seqs)} "
                  f"eval records, objective={cfg.objective}, aggregation={cfg.aggregation}, device={device}")
    model.train()
    last: dict = {}
    start = time.time()
    trained_tokens = 0
    with StepProgress(cfg.run.max_steps, "sft", start=step, enabled=cfg.run.progress) as progress:
        while step < cfg.run.max_steps:
            seqs = [train_seqs[i] for i in order.take(cfg.batch.sequences_per_step)]
            seqs = shard_for_rank(seqs, rank, world_size)  # data parallel: this rank's share of the step
            micro = pack_micro_batches(seqs, cfg.batch.micro_batch_sequences)
            norm = step_normalizer(micro, device=device)
            lr = lr_at(step, cfg.run.max_steps, cfg.optim.lr, cfg.optim)
            set_lr(optimizer, lr)
            try:
                metrics = accumulate_gradients(model, micro, objective, cfg.objective_args, cfg.aggregation, norm,
                                               ref_model=ref_model)
                all_reduce_gradients(model)  # sum over ranks (aggregate used global counts)
                metrics["grad_norm"] = optimizer_step(model, optimizer, cfg.optim.grad_clip)
            except TrainingError as e:
                good = run.latest_checkpoint()
                raise TrainingError(f"{e} at step {step + 1}; stopping. Last good checkpoint: {good or 'none'}") from None
            step += 1
            tokens = sum(mb.num_tokens for mb in micro)
            trained_tokens += tokens
            metrics.update(lr=lr, tokens=tokens, epoch=order.epoch)
            progress.advance(tokens=tokens, loss=metrics["loss"])
            if step % max(cfg.run.log_every, 1) == 0 or step == cfg.run.max_steps:
                run.log(step, {**metrics, "tokens_per_s": progress.tokens_per_second()})
            last = metrics
            if rank == 0 and ((cfg.run.eval_every and step % cfg.run.eval_every == 0) or step == cfg.run.max_steps):
                last.update(_evaluate(cfg, run, model, tokenizer, eval_records, eval_seqs, step))
            if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.run.max_steps:
                if rank == 0:
                    run.save_checkpoint(step, model, tokenizer, optimizer, {"data": order.state()},
                                        cfg.run.keep_checkpoints)
                _barrier()

    final = run.path / "final"
    from postlab.models.io import save_pretrained_atomic

    if rank == 0:
        save_pretrained_atomic(getattr(model, "module", model), tokenizer, final)
    summary = {"steps": step, "final loss": last.get("loss", float("nan")), "trained tokens": trained_tokens,
               "wall time (s)": round(time.time() - start, 1)}
    summary.update({k: v for k, v in last.items() if k.startswith("eval_")})
    summary_table(f"SFT finished: {run.path}", summary)
    run.close()
    return final


def _trainable(seqs: list, what: str) -> list:
    """Drop sequences with no trained token (e.g. truncated away by data.max_length), saying how many."""
    keep = [s for s in seqs if any(s.loss_mask)]
    if len(keep) < len(seqs):
        console.print(f"warning: {len(seqs) - len(keep)} of {len(seqs)} {what} records have no trainable token "
                      "(all turns masked or truncated by data.max_length); skipped")
    return keep


def _barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def _evaluate(cfg: SFTConfig, run: RunDir, model, tokenizer, eval_records, eval_seqs, step: int) -> dict:
    if not eval_seqs:
        return {}
    model.eval()
    metrics = {"eval_loss": heldout_loss(model, eval_seqs, cfg.batch.micro_batch_sequences)}
    scorable = [r for r in eval_records if "text" not in r or "messages" in r or "prompt" in r][: cfg.eval.max_examples]
    if scorable:
        acc, samples = exact_match_eval(model, tokenizer, scorable, cfg.eval.max_new_tokens)
        metrics["eval_exact_match"] = acc
        run.log_samples(step, samples[: cfg.run.num_samples])
    model.train()
    run.log(step, metrics, kind="eval")
    return metrics
