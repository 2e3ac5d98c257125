"""RL from verifier rewards: GRPO, Dr. GRPO, DAPO, GSPO, RLOO, REINFORCE++ and PPO.

One step (all batch sizes are named once, in `RLBatchConfig`):
    1. rollout: `prompts_per_step` problems (env seeds from the `rl` range of postlab.seeds, never
       evaluation's) x `samples_per_prompt` episodes, played in
       lock-step (multi-turn: model turn, env feedback, ... until done or max_turns); the
       sampler's log-probs are stored as the behaviour policy's (`old_logp`), so no pass
       recomputes them;
    2. rewards from the env verifier (or `reward_fn`); DAPO: overlong shaping and dynamic
       sampling (groups whose rewards are all equal carry no signal and are dropped);
    3. advantages: the algorithm's estimator (`postlab.objectives.algorithms`: group-normalized,
       leave-one-out, batch-normalized), or, for a critic (PPO), GAE over turn rewards with a
       value head read at each turn's last context token;
    4. `updates_per_batch` (mu) optimizer steps over the batch, each split into micro-batches of
       `micro_batch_sequences`, losses aggregated with the step's global counts.
This module is the set-up and the step; cadence, checkpoints, resume and the final save are
the shared loop's (`postlab.trainers.loop`).
Reference log-probs (only when beta > 0) and PPO's old values are computed once per rollout.
Evaluation (greedy success rate per split; with `env.eval_samples` also sampled pass@1 and
pass@k) runs every `run.eval_every` steps and at the end.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import time
from pathlib import Path

import torch

from postlab import distributed
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.objectives.advantages import normalize_turn_advantages
from postlab.objectives.algorithms import AlgorithmSpec, get_algorithm
from postlab.objectives.registry import AGGREGATION_MODES, get_objective
from postlab.objectives.spectrum import chord_mu
from postlab.progress import console
from postlab.rollout.backends import RolloutConfig, backend_for_run
from postlab.rollout.engine import SamplingParams
from postlab.trainers import rl_batch as rb
from postlab.trainers.common import (accumulate_gradients, all_reduce_gradients, clip_gradients, optimizer_step,
                                     prompts_per_rank, step_normalizer)
from postlab.trainers.envsection import EnvConfig, SamplingConfig, evaluate_env, validate_env
from postlab.trainers.loop import Session, StepOutput, Trainer, open_run, run_loop
from postlab.trainers.ppo_value import ValueHead, load_value_head, save_value_head, value_fn_for
from postlab.trainers.rl_rollouts import play_step, score_step
from postlab.trainers.setup import load_teacher, setup_optimizer, setup_policy


RLEnvConfig = EnvConfig  # the env section, one shape for RL, RFT and RASFT (trainers.envsection)


@dataclasses.dataclass
class RLBatchConfig:
    """sequences per step = prompts_per_step x samples_per_prompt (episodes; one sequence each)."""

    RENAMED = {"ppo_epochs": "updates_per_batch"}  # old key -> new key: a clear error, not a did-you-mean

    prompts_per_step: int = 8  # distinct env seeds per step
    samples_per_prompt: int = 8  # G: episodes per seed (the group of GRPO/RLOO/DAPO/GSPO)
    # episodes in one forward/backward (accumulation = ceil(sequences_per_step / micro)); it bounds the
    # activations held at once (episodes run as padded causal rows: speed within ~10% from 8 to 64)
    micro_batch_sequences: int = 8
    # mu: optimizer steps on each rollout batch, for every algorithm (ratios vs the stored sampler
    # log-probs); Chu et al.'s PPO uses 4. (Formerly `ppo_epochs`.)
    updates_per_batch: int = 1

    @property
    def sequences_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt


RLSamplingConfig = SamplingConfig  # the sampling section, shared with RFT (trainers.envsection)


@dataclasses.dataclass
class ChordConfig:
    """CHORD's expert batch and mu schedule (algorithm: chord; objectives.spectrum.chord_mu). Defaults:
    CHORD-mu of the authors' yaml comment (0.9 -> 0.05 over 200 steps); CHORD-phi is decay: 0, peak =
    valley = 0.1 with objective_args: {phi: true}."""

    expert_ratio: float = 0.2  # expert samples per step: ceil(ratio x sampled sequences) (`expert_data_ratio`)
    warmup: int = 0
    decay: int = 200
    peak: float = 0.9
    valley: float = 0.05

    def __post_init__(self):
        if not 0 < self.expert_ratio <= 1:
            raise ConfigError(f"chord.expert_ratio must be in (0, 1], got {self.expert_ratio}")
        if self.warmup < 0 or self.decay < 0 or not 0 <= self.valley <= 1 or not 0 <= self.peak <= 1:
            raise ConfigError("chord: warmup and decay must be >= 0, peak and valley in [0, 1]; got "
                              f"{self.warmup}, {self.decay}, {self.peak}, {self.valley}")


@dataclasses.dataclass
class UFTConfig:
    """UFT's hint schedule (algorithm: uft; objectives.spectrum): the expert solution cut into at most
    `max_chunks` chunks, k ~ Binomial(chunks, p_t) of them in the prompt, p_t a cosine from p_high to p_low
    over `hint_steps` steps, no hint after. Defaults: the authors' code (ad3c8ec)."""

    hint_steps: int = 300
    p_low: float = 0.05
    p_high: float = 0.95
    max_chunks: int = 5
    staged: bool = False  # the staged variant: k = chunks - t // (hint_steps // (chunks + 1))

    def __post_init__(self):
        if self.hint_steps < 1 or self.max_chunks < 1 or not 0 <= self.p_low <= self.p_high <= 1:
            raise ConfigError(f"uft: hint_steps and max_chunks must be >= 1 and 0 <= p_low <= p_high <= 1; got "
                              f"{self.hint_steps}, {self.max_chunks}, {self.p_low}, {self.p_high}")


@dataclasses.dataclass
class RLConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # model.path: the SFT checkpoint
    env: RLEnvConfig = dataclasses.field(default_factory=RLEnvConfig)
    batch: RLBatchConfig = dataclasses.field(default_factory=RLBatchConfig)
    sampling: RLSamplingConfig = dataclasses.field(default_factory=RLSamplingConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)  # backend: local | vllm
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-4, schedule="constant"))
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out_dir="runs/rl"))
    # grpo | dr_grpo | dapo | rloo | reinforce_pp | gspo | ppo | luffy | chord | uft | opd | gkd (docs/rl.md)
    algorithm: str = "grpo"
    objective_args: dict = dataclasses.field(default_factory=dict)  # e.g. {epsilon: 0.2}; see docs/rl.md
    beta: float = 0.0  # k3 KL to the frozen initial policy; the reference model is loaded only when > 0
    aggregation: str | None = None  # None: the algorithm's own (grpo: seq_mean_token_mean, dapo: token_mean, ...)
    dynamic_sampling: bool | None = None  # drop all-same-reward groups; None: on for dapo only
    overlong_buffer: int = 0  # DAPO soft overlong punishment over the last N tokens of max_new_tokens; 0 = off
    gamma: float = 0.9  # PPO GAE discount over turns (Chu et al.)
    lam: float = 0.95  # PPO GAE lambda
    # PPO critic: its own learning rate (constant) and its own gradient clipping, as a separate
    # critic optimizer would have (OpenRLHF, verl). With one clip over both, the value head's
    # large early gradient (returns of -15..+5 against V = 0) shrinks the policy step ~50x.
    value_lr: float = 1e-3
    normalize_advantages: bool = True  # PPO: whiten turn advantages over the batch (Chu et al.'s code does)
    reward_fn: str | None = None  # "module:function" f(episode) -> float | {component: float}; None = env verifier
    # expert traces in each group of samples_per_prompt (LUFFY: 1, the env's expert answer, scored by the
    # same reward, trained off-policy); None: the algorithm's own (0 except luffy)
    expert_traces: int | None = None
    # entropy bonus: - entropy_coef x the policy's mean token entropy over the step's trained tokens (UFT's
    # hints left out); None: the algorithm's published value (0.001 for luffy and uft, else 0)
    entropy_coef: float | None = None
    # on-policy distillation (algorithm: opd, or gkd over the full vocabulary): the teacher checkpoint that
    # scores every sampled token; any size, the student's tokenizer
    teacher: str | None = None
    chord: ChordConfig = dataclasses.field(default_factory=ChordConfig)  # algorithm: chord only
    uft: UFTConfig = dataclasses.field(default_factory=UFTConfig)  # algorithm: uft only

    def __post_init__(self):
        try:
            spec = get_algorithm(self.algorithm)
        except ValueError as e:
            raise ConfigError(f"algorithm: {e}") from None
        b = self.batch
        for k in ("prompts_per_step", "samples_per_prompt", "micro_batch_sequences", "updates_per_batch"):
            if getattr(b, k) < 1:
                raise ConfigError(f"batch.{k} must be >= 1, got {getattr(b, k)}")
        if spec.needs_groups and b.samples_per_prompt < 2:
            raise ConfigError(f"batch.samples_per_prompt must be >= 2 for {self.algorithm!r} (group baselines); "
                              f"got {b.samples_per_prompt}. Use reinforce_pp or ppo for one sample per prompt")
        if b.micro_batch_sequences > b.sequences_per_step:
            raise ConfigError(f"batch.micro_batch_sequences ({b.micro_batch_sequences}) must be <= prompts_per_step x "
                              f"samples_per_prompt ({b.sequences_per_step})")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.entropy_coef is not None and not (isinstance(self.entropy_coef, (int, float)) and self.entropy_coef >= 0):
            raise ConfigError(f"entropy_coef must be a number >= 0 (or null: the algorithm's own, "
                              f"{spec.entropy_coef} for {self.algorithm!r}), got {self.entropy_coef!r}")
        if self.value_lr <= 0:
            raise ConfigError(f"value_lr must be > 0, got {self.value_lr}")
        if self.aggregation is not None and self.aggregation not in AGGREGATION_MODES:
            raise ConfigError(f"aggregation: {self.aggregation!r}; valid: {', '.join(AGGREGATION_MODES)} or null")
        owned = ("inp", "beta") + (("mu", "off_policy_share") if spec.expert_batch else ()) \
            + (("off_policy_share",) if spec.hints else ())  # set per step by the trainer
        valid = [p for p in inspect.signature(get_objective(spec.objective).fn).parameters if p not in owned]
        for k in self.objective_args:
            if k not in valid:
                raise ConfigError(f"objective_args.{k}: not a parameter of {self.algorithm!r}; valid: {valid}")
        if self.overlong_buffer >= self.sampling.max_new_tokens:
            raise ConfigError(f"overlong_buffer ({self.overlong_buffer}) must be < sampling.max_new_tokens "
                              f"({self.sampling.max_new_tokens})")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError(f"gamma and lam must be in [0, 1], got {self.gamma} and {self.lam}")
        if not spec.expert_batch and self.chord != ChordConfig():
            raise ConfigError(f"chord: the expert batch and mu schedule are CHORD's; {self.algorithm!r} does not read "
                              "them (algorithm=chord, or drop the chord section)")
        if not spec.hints and self.uft != UFTConfig():
            raise ConfigError(f"uft: the hint schedule is UFT's; {self.algorithm!r} does not read it (algorithm=uft, "
                              "or drop the uft section)")
        if spec.hints and self.env.max_turns != 1:
            raise ConfigError(f"env.max_turns: UFT's hint starts a single answer; multi-turn episodes with hints are "
                              f"not built (got {self.env.max_turns}); set env.max_turns=1")
        if spec.needs_teacher and not self.teacher:
            raise ConfigError(f"teacher: {self.algorithm!r} distills from a teacher; set teacher=PATH (a checkpoint "
                              "with the student's tokenizer, e.g. a larger model trained on the task)")
        if self.teacher and not spec.needs_teacher:
            raise ConfigError(f"teacher: {self.algorithm!r} does not read a teacher; use algorithm=opd or gkd, "
                              "or unset it")
        experts = self.experts_per_group
        if experts and not spec.expert_traces:
            raise ConfigError(f"expert_traces: {self.algorithm!r} trains every token as its own sample; expert "
                              "traces need an algorithm whose loss treats them as off-policy: luffy")
        if not 0 <= experts < b.samples_per_prompt:
            raise ConfigError(f"expert_traces must be in [0, batch.samples_per_prompt) (the policy samples the rest "
                              f"of each group), got {experts} of {b.samples_per_prompt}")

    @property
    def entropy_bonus(self) -> float:
        return self.spec.entropy_coef if self.entropy_coef is None else float(self.entropy_coef)

    @property
    def experts_per_group(self) -> int:
        return self.spec.expert_traces if self.expert_traces is None else self.expert_traces

    @property
    def spec(self) -> AlgorithmSpec:
        return get_algorithm(self.algorithm)

    def sampling_params(self, seed: int) -> SamplingParams:
        return self.sampling.params(seed)


def _import_reward_fn(spec: str | None):
    if spec is None:
        return None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward_fn: cannot import {spec!r} ({e}); expected 'package.module:function'") from None


def train_rl(cfg: RLConfig, resume: str | Path | None = None, reward_fn=None) -> Path:
    """Run RL from `cfg.model.path`; returns the final Hugging Face checkpoint (RUN/final)."""
    if cfg.model.path is None:
        raise ConfigError("model.path: RL starts from a checkpoint (e.g. an SFT run's RUN/final)")
    validate_env(cfg.env)
    reward_fn = reward_fn or _import_reward_fn(cfg.reward_fn)
    session = open_run(cfg, f"rl:{cfg.algorithm}", resume)
    return run_loop(setup_rl(cfg, session, reward_fn), cfg.run, session)


def setup_rl(cfg: RLConfig, session: Session, reward_fn=None) -> Trainer:
    """Policy (+ frozen reference when beta > 0, + value head for critic algorithms), optimizer, env.

    Data parallel (torchrun): policy and reference are FSDP2-sharded; each rank plays whole prompt
    groups (prompts_per_step / world_size of them), and every batch statistic that crosses
    groups (advantage normalization, dynamic sampling, logged reward metrics) is computed on the
    step's rewards gathered from all ranks, so the update equals one process's on the same batch."""
    spec = cfg.spec
    P, G = cfg.batch.prompts_per_step, cfg.batch.samples_per_prompt
    local_prompts = prompts_per_rank(P, distributed.init_from_env()[1])  # a bad split fails before anything loads
    policy = setup_policy(cfg.model, cfg.run, session, reference="beta > 0" if cfg.beta > 0 else None)
    model, tok, ref_model, device = policy.model, policy.tokenizer, policy.reference, policy.device
    rank, world_size = policy.rank, policy.world_size
    objective = get_objective(spec.objective)
    hparams = {**cfg.objective_args, "beta": cfg.beta}
    aggregation = cfg.aggregation or spec.default_aggregation
    # The critic's head is tiny and stays unsharded: its gradients are all-reduced (summed) by hand.
    head = ValueHead(model.config.hidden_size).to(device) if spec.value_head else None
    if head is not None and session.checkpoint is not None:
        load_value_head(head, session.checkpoint)
    modules = {"value_head": head} if head is not None else {}
    # the critic's group keeps value_lr: set_lr only schedules the policy's groups
    critic = [{"params": list(head.parameters()), "weight_decay": 0.0, "lr": cfg.value_lr, "fixed_lr": True}] \
        if head is not None else []
    optimizer, state = setup_optimizer(model, cfg.optim, session, critic, modules)
    # vLLM holds its own weights: it starts from what the policy starts from and is synced after every update.
    backend, needs_push = backend_for_run(cfg.rollout, cfg.model, session, seed=cfg.run.seed + rank)
    if needs_push:  # a resumed LoRA run: the engine started from the base
        backend.sync(model)
    recent_rewards: list[float] = list(state.get("recent_rewards", []))
    teacher = load_teacher(cfg.teacher, cfg.model, tok, device) if cfg.teacher else None
    parts = UpdateParts(model, head, ref_model, optimizer, objective, hparams, aggregation, device, teacher)
    console.print(f"RL {cfg.algorithm}: env={cfg.env.name}/{cfg.env.split}, {P} prompts x {G} samples, "
                  f"updates/batch={cfg.batch.updates_per_batch}, aggregation={aggregation}, beta={cfg.beta}, "
                  f"device={device}" + (f", {world_size} processes" if world_size > 1 else ""))

    def step(i: int) -> StepOutput:
        t0 = time.time()
        # 1. rollout: problems from the `rl` seed range (never evaluation's); G episodes share each problem.
        # This rank's prompts are a contiguous block, so gathering per-rank results in rank order
        # restores the step's prompt order.
        if backend is not None:
            episodes = play_step(cfg, model, tok, i, rank, local_prompts, backend=backend)
        else:
            with distributed.gathered(model):  # rank-local sampling: ranks stop after different numbers of tokens
                episodes = play_step(cfg, model, tok, i, rank, local_prompts)
        t_gen = time.time() - t0
        # 2. rewards, dynamic sampling and advantages, decided once on the whole step's rewards
        scored = score_step(cfg, episodes, reward_fn, rank)
        m, trained = scored.metrics, 0
        if scored.any_kept:  # the same decision on every rank (global rewards): they all join the update
            update, trained = _update(cfg, parts, [episodes[k] for k in scored.kept], scored.advantages,
                                      pad_from=episodes[:1], step=i)
            m.update(update)
            if backend is not None:  # the next rollout samples from the updated policy
                backend.sync(model)
        # plasticity during RL: how fast reward still moves (least-squares slope over the last 10 steps)
        recent_rewards.append(m["reward_mean"])
        del recent_rewards[:-10]
        m["reward_slope"] = _slope(recent_rewards)
        gen_tokens = sum(len(t.token_ids) for e in episodes for t in e.turns)
        m.update(time_generation=t_gen, time_training=time.time() - t0 - t_gen, gen_tokens_per_s=gen_tokens / t_gen)
        return StepOutput(m, tokens_trained=trained, tokens_generated=gen_tokens,
                          show={"reward": m["reward_mean"], "success": m["success"]})

    def evaluate(i: int) -> dict:
        return evaluate_env(model, tok, cfg.env, session.run, i, cfg.sampling.max_new_tokens)

    def save_extra(path: Path) -> None:
        if head is not None:
            save_value_head(head, path)

    return Trainer(f"rl:{cfg.algorithm}", model, tok, optimizer, cfg.optim, step=step,
                   evaluate=evaluate if cfg.env.eval_splits else None,
                   state=lambda: {"recent_rewards": list(recent_rewards)},
                   save_extra=save_extra if head is not None else None, modules=modules,
                   summary=lambda last: {k: v for k, v in last.items()
                                         if k.startswith(("reward_mean", "success", "eval_"))})


def _slope(values: list[float]) -> float:
    """Least-squares slope of `values` against their index (0 for fewer than 2 points)."""
    n = len(values)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(values) / n
    return sum((x - mx) * (y - my) for x, y in enumerate(values)) / sum((x - mx) ** 2 for x in range(n))


@dataclasses.dataclass
class UpdateParts:
    """What the update trains with, fixed at set-up."""

    model: torch.nn.Module
    head: torch.nn.Module | None  # PPO's critic
    ref_model: torch.nn.Module | None  # the frozen start, when beta > 0
    optimizer: torch.optim.Optimizer
    objective: object
    hparams: dict
    aggregation: str
    device: torch.device
    teacher: torch.nn.Module | None = None  # on-policy distillation's frozen teacher


def _update(cfg: RLConfig, parts: UpdateParts, eps: list, advantages: torch.Tensor | None,
            pad_from: list, step: int = 0) -> tuple[dict, int]:
    """Micro-batches and `updates_per_batch` optimizer steps on this rank's kept episodes `eps` with
    their sequence-level `advantages` (None: the critic's turn values, then GAE over turns);
    returns (metrics, tokens that went through training forward/backward passes). A rank none of
    whose groups was kept (dynamic sampling) still joins every collective with a zero-weight batch
    made from `pad_from`."""
    model, head, device = parts.model, parts.head, parts.device
    mb = cfg.batch.micro_batch_sequences
    micro_sets = [eps[i:i + mb] for i in range(0, len(eps), mb)]
    if advantages is None:  # a critic: V(s_k) of every turn with the current head, then GAE over turns
        with distributed.gathered(model):  # rank-local forwards: ranks hold different numbers of episodes
            turn_values = _turn_values(model, head, micro_sets, device)
        gae = rb.turn_advantages(eps, turn_values, cfg.gamma, cfg.lam)
        turn_adv = [a for a, _ in gae]
        if cfg.normalize_advantages:
            turn_adv = _normalize_globally(turn_adv)
        extras = {"advantages": rb.broadcast(turn_adv, eps),
                  "returns": rb.broadcast([r for _, r in gae], eps),
                  "old_values": rb.broadcast([torch.tensor(v) for v in turn_values], eps)}
    else:
        extras = {"advantages": rb.broadcast(list(advantages), eps)}
    if any(e.off_policy or e.hint_tokens for e in eps):  # expert traces (LUFFY, CHORD), hints (UFT)
        extras["off_policy"] = [rb.off_policy_mask(e) for e in eps]
        if cfg.entropy_bonus and any(e.hint_tokens for e in eps):  # UFT's bonus: the continuation's entropy only
            extras["entropy_mask"] = [1.0 - m if e.hint_tokens else torch.ones_like(m)
                                      for e, m in zip(eps, extras["off_policy"])]
    batches, start = [], 0
    for group in micro_sets:
        per = {k: v[start:start + len(group)] for k, v in extras.items()}
        batches.append(rb.pack_for_update(group, per, model, with_values=head is not None, device=device))
        start += len(group)
    if parts.ref_model is not None:
        with torch.no_grad(), distributed.gathered(parts.ref_model):
            for b in batches:
                b.extras["ref_logp"] = rb.packed_outputs(parts.ref_model, b).logp
    # On-policy distillation: the teacher's log-prob of every sampled token, once for all updates. GKD reads
    # its [tokens, vocabulary] logits instead: a whole step's would not fit at paper scale (V ~ 150k), so
    # accumulate_gradients runs the teacher per micro-batch (again for each of updates_per_batch).
    per_token_teacher = parts.teacher is not None and not cfg.spec.teacher_logits
    if per_token_teacher:
        with torch.no_grad(), distributed.gathered(parts.teacher):
            for b in batches:
                b.extras["teacher_logp"] = rb.packed_outputs(parts.teacher, b).logp
    pad = _pad_batch(pad_from, head is not None, parts.ref_model is not None, device,
                     per_token_teacher) if not batches else None
    norm = step_normalizer(batches, constant=float(cfg.sampling.max_new_tokens), device=device)
    value_fn = value_fn_for(head) if head is not None else None
    hparams = {**parts.hparams, **_step_hparams(cfg, eps, step)}
    metrics: dict = {}
    for _ in range(cfg.batch.updates_per_batch):
        metrics = accumulate_gradients(model, batches, parts.objective, hparams, parts.aggregation, norm,
                                       ref_model=None, want_entropy=True, value_fn=value_fn,
                                       forward_fn=rb.packed_outputs, pad_batch=pad, entropy_coef=cfg.entropy_bonus,
                                       teacher=parts.teacher if cfg.spec.teacher_logits else None)
        if head is not None:  # summed over ranks, then clipped on its own, before the shared step
            all_reduce_gradients(head)
            metrics["value_grad_norm"] = clip_gradients(head, cfg.optim.grad_clip)
        all_reduce_gradients(model)  # a replicated (LoRA) policy under torchrun; FSDP2 sums its own
        metrics["grad_norm"] = optimizer_step(model, parts.optimizer, cfg.optim.grad_clip)
    if "clip_low" in metrics:  # fraction of trained tokens whose ratio the clip bound (last update)
        metrics["clip_fraction"] = metrics["clip_low"] + metrics["clip_high"]
    tokens = sum(int(b.input_ids.numel()) for b in batches) * cfg.batch.updates_per_batch
    return metrics, tokens


def _step_hparams(cfg: RLConfig, eps: list, step: int) -> dict:
    """CHORD's per-step objective arguments: mu from its schedule, and the expert tokens' share of the
    step's trained tokens (every rank's), so each of its two terms is its own token mean."""
    spec = cfg.spec
    if not (spec.expert_batch or spec.hints):
        return {}
    off = sum(len(e.target_turns()) if e.off_policy else e.hint_tokens for e in eps)
    off, total = distributed.all_reduce_sum([float(off), float(sum(len(e.target_turns()) for e in eps))])
    out = {"off_policy_share": off / max(total, 1.0)}
    if spec.expert_batch:
        c = cfg.chord
        out["mu"] = chord_mu(step, c.warmup, c.decay, c.peak, c.valley)
    return out


def _normalize_globally(advantages: list[torch.Tensor]) -> list[torch.Tensor]:
    """`normalize_turn_advantages` over every rank's turns (the step's batch), this rank's part back."""
    if distributed.world()[1] == 1:
        return normalize_turn_advantages(advantages)
    parts = distributed.all_gather_objects([torch.as_tensor(a).tolist() for a in advantages])
    rank = distributed.world()[0]
    normed = normalize_turn_advantages([torch.tensor(a, dtype=torch.float32) for part in parts for a in part])
    start = sum(len(p) for p in parts[:rank])
    return normed[start:start + len(advantages)]


def _pad_batch(episodes, with_values: bool, with_ref: bool, device, with_teacher: bool = False):
    """A zero-weight stand-in micro-batch for a rank with no kept episode (see _update)."""
    zeros = [torch.zeros(len(e.target_turns())) for e in episodes]
    per = {"advantages": zeros}
    if with_values:
        per.update(returns=zeros, old_values=zeros)
    batch = rb.pack_shared_prefix(episodes, per, with_values=with_values, device=device)
    if with_ref:
        batch.extras["ref_logp"] = torch.zeros(batch.num_targets, device=device)
    if with_teacher:
        batch.extras["teacher_logp"] = torch.zeros(batch.num_targets, device=device)
    return batch


@torch.no_grad()
def _turn_values(model, head, micro_sets, device) -> list[list[float]]:
    """V(s_k) for every turn k of every episode (read at the turn's last context token)."""
    out = []
    for group in micro_sets:
        batch = rb.pack_for_update(group, {}, model, with_values=True, device=device)
        hidden = rb.packed_outputs(model, batch, want_hidden=True).hidden[0]
        per_target = head(hidden[batch.extras["value_index"]]).tolist()
        cursor = 0
        for e in group:  # targets are in episode order, turn by turn
            values = []
            for t in e.turns:
                values.append(per_target[cursor])
                cursor += len(t.token_ids)
            out.append(values)
    return out
