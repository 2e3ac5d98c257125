"""One GRPO step, postlab vs TRL's GRPOTrainer, and generation tokens/s vs `model.generate`.

Same model (preset tiny: 3.4M-parameter Qwen2, char tokenizer, random init), same prompts
(GeneralPoints ID, compact style, rendered with the chat template), same samples per
prompt, completion length, temperature, optimizer (AdamW, lr, betas, no warmup,
constant schedule, grad clip 1.0), loss (GRPO, beta 0, eps .2, one update per rollout) and
reward (the GeneralPoints verifier). TRL: use_vllm=False, CPU, report_to none.

    .venv/bin/python benchmarks/rl_step.py [--prompts 8] [--samples 8] [--tokens 16] [--steps 4]

Seconds per step is the median over steps after the first (warm-up) of each trainer.
"""

from __future__ import annotations

import argparse
import statistics
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


def bench_generation(model, tok, args) -> dict:
    from postlab.rollout.engine import SamplingParams, generate, hf_generate

    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for _, m in gp_prompts(args.prompts)]
    prompts = [tok.encode(t, add_special_tokens=False) for t in texts]
    params = SamplingParams(max_new_tokens=args.tokens, n=args.samples, temperature=1.0, seed=0)
    out = {}
    for name, fn in (("postlab engine", generate), ("model.generate", hf_generate)):
        fn(model, tok, prompts, params)  # warm-up
        times, tokens = [], 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = fn(model, tok, prompts, params)
            times.append(time.perf_counter() - t)
            tokens = sum(len(c.token_ids) for c in res)
        out[name] = tokens / statistics.median(times)
    return out


def bench_postlab(path: Path, args, workdir: Path) -> float:
    import json

    from postlab.config import ModelConfig, OptimConfig, RunConfig
    from postlab.envs.base import Env, Observation, StepResult, register_env
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl

    table = dict(gp_prompts(args.prompts * args.steps))
    for seed in table:
        gp_reward(seed, "")  # deal every hand before timing (TRL's run reuses the cache)

    @register_env("bench-gp")  # GeneralPoints prompts and verifier, seeds 0.. in step order (like TRL's dataset)
    class BenchEnv(Env):
        styles = ("compact",)

        def reset(self, seed):
            self.seed = seed
            return Observation(table[seed])

        def step(self, text):
            return StepResult([], gp_reward(self.seed, text), True)

    cfg = RLConfig(model=ModelConfig(path=str(path)), env=RLEnvConfig(name="bench-gp", eval_splits=()),
                   batch=RLBatchConfig(args.prompts, args.samples, args.micro, 1),
                   sampling=RLSamplingConfig(max_new_tokens=args.tokens, temperature=1.0),
                   optim=OptimConfig(lr=1e-5, schedule="constant", betas=(0.9, 0.999), grad_clip=1.0),
                   run=RunConfig(out_dir=str(workdir / "postlab"), max_steps=args.steps, log_every=1, progress=False,
                                 tensorboard=False), algorithm="grpo")
    train_rl(cfg)
    rows = [json.loads(line) for line in open(workdir / "postlab" / "metrics.jsonl")]
    rows = [r for r in rows if "time_training" in r][1:]
    print("postlab steps (generation s, training s):", [(round(r["time_generation"], 3), round(r["time_training"], 3))
                                                       for r in rows])
    return statistics.median(r["time_generation"] + r["time_training"] for r in rows)


def bench_trl(path: Path, args, workdir: Path) -> float:
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

    cfg = GRPOConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=args.prompts * args.samples,
                     num_generations=args.samples, max_completion_length=args.tokens, temperature=1.0,
                     learning_rate=1e-5, adam_beta1=0.9, adam_beta2=0.999, lr_scheduler_type="constant",
                     warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, beta=0.0, epsilon=0.2, loss_type="grpo",
                     num_iterations=1, gradient_accumulation_steps=1, max_steps=args.steps, use_vllm=False,
                     use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
                     shuffle_dataset=False, seed=0, disable_tqdm=True)
    timer = Timer()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward, args=cfg,
                          train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(path), callbacks=[timer])
    trainer.train()
    return statistics.median(timer.times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--micro", type=int, default=8, help="postlab micro_batch_sequences")
    ap.add_argument("--skip-trl", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, tok = build_model(tmp / "model")
        gen = bench_generation(model.eval(), tok, args)
        ours = bench_postlab(tmp / "model", args, tmp)
        theirs = bench_trl(tmp / "model", args, tmp) if not args.skip_trl else float("nan")
    print(f"\nGRPO step: tiny Qwen2 3.4M, {args.prompts} prompts x {args.samples} samples, {args.tokens} new tokens, "
          f"{args.threads} threads")
    print("| | postlab | TRL GRPOTrainer | ratio |\n|---|---|---|---|")
    print(f"| seconds / GRPO step | {ours:.3f} | {theirs:.3f} | {theirs / ours:.1f}x |")
    a, b = gen["postlab engine"], gen["model.generate"]
    print(f"| generation tokens/s (engine vs model.generate) | {a:,.0f} | {b:,.0f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
