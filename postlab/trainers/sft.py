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
from pathlib import Path

import torch

from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.records import DataError, encode_all, iter_texts, load_records, prompt_and_target
from postlab.objectives.registry import AGGREGATION_MODES, AggregationMode, get_objective
from postlab.progress import console
from postlab.rollout.engine import SamplingParams, generate
from postlab.runs import RunDir
from postlab.trainers.common import count_parameters, pack_micro_batches, shard_for_rank, update_step, world
from postlab.trainers.loop import Session, StepOutput, Trainer, fingerprint, open_run, run_loop
from postlab.trainers.setup import BatchConfig, DataOrder, setup_optimizer, setup_policy


@dataclasses.dataclass
class SFTDataConfig:
    train: str | None = None  # JSONL file (or hf:NAME); None when records are passed in Python
    eval: str | None = None
    eval_holdout: int = 0  # when eval is None: hold out this many training records
    max_length: int = 1024
    shuffle: bool = True


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
    train_records, eval_records = _load_data(cfg, train_records, eval_records)
    session = open_run(cfg, "sft", resume, data_fingerprint=fingerprint(train_records))
    trainer, _ = setup_sft(cfg, session, train_records, eval_records, tokenizer_texts)
    return run_loop(trainer, cfg.run, session)


def _load_data(cfg: SFTConfig, train_records, eval_records) -> tuple[list[dict], list[dict] | None]:
    """Training and held-out records: passed in, or read from data.train / data.eval / data.eval_holdout."""
    _, world_size = world()
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
    return train_records, eval_records


def setup_sft(cfg: SFTConfig, session: Session, train_records: list[dict], eval_records: list[dict] | None,
              tokenizer_texts: list[str] | None = None):
    """Model, reference, optimizer, encoded data and data order; returns (Trainer, encoded train sequences).

    Data parallel (torchrun): policy and reference are FSDP2-sharded (`trainers.setup.setup_policy`)."""
    objective = get_objective(cfg.objective)
    texts = tokenizer_texts or list(iter_texts(train_records + (eval_records or [])))
    policy = setup_policy(cfg.model, cfg.run, session, texts=texts, seed=cfg.run.seed,
                          reference=f"objective {cfg.objective!r}" if objective.needs_ref else None)
    model, tokenizer, ref_model, device = policy.model, policy.tokenizer, policy.reference, policy.device
    rank, world_size = policy.rank, policy.world_size
    train_seqs = _trainable(encode_all(tokenizer, train_records, cfg.data.max_length), "training")
    eval_seqs = encode_all(tokenizer, eval_records, cfg.data.max_length) if eval_records else []
    optimizer, state = setup_optimizer(model, cfg.optim, session)
    order = DataOrder(len(train_seqs), cfg.run.seed, cfg.data.shuffle, **state.get("data", {}))
    console.print(f"SFT: {count_parameters(model) / 1e6:.2f}M parameters, {len(train_seqs)} train / {len(eval_seqs)} "
                  f"eval records, objective={cfg.objective}, aggregation={cfg.aggregation}, device={device}")
    model.train()

    def step(_: int) -> StepOutput:
        seqs = [train_seqs[i] for i in order.take(cfg.batch.sequences_per_step)]
        seqs = shard_for_rank(seqs, rank, world_size)  # data parallel: this rank's share of the step
        micro = pack_micro_batches(seqs, cfg.batch.micro_batch_sequences)
        metrics = update_step(model, optimizer, micro, objective, cfg.objective_args, cfg.aggregation,
                              cfg.optim.grad_clip, ref_model=ref_model)
        metrics["epoch"] = order.epoch
        tokens = sum(mb.num_tokens for mb in micro)
        return StepOutput(metrics, tokens_trained=tokens, show={"loss": metrics["loss"]})

    def evaluate(step_: int) -> dict:
        return _evaluate(cfg, session.run, model, tokenizer, eval_records, eval_seqs, step_)

    trainer = Trainer("sft", model, tokenizer, optimizer, cfg.optim, step=step, evaluate=evaluate,
                      state=lambda: {"data": order.state()},
                      summary=lambda last: {"final loss": last.get("loss", float("nan")),
                                            **{k: v for k, v in last.items() if k.startswith("eval_")}})
    return trainer, train_seqs


def _trainable(seqs: list, what: str) -> list:
    """Drop sequences with no trained token (e.g. truncated away by data.max_length), saying how many."""
    keep = [s for s in seqs if any(s.loss_mask)]
    if len(keep) < len(seqs):
        console.print(f"warning: {len(seqs) - len(keep)} of {len(seqs)} {what} records have no trainable token "
                      "(all turns masked or truncated by data.max_length); skipped")
    return keep


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
