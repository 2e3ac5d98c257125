"""One GRPO step, postlab vs TRL's GRPOTrainer, and generation tokens/s vs `model.generate`.

Same model (preset tiny: 3.4M-parameter Qwen2, char tokenizer, random init), same prompts
(GeneralPoints ID, compact style, rendered with the chat template), same samples per
prompt, completion length, temperature, optimizer (AdamW, lr, betas, no warmup,
constant schedule, grad clip 1.0), loss (GRPO, beta 0, eps .2, one update per rollout) and
reward (the GeneralPoints verifier). TRL: use_vllm=False, CPU, report_to none.

    .venv/bin/python benchmarks/rl_step.py [--prompts 8] [--samples 8] [--tokens 16,128,512] [--steps 4]
    .venv/bin/python benchmarks/rl_step.py --study     # 64 prompts x 8 samples, 24 and 128 tokens, + SFT, PPO
    .venv/bin/python benchmarks/rl_step.py --prompts 2 --samples 2 --tokens 4 --steps 1 --repeats 1 --skip-trl

Seconds per step is the median over steps after the first (warm-up) of each trainer.
`--sft`: an SFT step (the SFT trainer's pieces) on the very sequences the engine sampled, same
sequences per step and micro-batch: RL update tokens/s next to SFT tokens/s on the same model.
`--ppo-multiturn`: postlab PPO on GeneralPoints with verifier feedback (up to --turns model
turns), the sft-vs-rl study's RL stage (TRL's GRPOTrainer has no multi-turn env to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_model(out: Path):
    from postlab.models.io import init_model, save_pretrained_atomic
    from postlab.models.tokenizer import build_tokenizer

    tok = build_tokenizer([])
    model = init_model("tiny", tok, seed=0)
    save_pretrained_atomic(model, tok, out)
    return model, tok


def gp_prompts(n: int, offset: int = 0) -> list[tuple[int, list[dict]]]:
    from postlab.envs import make

    env = make("generalpoints", split="id", style="compact")
    return [(offset + i, env.reset(seed=offset + i).messages) for i in range(n)]


_GP_ENVS: dict = {}


def gp_reward(seed: int, text: str) -> float:
    """The GeneralPoints verifier on the hand of `seed` (hands dealt once and cached, for both trainers)."""
    from postlab.envs import make

    if seed not in _GP_ENVS:
        _GP_ENVS[seed] = make("generalpoints", split="id", style="compact")
        _GP_ENVS[seed].reset(seed=seed)
    return float(_GP_ENVS[seed].verify(text).reward)


def bench_generation(model, tok, args, tokens: int) -> dict:
    """Generated tokens/s of the engine and of `model.generate` on the same prompts (median of --repeats)."""
    from postlab.rollout.engine import SamplingParams, generate, hf_generate

    prompts = encoded_prompts(tok, args.prompts)
    params = SamplingParams(max_new_tokens=tokens, n=args.samples, temperature=1.0, seed=0)
    out = {}
    runs = [("engine", generate), ("model.generate", hf_generate)]
    if args.compiled_decoder:
        runs.append((COMPILED_ENGINE, compiled_decode_generate))
    for name, fn in runs:
        if name == "model.generate" and args.skip_hf:
            continue
        res = fn(model, tok, prompts, params)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = fn(model, tok, prompts, params)
            times.append(time.perf_counter() - t)
        out[name] = sum(len(c.token_ids) for c in res) / statistics.median(times)
        if name == "engine":
            out["completions"] = res
    return out


COMPILED_ENGINE = "engine, torch.compile'd decode step"


def compiled_decode_generate(model, tok, prompts, params):
    """The engine with its one-token decoder forward compiled by torch.compile (inductor; dynamic shapes, as
    the cache length grows every step): how much of the decode time is elementwise and dispatch overhead
    that fusion removes. The first call compiles (minutes on a CPU); the timed calls reuse it."""
    from postlab.rollout import engine, fastdecode

    cls = fastdecode.StaticQwenLlamaDecoder
    eager_forward = cls._forward
    if not hasattr(cls, "_compiled_forward"):
        cls._compiled_forward = torch.compile(eager_forward, dynamic=True)

    def forward(self, ids, pos, start, mask=None, bias=None):
        # decode steps (one token a row) run compiled; prompt prefills stay eager, as in the engine
        fn = cls._compiled_forward if ids.shape[1] == 1 else eager_forward
        return fn(self, ids, pos, start, mask=mask, bias=bias)

    cls._forward = forward
    try:
        return engine.generate(model, tok, prompts, params)
    finally:
        cls._forward = eager_forward


def encoded_prompts(tok, n: int) -> list[list[int]]:
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for _, m in gp_prompts(n)]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def bench_sft(path: Path, args, prompts: list[list[int]], completions) -> dict:
    """postlab's SFT step (the SFT trainer's pieces) on the very sequences the engine sampled.

    Same model, same prompt + completion tokens per sequence, same number of sequences per step
    (prompts x samples) and micro-batch size as the RL step: what a step of SFT on the rollouts
    would cost, next to what the RL update costs."""
    from postlab.config import OptimConfig
    from postlab.data.records import Encoded
    from postlab.models.io import load_model
    from postlab.objectives import get_objective
    from postlab.trainers.common import accumulate_gradients, make_optimizer, optimizer_step, pack_micro_batches, \
        step_normalizer

    model = load_model(str(path)).train()
    opt = make_optimizer(model, OptimConfig(lr=1e-5, betas=(0.9, 0.999), grad_clip=1.0))
    seqs = [Encoded(prompts[c.prompt_index] + c.token_ids, [0] * len(prompts[c.prompt_index]) + [1] * len(c.token_ids))
            for c in completions]
    objective = get_objective("nll")
    times, tokens = [], 0
    for _ in range(args.steps):
        t = time.perf_counter()
        micro = pack_micro_batches(seqs, args.micro)
        accumulate_gradients(model, micro, objective, {}, "token_mean", step_normalizer(micro))
        optimizer_step(model, opt, 1.0)
        times.append(time.perf_counter() - t)
        tokens = sum(mb.num_tokens for mb in micro)
    timed = times[1:] or times
    return {"s_per_step": statistics.median(timed), "tokens_per_s": tokens / statistics.median(timed),
            "tokens": tokens}


def bench_postlab(path: Path, args, workdir: Path, tokens: int) -> dict:
    """postlab's GRPO trainer on GeneralPoints hands 0.. in step order (TRL's dataset order).

    The trainer draws env seeds `rl_seed(run_seed, i)` (postlab.seeds), not 0..N: the bench env
    maps each such seed to hand i through a table built from that same function, so it keeps
    working whatever values the seed range has."""
    from postlab.config import ModelConfig, OptimConfig, RunConfig
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl

    run = RunConfig(out_dir=str(workdir / f"postlab-{tokens}"), max_steps=args.steps, log_every=1, progress=False,
                    tensorboard=False)
    register_bench_env(args.prompts * args.steps, run.seed)
    cfg = RLConfig(model=ModelConfig(path=str(path)), env=RLEnvConfig(name="bench-gp", eval_splits=()),
                   batch=RLBatchConfig(args.prompts, args.samples, args.micro, 1),
                   sampling=RLSamplingConfig(max_new_tokens=tokens, temperature=1.0),
                   optim=OptimConfig(lr=1e-5, schedule="constant", betas=(0.9, 0.999), grad_clip=1.0),
                   run=run, algorithm="grpo")
    train_rl(cfg)
    return step_rates(workdir / f"postlab-{tokens}", "postlab GRPO")


def register_bench_env(n: int, run_seed: int = 0) -> None:
    """Register env `bench-gp`: GeneralPoints prompts and verifier, hand i for the trainer's i-th seed."""
    from postlab.envs.base import Env, Observation, StepResult, register_env
    from postlab.seeds import rl_seed

    table = dict(gp_prompts(n))
    hand = {rl_seed(run_seed, i): i for i in range(n)}
    for i in table:
        gp_reward(i, "")  # deal every hand before timing (TRL's run reuses the cache)

    class BenchEnv(Env):
        styles = ("compact",)

        def reset(self, seed):
            if seed not in hand:
                raise KeyError(f"bench-gp: env seed {seed} is not one of the {n} training seeds rl_seed({run_seed}, "
                               f"0..{n - 1}) this benchmark dealt; raise --steps or --prompts")
            self.hand = hand[seed]
            return Observation(table[self.hand])

        def step(self, text):
            return StepResult([], gp_reward(self.hand, text), True)

    register_env("bench-gp")(BenchEnv)  # a later call (another length) replaces it


def step_rates(run_dir: Path, name: str) -> dict:
    """Median seconds per step (steps after the first), generation/update split, tokens/s, from metrics.jsonl."""
    import json

    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    rows = [r for r in rows if "time_training" in r]
    timed = rows[1:] or rows  # the first step warms up
    print(f"{name} steps (generation s, update s):",
          [(round(r["time_generation"], 3), round(r["time_training"], 3)) for r in rows])
    med = statistics.median
    update_s = sum(r["time_training"] for r in timed)
    return {"s_per_step": med(r["time_generation"] + r["time_training"] for r in timed),
            "generation_s": med(r["time_generation"] for r in timed), "update_s": med(r["time_training"] for r in timed),
            "trained_tokens_per_update_s": sum(r["tokens_trained"] for r in timed) / update_s,
            "generated_tokens": med(r["tokens_generated"] for r in timed),
            "turns": med(r.get("turns", 1.0) for r in timed)}


def bench_trl(path: Path, args, workdir: Path, tokens: int) -> dict:
    """TRL's GRPOTrainer s/step (median after the first step), and the part of it inside `model.generate`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    prompts = gp_prompts(args.prompts * args.steps)
    # each prompt repeated per TRL's sampler; one generation batch = prompts x samples completions per step
    ds = Dataset.from_list([{"prompt": m, "seed": s} for s, m in prompts])

    def reward(prompts, completions, seed, **kw):
        return [gp_reward(s, c[-1]["content"] if isinstance(c, list) else c) for s, c in zip(seed, completions)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t = [], 0.0

        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t)

    cfg = GRPOConfig(output_dir=str(workdir / f"trl-{tokens}"), per_device_train_batch_size=args.prompts * args.samples,
                     num_generations=args.samples, max_completion_length=tokens, temperature=1.0,
                     learning_rate=1e-5, adam_beta1=0.9, adam_beta2=0.999, lr_scheduler_type="constant",
                     warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, beta=0.0, epsilon=0.2, loss_type="grpo",
                     num_iterations=1, gradient_accumulation_steps=1, max_steps=args.steps, use_vllm=False,
                     use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
                     shuffle_dataset=False, seed=0, disable_tqdm=True)
    timer = Timer()
    model = AutoModelForCausalLM.from_pretrained(path)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds,
                          processing_class=AutoTokenizer.from_pretrained(path), callbacks=[timer])
    generate, gen_times = model.generate, []

    def timed_generate(*a, **k):  # TRL samples through the (unwrapped, on CPU the same) model's generate
        t = time.perf_counter()
        out = generate(*a, **k)
        gen_times.append(time.perf_counter() - t)
        return out

    model.generate = timed_generate
    trainer.train()
    timed = slice(1, None) if len(timer.times) > 1 else slice(None)
    per_step = len(gen_times) // max(len(timer.times), 1)  # generate calls per optimizer step
    gen = [sum(gen_times[i * per_step:(i + 1) * per_step]) for i in range(len(timer.times))] if per_step else []
    return {"s_per_step": statistics.median(timer.times[timed]),
            "generation_s": statistics.median(gen[timed]) if gen else None}


def bench_ppo_multiturn(path: Path, args, workdir: Path) -> dict:
    """postlab PPO on GeneralPoints with verifier feedback (the sft-vs-rl study's RL stage: up to
    --turns model turns per episode, temperature 0.2, 4 updates per batch, value head)."""
    from postlab.config import ModelConfig, OptimConfig, RunConfig
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl

    out = workdir / "postlab-ppo"
    cfg = RLConfig(model=ModelConfig(path=str(path)),
                   env=RLEnvConfig(name="generalpoints", style="compact", max_turns=args.turns, eval_splits=()),
                   batch=RLBatchConfig(args.prompts, args.samples, args.micro, args.ppo_updates),
                   sampling=RLSamplingConfig(max_new_tokens=args.ppo_tokens, temperature=0.2),
                   optim=OptimConfig(lr=1e-5, schedule="constant", grad_clip=1.0), algorithm="ppo",
                   run=RunConfig(out_dir=str(out), max_steps=args.steps, log_every=1, progress=False,
                                 tensorboard=False))
    train_rl(cfg)
    return step_rates(out, "postlab PPO multi-turn")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", action="store_true",
                    help="the study-sized batch: 64 prompts x 8 samples, 24 and 128 tokens, SFT and PPO multi-turn "
                         "(other flags given explicitly still apply)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (8; --study: 64)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", default=None, help="completion lengths, comma-separated (16; --study: 24,128)")
    ap.add_argument("--steps", type=int, default=4, help="steps per trainer; the first is warm-up (--study: 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed generation runs per length (--study: 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--micro", type=int, default=None, help="micro_batch_sequences, RL and SFT (8; --study: 32)")
    ap.add_argument("--skip-trl", action="store_true", help="postlab only (CI smoke runs; no trl needed)")
    ap.add_argument("--skip-hf", action="store_true", help="skip the model.generate baseline")
    ap.add_argument("--sft", action="store_true", help="also an SFT step on the sampled sequences (--study: on)")
    ap.add_argument("--ppo-multiturn", action="store_true", help="also PPO multi-turn episodes (--study: on)")
    ap.add_argument("--turns", type=int, default=5, help="PPO: model turns per episode (verify iterations)")
    ap.add_argument("--ppo-tokens", type=int, default=24, help="PPO: new tokens per model turn")
    ap.add_argument("--ppo-updates", type=int, default=4, help="PPO: updates per rollout batch")
    ap.add_argument("--compiled-decoder", action="store_true",
                    help="also the engine with its decode step compiled by torch.compile (needs a C++ compiler)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    study = args.study
    args.prompts = args.prompts or (64 if study else 8)
    args.tokens = [int(t) for t in (args.tokens or ("24,128" if study else "16")).split(",")]
    args.micro = args.micro or (32 if study else 8)
    if study:
        args.sft = args.ppo_multiturn = True
        if "--steps" not in (argv if argv is not None else sys.argv):
            args.steps = 2
        if "--repeats" not in (argv if argv is not None else sys.argv):
            args.repeats = 1
    if args.micro > args.prompts * args.samples:
        ap.error("--micro must be <= --prompts x --samples")
    if args.samples < 2 or args.steps < 1 or args.repeats < 1 or min(args.tokens) < 1:
        ap.error("--samples >= 2, --steps >= 1, --repeats >= 1 and every --tokens >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    res: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
                            f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start",
                 "prompts": args.prompts, "samples": args.samples, "lengths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, tok = build_model(tmp / "model")
        prompt_tokens = [len(p) for p in encoded_prompts(tok, args.prompts * args.steps)]
        for T in args.tokens:
            r = {"generation": bench_generation(model.eval(), tok, args, T)}
            completions = r["generation"].pop("completions")
            r["postlab"] = bench_postlab(tmp / "model", args, tmp, T)
            # the sequences an RL step trains on, counted like SFT's (prompt + completion, every sample)
            seq_tokens = args.samples * statistics.mean(prompt_tokens) * args.prompts + r["postlab"]["generated_tokens"]
            r["postlab"]["sequence_tokens_per_update_s"] = seq_tokens / r["postlab"]["update_s"]
            if args.sft:
                r["sft"] = bench_sft(tmp / "model", args, encoded_prompts(tok, args.prompts), completions)
            r["trl"] = None if args.skip_trl else bench_trl(tmp / "model", args, tmp, T)
            res["lengths"][T] = r
        if args.ppo_multiturn:
            res["ppo_multiturn"] = bench_ppo_multiturn(tmp / "model", args, tmp)
    report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def report(res: dict, args) -> None:
    print(f"\nGRPO step: tiny Qwen2 3.4M, {args.prompts} prompts x {args.samples} samples; {res['machine']}")
    print("| new tokens | postlab s/step (generation + update) | TRL s/step (generation + rest) | ratio | "
          "engine tok/s | model.generate tok/s | ratio |\n|---|---|---|---|---|---|---|")
    for T, r in res["lengths"].items():
        p, g, trl = r["postlab"], r["generation"], r["trl"]
        hf = g.get("model.generate")
        trl_split = f" ({trl['generation_s']:.3f} + {trl['s_per_step'] - trl['generation_s']:.3f})" \
            if trl and trl["generation_s"] is not None else ""
        print(f"| {T} | {p['s_per_step']:.3f} ({p['generation_s']:.3f} + {p['update_s']:.3f}) | "
              + (f"{trl['s_per_step']:.3f}{trl_split} | {trl['s_per_step'] / p['s_per_step']:.2f}x" if trl else "- | -")
              + f" | {g['engine']:,.0f} | " + (f"{hf:,.0f} | {g['engine'] / hf:.2f}x |" if hf else "- | - |"))
    compiled = COMPILED_ENGINE
    if any(compiled in r["generation"] for r in res["lengths"].values()):
        print("\n| new tokens | engine tok/s | with the decode step compiled | ratio |\n|---|---|---|---|")
        for T, r in res["lengths"].items():
            g = r["generation"]
            print(f"| {T} | {g['engine']:,.0f} | {g[compiled]:,.0f} | {g[compiled] / g['engine']:.2f}x |")
    if args.sft:
        print("\n| new tokens | RL update: sequence tokens/s | SFT step: tokens/s | RL / SFT | "
              "RL update: tokens through the model/s |\n|---|---|---|---|---|")
        for T, r in res["lengths"].items():
            p, sft = r["postlab"], r["sft"]
            print(f"| {T} | {p['sequence_tokens_per_update_s']:,.0f} | {sft['tokens_per_s']:,.0f} | "
                  f"{p['sequence_tokens_per_update_s'] / sft['tokens_per_s']:.0%} | "
                  f"{p['trained_tokens_per_update_s']:,.0f} |")
    if "ppo_multiturn" in res:
        p = res["ppo_multiturn"]
        print(f"\nPPO multi-turn (GeneralPoints, up to {args.turns} turns x {args.ppo_tokens} tokens, "
              f"{args.ppo_updates} updates/batch): {p['s_per_step']:.3f} s/step = {p['generation_s']:.3f} s "
              f"generation ({p['generated_tokens'] / p['generation_s']:,.0f} tok/s, {p['turns']:.1f} turns/episode) "
              f"+ {p['update_s']:.3f} s update ({p['trained_tokens_per_update_s']:,.0f} trained tok/s)")


if __name__ == "__main__":
    main()
