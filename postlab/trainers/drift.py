"""DRIFT: importance-weighted SFT on trajectories sampled once from a fixed reference.

Mu et al., "Decoupled Rollouts and Importance-Weighted Fine-Tuning" (arXiv 2605.31455, ICML
2026); methods.md section 4. KL-regularized RL over whole multi-turn trajectories,
max E_pi[R] - beta KL(pi || pi_ref), has the optimum

    pi*(tau|x) = pi_ref(tau|x) exp(R(tau)/beta) / Z(x).

Fitting pi_theta to pi* (min KL(pi* || pi_theta)) is maximum likelihood on samples of pi*, and
with samples of pi_ref instead it is importance-weighted SFT: weight w = pi*/pi_ref, which is
exp(R/beta) up to Z(x), estimated per prompt by self-normalizing over its samples:

    w_i = exp(R_i/beta) / mean_{j in prompt(i)} exp(R_j/beta)               (postlab.objectives.returns)
    L   = (1/B) sum_i w_i l_i       l_i = token-mean CE of trajectory i's LAST model turn,
                                          conditioned on the whole dialogue before it
    or, reduction "normalized" (the authors' BATCH_WEIGHT_NORMAL), L = sum_i w_i l_i / sum_i w_i.

So the expensive part of RL, sampling, happens once (`postlab rollout`, postlab.rollout.offline),
and training costs what SFT on the same number of sequences costs.

Set-up, all before the run directory is touched (so a bad file leaves nothing behind): read
and validate every trajectory file (`read_trajectories` names file, line and field), check that
they come from ONE reference checkpoint, recompute each return R from its line's verdicts and
answers with this config's gamma and penalties (so the return is this run's, not the sampler's
defaults), weights, records (`to_drift_records`: only the last assistant turn is trained). Then
`open_run` with a fingerprint of the files (`--resume` with other data is refused), the policy
(the reference checkpoint unless `model` says otherwise), AdamW.

One step = one weighted SFT step on the next `batch.sequences_per_step` records in file order
(no shuffling, 1 epoch: the published run), on the shared loop (postlab.trainers.loop), which
owns the schedule, cadence, checkpoints, resume and the final save. Each step logs the batch's
mean and max weight, its effective sample size (Kish: (sum w)^2 / sum w^2) and the fraction of
prompt groups kept by `drop_all_fail` (1 unless that option drops any); set-up prints the data's
success rate, share of all-fail prompts and share of the weight on successful trajectories.

Stated simplifications and defaults:
- only the last model turn is a target (the authors' code), not every turn of tau;
- gamma 0.9 and beta 0.1 are the published run script's; the authors' code defaults to
  gamma 0.7, beta 0.2 (set `weights.gamma` / `weights.beta` to use those);
- when every sample of a prompt fails, its weights are all ~1 and DRIFT imitates failures (the
  method's weakness): `weights.drop_all_fail` drops such groups, `weights.normalization: global`
  normalizes over the whole dataset instead of per prompt; `weights.clip` caps weights. All off
  by default, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from postlab import distributed
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.records import DataError, encode_all
from postlab.data.trajectories import read_trajectories, to_drift_records
from postlab.objectives.registry import get_objective
from postlab.objectives.returns import (DEFAULT_BETA, DEFAULT_FORMAT_PENALTY, DEFAULT_GAMMA, DEFAULT_REPETITION_COEF,
                                        drift_weights, effective_sample_size, trajectory_return)
from postlab.progress import console
from postlab.trainers.common import count_parameters, pack_micro_batches, shard_for_rank, update_step
from postlab.trainers.envsection import EnvConfig, evaluate_env, validate_env
from postlab.trainers.loop import Session, StepOutput, Trainer, fingerprint, open_run, run_loop
from postlab.trainers.setup import BatchConfig, DataOrder, setup_optimizer, setup_policy


@dataclasses.dataclass
class DRIFTDataConfig:
    paths: list[str] = dataclasses.field(default_factory=list)  # trajectory JSONL files of `postlab rollout`
    max_length: int = 1024  # tokens per dialogue; a longer one loses its last turn and is skipped (counted)
    shuffle: bool = False  # the published run: no shuffling (file order, prompt-major)


@dataclasses.dataclass
class DRIFTWeightsConfig:
    """R(tau) and w_i (postlab.objectives.returns); defaults: the published run script."""

    beta: float = DEFAULT_BETA  # temperature of exp(R/beta); authors' code default 0.2
    gamma: float = DEFAULT_GAMMA  # reward decay over attempts; authors' code default 0.7
    format_penalty: float = DEFAULT_FORMAT_PENALTY  # per turn without a parsable <answer>
    repetition_coef: float = DEFAULT_REPETITION_COEF  # -coef * (1 - distinct answers / answers)
    drop_all_fail: bool = False  # drop prompts none of whose samples succeeded (else they imitate failures)
    normalization: Literal["prompt", "global"] = "prompt"  # the mean-1 unit: each prompt (paper) or the dataset
    clip: float | None = None  # cap every weight at clip (>= 1), keeping the unit's mean 1; the paper: none
    from_file: bool = False  # use each line's own `weight` field instead (every line must have one)


def drift_eval_env() -> EnvConfig:
    """DRIFT's evaluation env: multi-turn math with unary feedback, 5 attempts (10 model turns, unparsable
    ones included), 64 tokens per turn. No splits by default: studies evaluate in their own eval stages."""
    return EnvConfig(name="unary-feedback", kwargs={"env": "math", "max_attempts": 5}, max_turns=10, eval_splits=(),
                     eval_max_new_tokens=64)


@dataclasses.dataclass
class DRIFTRunConfig(RunConfig):
    out_dir: str = "runs/drift"
    max_steps: int = 0  # 0: `epochs` passes over the records, ceil(epochs x records / batch.sequences_per_step)
    log_every: int = 1  # one epoch is few steps: log each (weights, ESS per batch)

    def __post_init__(self):
        if self.max_steps < 0:
            raise ConfigError(f"run.max_steps: must be >= 0 (0 = follow from `epochs` and the data), got "
                              f"{self.max_steps}")
        # every other check is RunConfig's
        RunConfig(**{**{f.name: getattr(self, f.name) for f in dataclasses.fields(RunConfig)},
                     "max_steps": self.max_steps or 1})


@dataclasses.dataclass
class DRIFTConfig:
    RENAMED = {"eval": "env (env.eval_splits, env.eval_episodes, env.eval_max_new_tokens; env.name, env.kwargs)"}

    # The policy's initial weights; None = the reference checkpoint the trajectories were sampled
    # from (as the method assumes: pi_theta starts at pi_ref).
    model: ModelConfig | None = None
    data: DRIFTDataConfig = dataclasses.field(default_factory=DRIFTDataConfig)
    weights: DRIFTWeightsConfig = dataclasses.field(default_factory=DRIFTWeightsConfig)
    reduction: Literal["mean", "normalized"] = "mean"  # (1/B) sum w_i l_i  |  sum w_i l_i / sum w_i
    epochs: float = 1.0  # the published run: 1 epoch (sets the steps when run.max_steps is 0)
    # the published run: lr 5e-6, constant after 10% warm-up, weight decay 0.1, gradient clip 1, batch 128
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        lr=5e-6, weight_decay=0.1, schedule="constant", warmup_ratio=0.1, grad_clip=1.0))
    batch: BatchConfig = dataclasses.field(default_factory=lambda: BatchConfig(sequences_per_step=128,
                                                                               micro_batch_sequences=16))
    # evaluation during training (env.eval_splits, every run.eval_every steps and at the end); the training
    # data is offline, so this env only evaluates
    env: EnvConfig = dataclasses.field(default_factory=drift_eval_env)
    run: DRIFTRunConfig = dataclasses.field(default_factory=DRIFTRunConfig)

    def __post_init__(self):
        w = self.weights
        if not self.data.paths:
            raise ConfigError("data.paths: no trajectory file given; write one with `postlab rollout CONFIG` and set "
                              "data.paths=[FILE.jsonl]")
        if not w.beta > 0:
            raise ConfigError(f"weights.beta: must be > 0, got {w.beta}")
        if not 0 <= w.gamma <= 1:
            raise ConfigError(f"weights.gamma: must be in [0, 1], got {w.gamma}")
        if w.clip is not None and not w.clip >= 1:
            raise ConfigError(f"weights.clip: must be >= 1 or null (weights average 1 per unit), got {w.clip}")
        if w.from_file and (w.drop_all_fail or w.normalization != "prompt" or w.clip is not None):
            raise ConfigError("weights.from_file uses each line's stored weight as is; drop_all_fail, normalization "
                              "and clip apply only to weights computed here: unset them, or weights.from_file=false")
        if not self.epochs > 0:
            raise ConfigError(f"epochs: must be > 0, got {self.epochs}")
        if self.data.max_length < 2:
            raise ConfigError(f"data.max_length: must be >= 2, got {self.data.max_length}")


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class DriftData:
    """The training records and what they were made from; built before any run directory is touched."""

    records: list[dict]  # to_drift_records: last turn trained, `weight` = w_i (kept trajectories only)
    success: list[bool]  # per record: its trajectory solved the problem
    reference: dict  # {"path", "sha256"} of the checkpoint every trajectory was sampled from
    fingerprint: str  # of the files' bytes: --resume with other data is refused
    stats: dict  # dataset-level numbers printed at set-up (trajectories, groups, kept groups, ESS, ...)


def load_drift_data(cfg: DRIFTConfig) -> DriftData:
    """Read, validate and weight every trajectory of `cfg.data.paths` (DataError names file, line, field)."""
    from postlab.models.io import file_sha256

    trajs, groups, where = [], [], []
    for k, path in enumerate(cfg.data.paths):
        for n, t in enumerate(read_trajectories(path), 1):
            trajs.append(t)
            groups.append((k, t["prompt_id"]))  # prompt ids restart in every file (one rollout job each)
            where.append(f"{path}: trajectory {n} (prompt {t['prompt_id']}, sample {t['sample']})")
    ref = trajs[0]["reference"]
    for t, w in zip(trajs, where):
        if t["reference"]["sha256"] != ref["sha256"]:
            raise DataError(f"{w}: sampled from reference {t['reference']['path']} (sha256 "
                            f"{t['reference']['sha256'][:12]}...), but {where[0]} from {ref['path']} (sha256 "
                            f"{ref['sha256'][:12]}...); DRIFT's weights assume ONE fixed reference: train on files "
                            "of one reference checkpoint")
    wc = cfg.weights
    success = [bool(t["success"]) for t in trajs]
    if wc.from_file:
        missing = next((w for t, w in zip(trajs, where) if "weight" not in t), None)
        if missing:
            raise DataError(f"{missing}: no 'weight' field, but weights.from_file is set; add one to every line or set "
                            "weights.from_file=false (weights from the returns)")
        weights, keep = [float(t["weight"]) for t in trajs], [True] * len(trajs)
    else:
        returns = [trajectory_return(t["verdicts"], t["answers"], wc.gamma, wc.format_penalty, wc.repetition_coef)
                   for t in trajs]
        dw = drift_weights(returns, groups, beta=wc.beta, drop_all_fail=wc.drop_all_fail,
                           normalization=wc.normalization, clip=wc.clip, success=success)
        weights, keep = dw.weights.tolist(), dw.keep.tolist()
    records = to_drift_records(trajs, weights, keep)
    if not records:
        raise DataError(f"{', '.join(cfg.data.paths)}: no trajectory left to train on (weights.drop_all_fail dropped "
                        "every prompt: none of them was ever solved); sample more per prompt, or unset drop_all_fail")
    all_groups = set(groups)
    kept_groups = {g for g, k in zip(groups, keep) if k}
    kept_w = [w for w, k in zip(weights, keep) if k]
    solved = {g for g, s in zip(groups, success) if s}
    stats = {"trajectories": len(trajs), "prompts": len(all_groups), "success rate": sum(success) / len(trajs),
             "all-fail prompts": len(all_groups - solved) / len(all_groups),
             "kept prompts": len(kept_groups) / len(all_groups), "records": len(records),
             "weight max": max(kept_w), "ESS / records": effective_sample_size(kept_w) / len(kept_w),
             # how much of the loss imitates successes: the rest is failures' last turns (all-fail prompts
             # weigh ~1 per trajectory, so with many of them DRIFT mostly imitates failures)
             "weight on successes": sum(w for w, s, k in zip(weights, success, keep) if s and k) / sum(kept_w)}
    files = fingerprint([file_sha256(Path(p)) for p in cfg.data.paths])
    return DriftData(records, [s for s, k in zip(success, keep) if k], ref, files, stats)


def policy_config(cfg: DRIFTConfig, reference: dict) -> ModelConfig:
    """`cfg.model`, or the trajectories' reference checkpoint (it must exist here)."""
    if cfg.model is not None:
        return cfg.model
    if not Path(reference["path"]).is_dir():
        raise ConfigError(f"model: not set, so the policy starts from the trajectories' reference checkpoint "
                          f"{reference['path']}, which does not exist here; set model.path to that checkpoint")
    return ModelConfig(path=reference["path"])


# ----------------------------------------------------------------------------- training


def train_drift(cfg: DRIFTConfig, resume: str | Path | None = None) -> Path:
    """Run DRIFT; returns the final Hugging Face checkpoint (RUN/final)."""
    if cfg.env.eval_splits:
        validate_env(cfg.env)
    data = load_drift_data(cfg)  # every data error surfaces here, before the run directory exists
    model_cfg = policy_config(cfg, data.reference)
    session = open_run(cfg, "drift", resume, data_fingerprint=data.fingerprint)
    trainer, steps = setup_drift(cfg, session, data, model_cfg)
    return run_loop(trainer, dataclasses.replace(cfg.run, max_steps=steps), session)


def setup_drift(cfg: DRIFTConfig, session: Session, data: DriftData, model_cfg: ModelConfig) -> tuple[Trainer, int]:
    """Policy, optimizer, encoded records and their order; returns (Trainer, number of optimizer steps)."""
    B = cfg.batch.sequences_per_step
    world_size = distributed.init_from_env()[1]
    if B < world_size:
        raise ConfigError(f"batch.sequences_per_step ({B}) must be >= the number of data-parallel processes "
                          f"({world_size})")
    policy = setup_policy(model_cfg, cfg.run, session)
    model, tok, device, rank = policy.model, policy.tokenizer, policy.device, policy.rank
    encoded = encode_all(tok, data.records, cfg.data.max_length)
    usable = [i for i, s in enumerate(encoded) if any(s.loss_mask)]
    if len(usable) < len(encoded):
        console.print(f"warning: {len(encoded) - len(usable)} of {len(encoded)} dialogues are longer than "
                      f"data.max_length ({cfg.data.max_length}) and lost their last turn; skipped")
    if not usable:
        raise DataError(f"no trajectory fits data.max_length ({cfg.data.max_length}); raise it")
    seqs = [encoded[i] for i in usable]
    success = [data.success[i] for i in usable]
    steps = cfg.run.max_steps or math.ceil(cfg.epochs * len(seqs) / B)
    # (1/B) sum w_i l_i is weighted_nll under seq_mean_token_mean; the normalized reduction divides
    # by the step's mean weight, which `drift_normalized` takes as an argument
    objective = get_objective("weighted_nll" if cfg.reduction == "mean" else "drift_normalized")
    optimizer, state = setup_optimizer(model, cfg.optim, session)
    order = DataOrder(len(seqs), cfg.run.seed, cfg.data.shuffle, **state.get("data", {}))
    kept_groups = data.stats["kept prompts"]
    shares = ("success rate", "all-fail prompts", "kept prompts", "ESS / records", "weight on successes")
    console.print(f"DRIFT: {count_parameters(model) / 1e6:.2f}M parameters, "
                  + ", ".join(f"{k} {v:.1%}" if k in shares else f"{k} {v:.3g}" for k, v in data.stats.items())
                  + f"; {steps} steps of {B}, reduction={cfg.reduction}, device={device}")
    model.train()

    def step(_: int) -> StepOutput:
        picked = order.take(B)
        batch = [seqs[j] for j in picked]
        w = [s.weight for s in batch]  # the whole step's weights (every rank takes the same records)
        hparams = {"weight_mean": sum(w) / len(w)} if cfg.reduction == "normalized" else {}
        micro = pack_micro_batches(shard_for_rank(batch, rank, world_size), cfg.batch.micro_batch_sequences)
        metrics = update_step(model, optimizer, micro, objective, hparams, "seq_mean_token_mean", cfg.optim.grad_clip)
        ess = effective_sample_size(w)
        metrics.update(weight_mean=sum(w) / len(w), weight_max=max(w), ess=ess, ess_fraction=ess / len(w),
                       batch_success=sum(success[j] for j in picked) / len(picked), kept_groups=kept_groups,
                       epoch=order.epoch)
        return StepOutput(metrics, tokens_trained=sum(mb.num_tokens for mb in micro),
                          show={"loss": metrics["loss"], "ess": ess})

    def evaluate(step_: int) -> dict:
        return evaluate_env(model, tok, cfg.env, session.run, step_)

    trainer = Trainer("drift", model, tok, optimizer, cfg.optim, step=step,
                      evaluate=evaluate if cfg.env.eval_splits else None, state=lambda: {"data": order.state()},
                      summary=lambda last: {"final loss": last.get("loss", float("nan")),
                                            "final batch ESS": last.get("ess", float("nan")),
                                            **{k: v for k, v in last.items() if k.startswith("eval_")}})
    return trainer, steps


__all__ = ["DRIFTConfig", "DRIFTDataConfig", "DRIFTRunConfig", "DRIFTWeightsConfig", "DriftData", "drift_eval_env",
           "load_drift_data", "policy_config", "setup_drift", "train_drift"]
