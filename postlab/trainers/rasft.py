"""RASFT: rollout-adaptive SFT (Miao et al., arXiv 2606.07006; methods.md section 3).

SFT on expert demonstrations whose supervision is calibrated per problem by the policy's own
verified rollouts: items the policy finds hard are imitated as plain expert data, items in a
moving difficulty window are rolled out, and their expert sample is re-weighted (more
imitation where the policy fails, less where it succeeds) and joined by its correct rollouts.
The loss is objective `rasft`: DFT weighted per sequence by the group weight A_i and a clipped
ratio pi_ref / pi_theta to the frozen initial checkpoint.

Set-up: policy and frozen reference (both `model.path`), the training items (single-turn expert
demonstrations of the environment's problems; every one is checked against the environment's
verifier first), and, on a fresh run, the one-time calibration: the difficulty quantiles of up
to 1000 random items under the initial policy. Difficulty d(x) = mean cross-entropy of the
expert response, computed batched without gradient.

One optimizer step:
    1. refresh when due (every `routing.refresh_every` steps, or when the ready queue is empty):
       35% of the pending items are rolled out (3 samples each at T 0.9, top-p 0.95, repetition
       penalty 1.1, through the rollout engine, from the current policy), the rest become expert
       samples with A = 1; 3% of the hard pool are re-scored. Each rolled-out group is filtered
       (near-duplicates, degenerate samples, answers the verifier rejects) and weighted
       (`group_weights`): the expert sample gets A (1 on a fallback), each correct rollout its
       small weight. A refresh writes one `kind: refresh` row to metrics.jsonl;
    2. fill the ready queue to one batch by routing the next items (a seeded epoch-wise
       permutation) in chunks of 128 at progress a = step / max_steps. If a whole pass over the
       data cannot fill a batch (everything went to `pending`), the queue has run dry and a
       refresh runs now;
    3. train on the first `batch.sequences_per_step` samples of the queue: objective `rasft`,
       token mean over the step (`aggregate` with the step's global counts), clip, AdamW step.

The routing, filtering and weighting rules are `postlab.trainers.rasft_routing`'s; this module
only wires them to the model, the sampler and the shared loop. `state()` holds the router, the
ready queue (rollout token ids included), the refresh RNG and the data position, so a killed
run resumed with `--resume` ends bit-identical on CPU.

Rollouts are verified by the environment: each item carries its problem's env seed
(`meta.seed`, which `env:NAME/SPLIT/N`, `postlab data export` and the study's items record), the
environment is reset to it and `check_answer` judges the rollout's final answer. The final
answer is what `extract_answer` finds (`#### 44`, `\\boxed{}`, "So, the answer is:", `<answer>`)
or, for environments whose expert answer is the whole response (GeneralPoints' formula), the
whole response (`env.answer`). A rollout cut off by `max_new_tokens` (no end-of-sequence) is
never counted correct: it is not a finished answer to imitate.

Differences from the authors' code are marked [recon] in docs/objectives.md; the ones that live
here: "the queue runs dry" is read as "a whole pass of routing cannot fill a batch" (routing is
on demand, so a literally empty queue is refilled by routing), and the forward-only compute
(difficulty scoring, the reference's log-probs) is logged as `tokens_scored`, not in the
study's FLOPs, as for the SFT+KL/ASFT reference passes.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from pathlib import Path
from typing import Literal

import torch

from postlab import distributed
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.batching import pack
from postlab.data.records import DataError, Encoded, encode_record, load_records, record_kind
from postlab.models.forward import token_outputs
from postlab.models.io import pick_device
from postlab.objectives.registry import get_objective, per_sequence_mean
from postlab.progress import console
from postlab.rollout.backends import RolloutConfig, backend_for_run
from postlab.rollout.engine import SamplingParams, generate
from postlab.seeds import sampling_seed
from postlab.trainers.common import (TrainingError, accumulate_gradients, all_reduce_gradients, broadcast_parameters,
                                     count_parameters, make_optimizer, optimizer_step, pack_micro_batches,
                                     shard_for_rank, step_normalizer)
from postlab.trainers.loop import Session, StepOutput, Trainer, fingerprint, open_run, run_loop
from postlab.trainers.rasft_routing import (ROUTES, RASFTRoutingConfig, Router, calibration_sample, filter_group,
                                            group_weights)
from postlab.trainers.sft import BatchConfig, DataOrder, load_policy, load_reference
from postlab.verifiers.answers import extract_answer


@dataclasses.dataclass
class RASFTDataConfig:
    # The training items: expert demonstrations as chat records with `meta.seed` (the env problem
    # seed): a JSONL file or `env:NAME/SPLIT/N`. None when the records are passed in Python.
    train: str | None = None
    max_length: int = 1024  # tokens per sequence (prompt + response); longer ones are cut


@dataclasses.dataclass
class RASFTEnvConfig:
    """The environment whose verifier judges rollouts (and that evaluation plays)."""

    name: str = "math"  # needs check_answer(answer) and expert_answer(): math, generalpoints, biographies, ...
    split: str = "id"  # the split the items were drawn from
    style: str = "compact"
    max_turns: int = 1  # evaluation's attempts; RASFT itself is single-turn
    kwargs: dict = dataclasses.field(default_factory=dict)
    # "auto": the expert's final answer is what extract_answer finds (#### 44, \boxed{}, ...) when it finds
    # one in the first item, else the whole response (GeneralPoints' formula); or force one.
    answer: Literal["auto", "marker", "response"] = "auto"
    eval_splits: tuple[str, ...] = ("id",)  # greedy success every run.eval_every steps and at the end; () = none
    eval_episodes: int = 64


@dataclasses.dataclass
class RASFTConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # model.path: the initial checkpoint = pi_ref
    data: RASFTDataConfig = dataclasses.field(default_factory=RASFTDataConfig)
    env: RASFTEnvConfig = dataclasses.field(default_factory=RASFTEnvConfig)
    # The published run: AdamW lr 5e-5 (the authors' argparse default is 4e-5), weight decay 0,
    # cosine with 4 warm-up steps, gradient clip 1.
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        lr=5e-5, weight_decay=0.0, schedule="cosine", warmup_steps=4, grad_clip=1.0))
    # samples (expert responses and correct rollouts) per optimizer step; published global batch 256
    batch: BatchConfig = dataclasses.field(default_factory=lambda: BatchConfig(256, 32))
    routing: RASFTRoutingConfig = dataclasses.field(default_factory=RASFTRoutingConfig)
    rho_min: float = 0.4  # clip of the sequence ratio pi_ref / pi_theta (objective `rasft`)
    rho_max: float = 1.2
    # who samples the refresh rollouts: the local engine on the policy, or vLLM (the policy's weights are
    # pushed before a refresh when an update happened since the last push)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out_dir="runs/rasft"))

    def __post_init__(self):
        if not 0 < self.rho_min <= self.rho_max:
            raise ConfigError(f"rho_min ({self.rho_min}) and rho_max ({self.rho_max}) must satisfy 0 < rho_min <= "
                              "rho_max (published: 0.4, 1.2)")
        if self.data.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.data.max_length}")
        if self.env.max_turns < 1 or self.env.eval_episodes < 1:
            raise ConfigError(f"env.max_turns ({self.env.max_turns}) and env.eval_episodes "
                              f"({self.env.eval_episodes}) must be >= 1")


@dataclasses.dataclass
class Item:
    """One training problem: its env seed, the expert's response and their encodings."""

    seed: int
    expert: str  # the expert response text (the last assistant turn)
    seq: Encoded  # prompt + expert response, trained on the response
    prompt_ids: list[int]  # what rollouts continue from: the same tokens as the expert sample's prompt


# ----------------------------------------------------------------------------- environment and items


def make_env(env_cfg, split: str | None = None):
    """The environment of `env_cfg` (RASFTEnvConfig, or RFT's RLEnvConfig); a bad name/split/style/kwargs is a ConfigError."""
    from postlab.envs import make

    try:
        return make(env_cfg.name, split=split or env_cfg.split, style=env_cfg.style, max_turns=env_cfg.max_turns,
                    **env_cfg.kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"env: {e}") from None


def require_verifier(env, name: str, what: str) -> None:
    """`what` verifies answers with the environment: it needs check_answer(answer) and expert_answer()."""
    from postlab.envs.base import missing_single_answer_methods, single_answer_envs

    missing = missing_single_answer_methods(env)  # the protocol is postlab.envs.base.SingleAnswerEnv
    if missing:
        able = single_answer_envs()
        raise ConfigError(f"env.name={name!r}: the environment has no {' and no '.join(f'{m}()' for m in missing)}; "
                          f"{what} checks answers with the environment's verifier (check_answer) against its expert "
                          f"answer (expert_answer), so it needs an environment that has both: {', '.join(able)}")


def validate_env(env_cfg, what: str) -> None:
    """Build the training env and every eval split's env once, and check the verifier, before anything loads."""
    require_verifier(make_env(env_cfg), env_cfg.name, what)
    for split in env_cfg.eval_splits:
        try:
            make_env(env_cfg, split)
        except ConfigError as e:
            raise ConfigError(f"env.eval_splits: {e}") from None


def answer_extractor(mode: str, first_expert: str):
    """The function that reads a response's final answer (None: there is none)."""
    if mode == "auto":
        mode = "marker" if extract_answer(first_expert) else "response"
    if mode == "marker":
        return extract_answer
    return lambda text: text.strip() or None


def check_items(records: list[dict], env, answer_of) -> list[tuple[int, list[dict], str]]:
    """(seed, prompt messages, expert response) of every record, after checking each one against the environment.

    Every item must be a single-turn chat record ending with its one assistant turn, carry its
    problem's env seed in `meta.seed`, show the prompt the environment shows for that seed, and
    have an expert answer the environment's verifier accepts. The first bad item raises a
    DataError naming its index, so no run starts on data whose rollouts could not be verified."""
    if not records:
        raise DataError("RASFT: the training data is empty; give data.train (JSONL or env:NAME/SPLIT/N) or records")
    out = []
    for i, rec in enumerate(records):
        where = f"item {i}"
        try:
            kind = record_kind(rec)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        msgs = rec.get("messages") if kind == "messages" else None
        if not msgs or msgs[-1].get("role") != "assistant" or sum(m.get("role") == "assistant" for m in msgs) != 1:
            got = f"a {kind} record" + (f" with roles {[m.get('role') for m in msgs]}" if msgs else "")
            raise DataError(f"{where}: RASFT items are single-turn expert demonstrations: a chat record "
                            "{\"messages\": [..., {\"role\": \"assistant\", ...}]} whose one assistant turn comes last "
                            f"(got {got})")
        seed = (rec.get("meta") or {}).get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DataError(f"{where}: no meta.seed (the environment problem it demonstrates); RASFT resets the "
                            "environment to it to verify rollouts. Make items with env:NAME/SPLIT/N or `postlab data "
                            "export`, which record it")
        obs = env.reset(seed)
        prompt = [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]]
        if prompt != [{"role": m["role"], "content": m["content"]} for m in obs.messages]:
            raise DataError(f"{where} (seed {seed}): its prompt differs from what env {env.name!r} (split "
                            f"{env.split!r}, style {env.style!r}) shows for that seed; set env.split / env.style / "
                            "env.kwargs to those the items were made with")
        expert = msgs[-1]["content"]
        answer = answer_of(expert)
        if answer is None:
            raise DataError(f"{where} (seed {seed}): no final answer in the expert response {expert[:80]!r}; "
                            "set env.answer (marker | response) to how answers are written")
        if not env.check_answer(answer):
            raise DataError(f"{where} (seed {seed}): the verifier of env {env.name!r} rejects the expert's answer "
                            f"{answer!r} (the environment's own answer: {env.expert_answer()!r}); fix or drop the item")
        out.append((seed, prompt, expert))
    return out


def encode_items(checked: list[tuple[int, list[dict], str]], tokenizer, max_length: int) -> list[Item]:
    """Items with their token ids; items whose response `max_length` cuts away entirely are dropped (said)."""
    items = []
    for seed, prompt, expert in checked:
        seq = encode_record(tokenizer, {"messages": prompt + [{"role": "assistant", "content": expert}]}, max_length)
        if not any(seq.loss_mask):
            continue
        first = seq.loss_mask.index(1)
        items.append(Item(seed, expert, seq, seq.input_ids[:first]))
    if not items:
        raise DataError(f"RASFT: none of the {len(checked)} items can be routed: data.max_length={max_length} cuts "
                        "away every expert response (the prompts are at least that long); raise data.max_length")
    if len(items) < len(checked):
        console.print(f"warning: {len(checked) - len(items)} of {len(checked)} items have no response token left "
                      f"within data.max_length={max_length}; skipped")
    return items


def load_items(cfg: RASFTConfig, records: list[dict], tokenizer) -> tuple[list[Item], object]:
    """The checked, encoded items and the function reading a response's final answer."""
    env = make_env(cfg.env)
    require_verifier(env, cfg.env.name, "RASFT")
    first = next((r["messages"][-1]["content"] for r in records[:1] if r.get("messages")), "")
    answer_of = answer_extractor(cfg.env.answer, first)
    return encode_items(check_items(records, env, answer_of), tokenizer, cfg.data.max_length), answer_of


# ----------------------------------------------------------------------------- entry point


def train_rasft(cfg: RASFTConfig, train_records: list[dict] | None = None, resume: str | Path | None = None) -> Path:
    """Run RASFT from `cfg.model.path`; returns the final Hugging Face checkpoint (RUN/final)."""
    from postlab.models import load_tokenizer

    if cfg.model.path is None:
        raise ConfigError("model.path: RASFT starts from a checkpoint (e.g. an SFT warm-up's RUN/final), which is "
                          "also its frozen reference pi_ref")
    validate_env(cfg.env, "RASFT")
    if train_records is None:
        if cfg.data.train is None:
            raise ConfigError("data.train: no training items given (a JSONL path or env:NAME/SPLIT/N)")
        train_records = load_records(cfg.data.train)
    # Everything that can be wrong with the data fails here, before a run directory exists.
    tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    items, answer_of = load_items(cfg, train_records, tokenizer)
    session = open_run(cfg, "rasft", resume, data_fingerprint=fingerprint(train_records))
    return run_loop(setup_rasft(cfg, session, items, answer_of), cfg.run, session)


# ----------------------------------------------------------------------------- set-up and step


def setup_rasft(cfg: RASFTConfig, session: Session, items: list[Item], answer_of) -> Trainer:
    """Policy, frozen reference, optimizer, router (calibrated on a fresh run) and the step.

    Data parallel (torchrun): policy and reference are FSDP2-sharded. The routing is one global
    decision, so every rank runs it identically: difficulty scoring and refresh rollouts see the
    full weights (`distributed.gathered`) and the same seeds on every rank (replicated, not
    split: they are a small part of a step at the published 35% rollout share). The training
    step is split: each rank takes its share of the batch, and the token mean divides by the
    step's global count, so the update equals one process's."""
    rank, world_size = distributed.init_from_env()
    device = pick_device(cfg.run.device)
    model, tok = load_policy(cfg.model, session, device)
    broadcast_parameters(model)
    ref_model = load_reference(cfg.model, device, "RASFT (objective 'rasft')", policy=model)
    model = distributed.shard(model)
    ref_model = distributed.shard(ref_model)
    objective = get_objective("rasft")
    hparams = {"rho_min": cfg.rho_min, "rho_max": cfg.rho_max}
    optimizer = make_optimizer(model, cfg.optim)
    state = session.restore(optimizer, model)
    rcfg, B, micro_n = cfg.routing, cfg.batch.sequences_per_step, cfg.batch.micro_batch_sequences
    env = make_env(cfg.env)  # reset to an item's seed to verify its rollouts
    router = Router(rcfg)
    rng = random.Random(f"rasft/{cfg.run.seed}")  # calibration samples and refresh draws; checkpointed
    order = DataOrder(len(items), cfg.run.seed, True, **state.get("data", {}))
    # the ready queue: {"i": item, "w": weight} expert samples, plus "ids" (sampled tokens) for a correct rollout
    ready: collections.deque = collections.deque(state.get("ready", []))
    counts_at_refresh = dict(state.get("counts_at_refresh") or router.counts)
    scored = [0]  # forward-only tokens of difficulty scoring in the current step
    # vLLM: every rank its own engine with the same seed (refresh rollouts are replicated, like the routing)
    backend, needs_push = backend_for_run(cfg.rollout, cfg.model, session, seed=cfg.run.seed)
    stale = [needs_push]  # the engine's weights lag the policy's (an update since the last push)

    @torch.no_grad()
    def difficulties(ids: list[int]) -> list[float]:
        """Mean cross-entropy of each item's expert response under the current policy."""
        was_training = model.training
        model.eval()
        out: list[float] = []
        with distributed.gathered(model):  # every rank scores every item: the routing is global
            for lo in range(0, len(ids), micro_n):
                batch = pack([items[i].seq for i in ids[lo:lo + micro_n]]).to(device)
                lp = token_outputs(model, batch).logp
                out += (-per_sequence_mean(lp, batch.seq_idx, batch.num_seqs)).tolist()
                scored[0] += batch.num_tokens
        model.train(was_training)
        return out

    def calibrate() -> None:
        ids = calibration_sample(len(items), rcfg, rng)
        router.calibrate(difficulties(ids))

    if state:
        router.load_state_dict(state["router"])
        rng.setstate(_rng_from_json(state["rng"]))
    else:
        calibrate()  # once, with the initial policy (calibrate_on_initial: the faithful default)
    q = router.quantiles
    console.print(f"RASFT: {count_parameters(model) / 1e6:.2f}M parameters, {len(items)} items, env={cfg.env.name}/"
                  f"{cfg.env.split}, batch {B}, difficulty quantiles: easy <= {q.easy_floor:.3f}, window "
                  f"[{q.window_start.low:.3f}, {q.window_start.high:.3f}] -> [{q.window_end.low:.3f}, "
                  f"{q.window_end.high:.3f}], hard ceiling {q.hard_ceiling:.3f}; device={device}")
    model.train()

    def progress(step: int) -> float:
        return step / cfg.run.max_steps

    def route_next_chunk(step: int) -> int:
        ids = order.take(min(rcfg.route_chunk, len(items)))
        routed = router.route_chunk(ids, difficulties(ids), progress(step))
        ready.extend({"i": i, "w": 1.0} for i in routed.expert)
        return len(ids)

    def refresh(step: int) -> tuple[dict, int]:
        """Roll out / expert-route the pending items and probe the hard pool; returns (metrics, tokens generated)."""
        if not rcfg.calibrate_on_initial:
            calibrate()
        index = router.counts["refreshes"]  # the sampler's seed: one per refresh
        plan = router.refresh(rng, step, progress(step), rescore=difficulties)
        ready.extend({"i": i, "w": 1.0} for i in plan.expert)
        m, generated = rollout_groups(plan.rollout, index)
        for name in ROUTES:  # items routed to each route since the previous refresh
            m[f"route/{name}"] = router.counts[name] - counts_at_refresh.get(name, 0)
        for name in ("pending_to_expert", "probed", "probe_to_expert", "probe_to_rollout"):
            m[f"refresh/{name}"] = router.counts[name] - counts_at_refresh.get(name, 0)
        counts_at_refresh.update(router.counts)
        m.update({"refresh/index": index, "refresh/hard_pool": len(router.hard_pool)})
        return m, generated

    def rollout_groups(item_ids: list[int], index: int) -> tuple[dict, int]:
        """Sample, verify, filter and weight each rolled-out item's group; queue the results."""
        n = rcfg.samples_per_problem
        m = {"refresh/problems": len(item_ids), "refresh/samples": n * len(item_ids), "refresh/kept": 0,
             "refresh/correct": 0, "refresh/rollouts_queued": 0}
        if not item_ids:
            return m, 0
        params = SamplingParams(max_new_tokens=rcfg.max_new_tokens, temperature=rcfg.temperature, top_p=rcfg.top_p,
                                repetition_penalty=rcfg.repetition_penalty, n=n,
                                seed=sampling_seed(cfg.run.seed, index))
        prompts = [items[i].prompt_ids for i in item_ids]
        if backend is not None:
            if stale[0]:
                backend.sync(model)
                stale[0] = False
            outs = generate(model, tok, prompts, params, backend=backend)
        else:
            with distributed.gathered(model):  # the same samples on every rank (same weights, same seed)
                outs = generate(model, tok, prompts, params)
        solved = kept = correct = 0
        dropped: collections.Counter = collections.Counter()
        fallbacks: collections.Counter = collections.Counter()
        expert_w, rollout_w = [], []
        for j, i in enumerate(item_ids):
            group = outs[j * n:(j + 1) * n]
            env.reset(items[i].seed)
            verdict: dict[str, bool] = {}  # text -> verified; dedupe keeps a text's first sample
            for c in group:
                answer = answer_of(c.text)
                ok = c.finish_reason == "stop" and answer is not None and bool(env.check_answer(answer))
                solved += ok
                verdict.setdefault(c.text, ok)
            g = filter_group([c.text for c in group], items[i].expert, rcfg, is_correct=verdict.__getitem__,
                             extract=answer_of)
            w = group_weights(g.k, g.K, rcfg)
            kept, correct = kept + g.K, correct + g.k
            dropped.update(g.dropped.values())
            ready.append({"i": i, "w": w.expert})
            expert_w.append(w.expert)
            if w.fallback is not None:
                fallbacks[w.fallback] += 1
                continue
            for s in g.correct:
                ready.append({"i": i, "w": w.correct_rollout, "ids": list(group[s].token_ids)})
                rollout_w.append(w.correct_rollout)
        m.update({"refresh/solve_rate": solved / len(outs), "refresh/kept": kept, "refresh/correct": correct,
                  "refresh/rollouts_queued": len(rollout_w),
                  "refresh/expert_weight_mean": sum(expert_w) / len(expert_w)})
        if rollout_w:
            m["refresh/rollout_weight_mean"] = sum(rollout_w) / len(rollout_w)
        m.update({f"refresh/dropped_{k}": v for k, v in sorted(dropped.items())})
        m.update({f"refresh/fallback_{k}": v for k, v in sorted(fallbacks.items())})
        return m, sum(len(c.token_ids) for c in outs)

    def fill(step: int) -> tuple[list[dict], int]:
        """Refresh when due, then route chunks until the queue holds a batch; (refresh metrics, tokens generated)."""
        refreshes, generated = [], 0
        if (router.pending or router.hard_pool) and router.refresh_due(step, ready_queue_empty=not ready):
            m, g = refresh(step)
            refreshes.append(m)
            generated += g
        routed = 0
        while len(ready) < B:
            if routed >= len(items):  # a whole pass cannot fill a batch: every item waits in `pending`
                if not router.pending:
                    raise TrainingError("RASFT routing produced no training sample in a whole pass over the data")
                m, g = refresh(step)
                refreshes.append(m)
                generated += g
                routed = 0
                continue
            routed += route_next_chunk(step)
        return refreshes, generated

    def sample(entry: dict) -> Encoded:
        it = items[entry["i"]]
        if "ids" not in entry:
            return Encoded(it.seq.input_ids, it.seq.loss_mask, entry["w"])
        ids = (it.prompt_ids + entry["ids"])[:cfg.data.max_length]
        mask = ([0] * len(it.prompt_ids) + [1] * len(entry["ids"]))[:cfg.data.max_length]
        return Encoded(ids, mask, entry["w"])

    def step(i: int) -> StepOutput:
        t0 = time.time()
        scored[0] = 0
        refreshes, generated = fill(i)
        t_route = time.time() - t0
        batch = [ready.popleft() for _ in range(B)]
        seqs = shard_for_rank([sample(e) for e in batch], rank, world_size)  # this rank's share of the step
        micro = pack_micro_batches(seqs, micro_n)
        norm = step_normalizer(micro, device=device)
        # a rank without a sample of the step (batch < world size) joins sharded forwards with weight 0
        m = accumulate_gradients(model, micro, objective, hparams, "token_mean", norm, ref_model=ref_model,
                                 pad_batch=pack([sample(batch[0])]))
        all_reduce_gradients(model)
        m["grad_norm"] = optimizer_step(model, optimizer, cfg.optim.grad_clip)
        stale[0] = True
        rollouts = sum("ids" in e for e in batch)
        m.update({"batch_rollouts": rollouts, "batch_weight_mean": sum(e["w"] for e in batch) / B,
                  "ready_queue": len(ready), "pending": len(router.pending), "hard_pool": len(router.hard_pool),
                  "refreshes": router.counts["refreshes"], "epoch": order.epoch, "tokens_scored": scored[0],
                  "time_routing": t_route, "time_training": time.time() - t0 - t_route})
        for r in refreshes:  # one row per refresh, with the step's ratio statistics (objective `rasft`)
            session.run.log(i + 1, {**r, "rho_mean": m.get("rho_mean"),
                                    "rho_clipped_fraction": m.get("rho_clipped_fraction")}, kind="refresh")
        tokens = sum(mb.num_tokens for mb in micro)
        return StepOutput(m, tokens_trained=tokens, tokens_generated=generated,
                          show={"loss": m["loss"], "rollouts": rollouts})

    def evaluate(i: int) -> dict:
        return evaluate_env(model, tok, cfg.env, session, i, rcfg.max_new_tokens)

    def trainer_state() -> dict:
        return {"router": router.state_dict(), "ready": list(ready), "rng": _rng_to_json(rng), "data": order.state(),
                "counts_at_refresh": dict(counts_at_refresh)}

    return Trainer("rasft", model, tok, optimizer, cfg.optim, step=step,
                   evaluate=evaluate if cfg.env.eval_splits else None, state=trainer_state,
                   summary=lambda last: {"final loss": last.get("loss", float("nan")),
                                         "refreshes": router.counts["refreshes"],
                                         **{k: v for k, v in last.items() if k.startswith("eval_")}})


def evaluate_env(model, tok, env_cfg, session: Session, step: int, max_new_tokens: int) -> dict:
    """Greedy success on each of `env_cfg.eval_splits`, through the one evaluator (evaluation seed range)."""
    from postlab.eval.evaluate import evaluate

    out = {}
    was_training = model.training
    model.eval()
    for split in env_cfg.eval_splits:
        res = evaluate(model, tok, env_cfg.name, split, n_episodes=env_cfg.eval_episodes, max_turns=env_cfg.max_turns,
                       style=env_cfg.style, env_args=env_cfg.kwargs, max_new_tokens=max_new_tokens)
        out[f"eval_{split}_success"] = res["success_rate"]
    model.train(was_training)
    session.run.log(step, out, kind="eval")
    return out


def _rng_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(s: list) -> tuple:
    return (s[0], tuple(s[1]), s[2])
