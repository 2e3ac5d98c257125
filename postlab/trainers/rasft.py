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
from postlab.objectives.registry import get_objective, per_sequence_mean
from postlab.progress import console
from postlab.rollout.backends import RolloutConfig, backend_for_run
from postlab.rollout.engine import SamplingParams, generate
from postlab.seeds import sampling_seed
from postlab.trainers.common import TrainingError, count_parameters, pack_micro_batches, shard_for_rank, update_step
from postlab.trainers.envsection import EnvConfig, evaluate_env, make_env, require_verifier, validate_env
from postlab.trainers.loop import Session, StepOutput, Trainer, fingerprint, open_run, run_loop
from postlab.trainers.rasft_groups import filter_group, group_weights
from postlab.trainers.rasft_routing import ROUTES, RASFTRoutingConfig, Router, calibration_sample
from postlab.trainers.setup import BatchConfig, DataOrder, setup_optimizer, setup_policy
from postlab.verifiers.answers import extract_answer


@dataclasses.dataclass
class RASFTDataConfig:
    # The training items: expert demonstrations as chat records with `meta.seed` (the env problem
    # seed): a JSONL file or `env:NAME/SPLIT/N`. None when the records are passed in Python.
    train: str | None = None
    max_length: int = 1024  # tokens per sequence (prompt + response); longer ones are cut


@dataclasses.dataclass
class RASFTEnvConfig(EnvConfig):
    """The env section (trainers.envsection) plus how to read an answer: the environment whose
    verifier judges rollouts, and that evaluation plays. RASFT itself is single-turn; max_turns is
    evaluation's attempts."""

    name: str = "math"  # needs check_answer(answer) and expert_answer(): math, generalpoints, biographies, ...
    # "auto": the expert's final answer is what extract_answer finds (#### 44, \boxed{}, ...) when it finds
    # one in the first item, else the whole response (GeneralPoints' formula); or force one.
    answer: Literal["auto", "marker", "response"] = "auto"


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
    validate_env(cfg.env, verifier_for="RASFT")
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


class RoutedQueue:
    """RASFT's data side: items routed by difficulty to expert samples or to rollouts, verified and
    weighted, waiting in the ready queue for a training step.

    Everything here is one global decision: every rank scores every item and samples the same
    rollouts with the same seeds (replicated, not split: a small part of a step at the published
    35% rollout share). `state()` holds the router, the queue (rollout token ids included), the
    refresh RNG and the data position, so a resumed run continues bit-identically."""

    def __init__(self, cfg: RASFTConfig, items: list[Item], answer_of, model, tok, device, backend,
                 engine_stale: bool, state: dict):
        self.cfg, self.rcfg, self.items, self.answer_of = cfg, cfg.routing, items, answer_of
        self.model, self.tok, self.device, self.backend = model, tok, device, backend
        self.engine_stale = engine_stale  # the engine's weights lag the policy's (an update since the last push)
        self.env = make_env(cfg.env)  # reset to an item's seed to verify its rollouts
        self.router = Router(self.rcfg)
        self.rng = random.Random(f"rasft/{cfg.run.seed}")  # calibration samples and refresh draws; checkpointed
        self.order = DataOrder(len(items), cfg.run.seed, True, **state.get("data", {}))
        # {"i": item, "w": weight} expert samples, plus "ids" (sampled tokens) for a correct rollout
        self.ready: collections.deque = collections.deque(state.get("ready", []))
        self.counts_at_refresh = dict(state.get("counts_at_refresh") or self.router.counts)
        self.tokens_scored = 0  # forward-only tokens of difficulty scoring in the current step
        if state:
            self.router.load_state_dict(state["router"])
            self.rng.setstate(_rng_from_json(state["rng"]))
        else:
            self.calibrate()  # once, with the initial policy (calibrate_on_initial: the faithful default)

    def state(self) -> dict:
        return {"router": self.router.state_dict(), "ready": list(self.ready), "rng": _rng_to_json(self.rng),
                "data": self.order.state(), "counts_at_refresh": dict(self.counts_at_refresh)}

    @torch.no_grad()
    def difficulties(self, ids: list[int]) -> list[float]:
        """Mean cross-entropy of each item's expert response under the current policy."""
        model, micro_n = self.model, self.cfg.batch.micro_batch_sequences
        was_training = model.training
        model.eval()
        out: list[float] = []
        with distributed.gathered(model):  # every rank scores every item: the routing is global
            for lo in range(0, len(ids), micro_n):
                batch = pack([self.items[i].seq for i in ids[lo:lo + micro_n]]).to(self.device)
                lp = token_outputs(model, batch).logp
                out += (-per_sequence_mean(lp, batch.seq_idx, batch.num_seqs)).tolist()
                self.tokens_scored += batch.num_tokens
        model.train(was_training)
        return out

    def calibrate(self) -> None:
        ids = calibration_sample(len(self.items), self.rcfg, self.rng)
        self.router.calibrate(self.difficulties(ids))

    def progress(self, step: int) -> float:
        return step / self.cfg.run.max_steps

    def route_next_chunk(self, step: int) -> int:
        ids = self.order.take(min(self.rcfg.route_chunk, len(self.items)))
        routed = self.router.route_chunk(ids, self.difficulties(ids), self.progress(step))
        self.ready.extend({"i": i, "w": 1.0} for i in routed.expert)
        return len(ids)

    def refresh(self, step: int) -> tuple[dict, int]:
        """Roll out / expert-route the pending items and probe the hard pool; returns (metrics, tokens generated)."""
        router = self.router
        if not self.rcfg.calibrate_on_initial:
            self.calibrate()
        index = router.counts["refreshes"]  # the sampler's seed: one per refresh
        plan = router.refresh(self.rng, step, self.progress(step), rescore=self.difficulties)
        self.ready.extend({"i": i, "w": 1.0} for i in plan.expert)
        m, generated = self.rollout_groups(plan.rollout, index)
        for name in ROUTES:  # items routed to each route since the previous refresh
            m[f"route/{name}"] = router.counts[name] - self.counts_at_refresh.get(name, 0)
        for name in ("pending_to_expert", "probed", "probe_to_expert", "probe_to_rollout"):
            m[f"refresh/{name}"] = router.counts[name] - self.counts_at_refresh.get(name, 0)
        self.counts_at_refresh.update(router.counts)
        m.update({"refresh/index": index, "refresh/hard_pool": len(router.hard_pool)})
        return m, generated

    def rollout_groups(self, item_ids: list[int], index: int) -> tuple[dict, int]:
        """Sample, verify, filter and weight each rolled-out item's group; queue the results."""
        rcfg, items, model = self.rcfg, self.items, self.model
        n = rcfg.samples_per_problem
        m = {"refresh/problems": len(item_ids), "refresh/samples": n * len(item_ids), "refresh/kept": 0,
             "refresh/correct": 0, "refresh/rollouts_queued": 0}
        if not item_ids:
            return m, 0
        params = SamplingParams(max_new_tokens=rcfg.max_new_tokens, temperature=rcfg.temperature, top_p=rcfg.top_p,
                                repetition_penalty=rcfg.repetition_penalty, n=n,
                                seed=sampling_seed(self.cfg.run.seed, index))
        prompts = [items[i].prompt_ids for i in item_ids]
        if self.backend is not None:
            if self.engine_stale:
                self.backend.sync(model)
                self.engine_stale = False
            outs = generate(model, self.tok, prompts, params, backend=self.backend)
        else:
            with distributed.gathered(model):  # the same samples on every rank (same weights, same seed)
                outs = generate(model, self.tok, prompts, params)
        solved = kept = correct = 0
        dropped: collections.Counter = collections.Counter()
        fallbacks: collections.Counter = collections.Counter()
        expert_w, rollout_w = [], []
        for j, i in enumerate(item_ids):
            group = outs[j * n:(j + 1) * n]
            self.env.reset(items[i].seed)
            verdict: dict[str, bool] = {}  # text -> verified; dedupe keeps a text's first sample
            for c in group:
                answer = self.answer_of(c.text)
                ok = c.finish_reason == "stop" and answer is not None and bool(self.env.check_answer(answer))
                solved += ok
                verdict.setdefault(c.text, ok)
            g = filter_group([c.text for c in group], items[i].expert, rcfg, is_correct=verdict.__getitem__,
                             extract=self.answer_of)
            w = group_weights(g.k, g.K, rcfg)
            kept, correct = kept + g.K, correct + g.k
            dropped.update(g.dropped.values())
            self.ready.append({"i": i, "w": w.expert})
            expert_w.append(w.expert)
            if w.fallback is not None:
                fallbacks[w.fallback] += 1
                continue
            for s in g.correct:
                self.ready.append({"i": i, "w": w.correct_rollout, "ids": list(group[s].token_ids)})
                rollout_w.append(w.correct_rollout)
        m.update({"refresh/solve_rate": solved / len(outs), "refresh/kept": kept, "refresh/correct": correct,
                  "refresh/rollouts_queued": len(rollout_w),
                  "refresh/expert_weight_mean": sum(expert_w) / len(expert_w)})
        if rollout_w:
            m["refresh/rollout_weight_mean"] = sum(rollout_w) / len(rollout_w)
        m.update({f"refresh/dropped_{k}": v for k, v in sorted(dropped.items())})
        m.update({f"refresh/fallback_{k}": v for k, v in sorted(fallbacks.items())})
        return m, sum(len(c.token_ids) for c in outs)

    def fill(self, step: int, batch_size: int) -> tuple[list[dict], int]:
        """Refresh when due, then route chunks until the queue holds a batch; (refresh metrics, tokens generated)."""
        router = self.router
        refreshes, generated = [], 0
        if (router.pending or router.hard_pool) and router.refresh_due(step, ready_queue_empty=not self.ready):
            m, g = self.refresh(step)
            refreshes.append(m)
            generated += g
        routed = 0
        while len(self.ready) < batch_size:
            if routed >= len(self.items):  # a whole pass cannot fill a batch: every item waits in `pending`
                if not router.pending:
                    raise TrainingError("RASFT routing produced no training sample in a whole pass over the data")
                m, g = self.refresh(step)
                refreshes.append(m)
                generated += g
                routed = 0
                continue
            routed += self.route_next_chunk(step)
        return refreshes, generated

    def sample(self, entry: dict) -> Encoded:
        """A queue entry as a training sequence: the expert sample, or the prompt plus a correct rollout."""
        it = self.items[entry["i"]]
        if "ids" not in entry:
            return Encoded(it.seq.input_ids, it.seq.loss_mask, entry["w"])
        max_length = self.cfg.data.max_length
        ids = (it.prompt_ids + entry["ids"])[:max_length]
        mask = ([0] * len(it.prompt_ids) + [1] * len(entry["ids"]))[:max_length]
        return Encoded(ids, mask, entry["w"])


def setup_rasft(cfg: RASFTConfig, session: Session, items: list[Item], answer_of) -> Trainer:
    """Policy, frozen reference, optimizer, the routed queue (calibrated on a fresh run) and the step.

    Data parallel (torchrun): policy and reference are FSDP2-sharded. The routing is one global
    decision, so every rank runs it identically (`RoutedQueue`); the training step is split: each
    rank takes its share of the batch, and the token mean divides by the step's global count, so
    the update equals one process's."""
    policy = setup_policy(cfg.model, cfg.run, session, reference="RASFT (objective 'rasft')")
    model, tok, ref_model, device = policy.model, policy.tokenizer, policy.reference, policy.device
    rank, world_size = policy.rank, policy.world_size
    objective = get_objective("rasft")
    hparams = {"rho_min": cfg.rho_min, "rho_max": cfg.rho_max}
    optimizer, state = setup_optimizer(model, cfg.optim, session)
    B, micro_n = cfg.batch.sequences_per_step, cfg.batch.micro_batch_sequences
    # vLLM: every rank its own engine with the same seed (refresh rollouts are replicated, like the routing)
    backend, needs_push = backend_for_run(cfg.rollout, cfg.model, session, seed=cfg.run.seed)
    queue = RoutedQueue(cfg, items, answer_of, model, tok, device, backend, needs_push, state)
    q = queue.router.quantiles
    console.print(f"RASFT: {count_parameters(model) / 1e6:.2f}M parameters, {len(items)} items, env={cfg.env.name}/"
                  f"{cfg.env.split}, batch {B}, difficulty quantiles: easy <= {q.easy_floor:.3f}, window "
                  f"[{q.window_start.low:.3f}, {q.window_start.high:.3f}] -> [{q.window_end.low:.3f}, "
                  f"{q.window_end.high:.3f}], hard ceiling {q.hard_ceiling:.3f}; device={device}")
    model.train()

    def step(i: int) -> StepOutput:
        t0 = time.time()
        queue.tokens_scored = 0
        refreshes, generated = queue.fill(i, B)
        t_route = time.time() - t0
        batch = [queue.ready.popleft() for _ in range(B)]
        seqs = shard_for_rank([queue.sample(e) for e in batch], rank, world_size)  # this rank's share of the step
        micro = pack_micro_batches(seqs, micro_n)
        # a rank without a sample of the step (batch < world size) joins sharded forwards with weight 0
        m = update_step(model, optimizer, micro, objective, hparams, "token_mean", cfg.optim.grad_clip,
                        ref_model=ref_model, pad_batch=pack([queue.sample(batch[0])]))
        queue.engine_stale = True
        rollouts = sum("ids" in e for e in batch)
        router = queue.router
        m.update({"batch_rollouts": rollouts, "batch_weight_mean": sum(e["w"] for e in batch) / B,
                  "ready_queue": len(queue.ready), "pending": len(router.pending), "hard_pool": len(router.hard_pool),
                  "refreshes": router.counts["refreshes"], "epoch": queue.order.epoch,
                  "tokens_scored": queue.tokens_scored,
                  "time_routing": t_route, "time_training": time.time() - t0 - t_route})
        # one `refresh` row per refresh, with the step's ratio statistics (objective `rasft`)
        rows = [("refresh", {**r, "rho_mean": m.get("rho_mean"), "rho_clipped_fraction": m.get("rho_clipped_fraction")})
                for r in refreshes]
        return StepOutput(m, tokens_trained=sum(mb.num_tokens for mb in micro), tokens_generated=generated,
                          show={"loss": m["loss"], "rollouts": rollouts}, rows=rows)

    def evaluate(i: int) -> dict:
        return evaluate_env(model, tok, cfg.env, session.run, i, cfg.routing.max_new_tokens)

    return Trainer("rasft", model, tok, optimizer, cfg.optim, step=step,
                   evaluate=evaluate if cfg.env.eval_splits else None, state=queue.state,
                   summary=lambda last: {"final loss": last.get("loss", float("nan")),
                                         "refreshes": queue.router.counts["refreshes"],
                                         **{k: v for k, v in last.items() if k.startswith("eval_")}})


def _rng_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(s: list) -> tuple:
    return (s[0], tuple(s[1]), s[2])
