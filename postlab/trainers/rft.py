"""RFT: rejection-sampling fine-tuning (SFT on the model's own verified answers).

The baseline of methods.md section 6 ("SFT on own samples that the verifier accepts"; Yuan et
al. 2023, *Scaling Relationship on Learning Mathematical Reasoning with Large Language Models*,
keep the distinct correct reasoning paths). One optimizer step:
    1. sample: `prompts_per_step` training problems (env seeds `rl_seed(run_seed, i)`, the
       on-policy range, never evaluation's) x `samples_per_prompt` (k) answers each from the
       current model, single-turn, through the rollout engine;
    2. verify: the environment scores each answer (`env.step`, the same verifier as
       `check_answer`); an answer counts as correct only if the verifier accepts it and the
       model finished it (end-of-sequence, not cut off by `max_new_tokens`);
    3. keep the correct ones, by default each distinct text once per problem (`dedupe`);
    4. SFT step on them: objective `nll` on the answer tokens, token mean over the step.
A step without a single correct answer logs `updated: 0` and makes no update (no gradient, no
optimizer step: an empty batch has nothing to imitate); the learning-rate schedule still
advances, since it counts steps. Each step logs what a RASFT refresh logs: the solve rate,
the correct and kept counts.

Data parallel (torchrun): the policy is FSDP2-sharded like SFT's; each rank samples a contiguous
block of `prompts_per_step / world_size` problems (whole problems on one rank, so per-problem
dedupe stays local) with its own sampling seed, trains on its kept answers, and the step's
token-mean divides by the kept tokens of all ranks; counts and metrics are summed over ranks,
and the "no correct answer anywhere" decision is global, so every rank joins or skips the update.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from postlab import distributed
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.batching import pack
from postlab.envs.base import make
from postlab.objectives.registry import get_objective
from postlab.progress import console
from postlab.rollout.backends import RolloutConfig, backend_for_run
from postlab.rollout.episodes import run_episodes
from postlab.seeds import rl_seed, sampling_seed
from postlab.trainers.common import count_parameters, pack_micro_batches, prompts_per_rank, update_step
from postlab.trainers.envsection import EnvConfig, SamplingConfig, evaluate_env, validate_env
from postlab.trainers.loop import Session, StepOutput, Trainer, open_run, run_loop
from postlab.trainers.setup import setup_optimizer, setup_policy


@dataclasses.dataclass
class RFTBatchConfig:
    prompts_per_step: int = 16  # problems sampled per optimizer step
    samples_per_prompt: int = 4  # k answers per problem
    micro_batch_sequences: int = 32  # kept answers per forward/backward


RFTSamplingConfig = SamplingConfig  # the sampling section, shared with RL (trainers.envsection)


@dataclasses.dataclass
class RFTConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # model.path: the starting checkpoint
    # the env section (trainers.envsection); RFT needs an env with a verifier (check_answer,
    # expert_answer), so its default is math
    env: EnvConfig = dataclasses.field(default_factory=lambda: EnvConfig(name="math"))
    batch: RFTBatchConfig = dataclasses.field(default_factory=RFTBatchConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=5e-5, schedule="constant"))
    # who samples: the local engine on the policy, or vLLM (weights pushed after every update)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    dedupe: bool = True  # keep each distinct correct answer once per problem (Yuan et al.'s distinct paths)
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out_dir="runs/rft"))

    def __post_init__(self):
        b = self.batch
        for k in ("prompts_per_step", "samples_per_prompt", "micro_batch_sequences"):
            if getattr(b, k) < 1:
                raise ConfigError(f"batch.{k} must be >= 1, got {getattr(b, k)}")


def train_rft(cfg: RFTConfig, resume: str | Path | None = None) -> Path:
    """Run RFT from `cfg.model.path`; returns the final Hugging Face checkpoint (RUN/final)."""
    if cfg.model.path is None:
        raise ConfigError("model.path: RFT samples from a checkpoint that can already answer (e.g. an SFT warm-up's "
                          "RUN/final)")
    validate_env(cfg.env, verifier_for="RFT")
    session = open_run(cfg, "rft", resume)
    return run_loop(setup_rft(cfg, session), cfg.run, session)


def setup_rft(cfg: RFTConfig, session: Session) -> Trainer:
    local_prompts = prompts_per_rank(cfg.batch.prompts_per_step, distributed.init_from_env()[1])  # before anything loads
    policy = setup_policy(cfg.model, cfg.run, session)
    model, tok, device, rank, world_size = policy.model, policy.tokenizer, policy.device, policy.rank, policy.world_size
    objective = get_objective("nll")
    optimizer, _ = setup_optimizer(model, cfg.optim, session)
    P, k = cfg.batch.prompts_per_step, cfg.batch.samples_per_prompt
    backend, needs_push = backend_for_run(cfg.rollout, cfg.model, session, seed=cfg.run.seed + rank)
    if needs_push:  # a resumed LoRA run: the engine started from the base
        backend.sync(model)
    s = cfg.sampling
    env_args = dict(split=cfg.env.split, style=cfg.env.style, max_turns=1, **cfg.env.kwargs)
    console.print(f"RFT: {count_parameters(model) / 1e6:.2f}M parameters, env={cfg.env.name}/{cfg.env.split}, "
                  f"{P} problems x {k} samples per step, device={device}"
                  + (f", {world_size} processes" if world_size > 1 else ""))
    model.train()

    def step(i: int) -> StepOutput:
        t0 = time.time()
        first = rank * local_prompts  # this rank's block of the step's problems
        seeds = [rl_seed(cfg.run.seed, i * P + p) for p in range(first, first + local_prompts) for _ in range(k)]
        params = s.params(sampling_seed(cfg.run.seed, i, rank))
        envs = [make(cfg.env.name, **env_args) for _ in seeds]
        if backend is not None:
            episodes = run_episodes(model, tok, envs, seeds, params, max_turns=1, backend=backend)
        else:
            with distributed.gathered(model):  # rank-local sampling: ranks stop after different numbers of tokens
                episodes = run_episodes(model, tok, envs, seeds, params, max_turns=1)
        t_gen = time.time() - t0
        correct = [e for e in episodes if e.success and e.turns[-1].finish_reason == "stop"]
        kept, seen = [], set()
        for e in correct:
            key = (e.seed, e.turns[-1].text)
            if not cfg.dedupe or key not in seen:
                seen.add(key)
                kept.append(e)
        generated = sum(len(t.token_ids) for e in episodes for t in e.turns)
        solved, n_correct, n_kept, problems, truncated = distributed.all_reduce_sum(
            [float(sum(e.success for e in episodes)), float(len(correct)), float(len(kept)),
             float(len({e.seed for e in correct})), float(sum(e.truncated for e in episodes))], device)
        n_all = P * k
        m = {"solve_rate": solved / n_all, "correct": int(n_correct), "kept": int(n_kept),
             "problems_solved": problems / P, "truncation": truncated / n_all,
             "completion_len": distributed.all_reduce_sum([float(generated)], device)[0] / n_all,
             "time_generation": t_gen}
        if not n_kept:  # the same decision on every rank (global counts)
            console.print(f"RFT step {i + 1}: no verified-correct answer among {n_all} samples; no update")
            return StepOutput({**m, "updated": 0}, tokens_trained=0, tokens_generated=generated,
                              show={"solve": m["solve_rate"]})
        micro = pack_micro_batches([e.encoded() for e in kept], cfg.batch.micro_batch_sequences)
        # a rank without a kept answer still joins a sharded model's forwards, with weight 0
        pad = pack([episodes[0].encoded()]) if episodes else None
        m.update(update_step(model, optimizer, micro, objective, {}, "token_mean", cfg.optim.grad_clip, pad_batch=pad))
        if backend is not None:  # the next step samples from the updated policy
            backend.sync(model)
        m.update(updated=1, time_training=time.time() - t0 - t_gen)
        return StepOutput(m, tokens_trained=sum(mb.num_tokens for mb in micro), tokens_generated=generated,
                          show={"loss": m["loss"], "solve": m["solve_rate"]})

    def evaluate(i: int) -> dict:
        return evaluate_env(model, tok, cfg.env, session.run, i, s.max_new_tokens)

    return Trainer("rft", model, tok, optimizer, cfg.optim, step=step,
                   evaluate=evaluate if cfg.env.eval_splits else None,
                   summary=lambda last: {k_: v for k_, v in last.items()
                                         if k_.startswith(("solve_rate", "kept", "eval_"))})
