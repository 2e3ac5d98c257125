"""GPU check: a few SFT and GRPO steps at Qwen2-0.5B's shape, offline, with timings and peak memory.

    scripts/gpu_check.sh [--sft-steps 5] [--rl-steps 4] [--lora 16] [--out DIR]

What it runs, on one CUDA GPU with no network (nothing is downloaded):

- a random-init Qwen2 of Qwen2-0.5B's published shape (hidden 896, 24 layers, 14 heads, 2 KV
  heads, intermediate 4864, vocab 151936, tied embeddings; ~494M parameters) and a tokenizer built
  locally (postlab's byte-level tokenizer plus Qwen's ChatML special tokens and chat template),
  saved as a Hugging Face directory the trainers load with model.path;
- postlab SFT on procedural math dialogues (paper style, ~300 tokens each);
- postlab GRPO on the procedural `math` env with the local engine and, when vLLM is installed,
  with `rollout.backend: vllm`;
- TRL's GRPOTrainer on the same model, prompts, reward and batch shape, when trl is importable.

It prints steps/s, tokens/s (trained + generated) and peak GPU memory per run, and writes them to
OUT/gpu_check.json. The model is random, so rewards are 0 and every completion runs to
max_new_tokens: the numbers measure throughput, not learning. Steps/s is over the steps after
the first (warm-up). Peak memory is torch's allocator peak (`max_memory_allocated`); vLLM's own
pool is not in it, so vLLM runs also report the device's used memory at the end.

Without CUDA it exits with status 2 and says so (`--allow-cpu` runs it anyway, for the tests and
for trying the flags at `--tiny` size). It never runs in CI.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Qwen2-0.5B's config.json (the published sizes); max_position_embeddings trimmed from 131072,
# which only sizes the rotary cache.
QWEN2_0_5B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1_000_000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)
# --tiny: the same architecture and vocabulary at a size a CPU test builds in a second.
TINY = dict(QWEN2_0_5B, hidden_size=56, num_hidden_layers=2, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=112, max_position_embeddings=2048)

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2-Instruct's template without the tool-calling branches: a default system turn, then
# "<|im_start|>{role}\n{content}<|im_end|>\n" per message. Prefix-stable, as postlab's per-turn
# loss masks need.
CHATML_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--tiny", action="store_true", help="Qwen2-0.5B's architecture at a tiny width and depth")
    ap.add_argument("--sft-steps", type=int, default=5)
    ap.add_argument("--rl-steps", type=int, default=4)
    ap.add_argument("--sequences", type=int, default=16, help="SFT sequences per step")
    ap.add_argument("--micro", type=int, default=8, help="sequences per micro-batch (SFT and GRPO)")
    ap.add_argument("--prompts", type=int, default=8, help="GRPO prompts per step")
    ap.add_argument("--samples", type=int, default=8, help="GRPO samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lengths", default=None,
                    help="completion lengths to compare, comma-separated (default: --max-new-tokens; "
                         "benchmarks/rl_step.py's comparison: 16,128,512): GRPO local vs TRL and the engine vs "
                         "model.generate at each")
    ap.add_argument("--no-generate-compare", action="store_true", help="skip the engine vs model.generate runs")
    ap.add_argument("--precision", choices=("autocast", "bf16", "fp32"), default="autocast",
                    help="autocast: float32 weights + bf16 autocast (what TRL's bf16=True does); bf16: bf16 weights")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--lora", type=int, default=0, metavar="R", help="train LoRA adapters of rank R (0: full)")
    ap.add_argument("--backends", default="local,vllm", help="GRPO rollout backends to try (vllm: when installed)")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's GRPOTrainer")
    ap.add_argument("--allow-cpu", action="store_true", help="run without CUDA (tests; use with --tiny)")
    args = ap.parse_args(argv)
    for name in ("sft_steps", "rl_steps", "sequences", "micro", "prompts", "max_new_tokens"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        args.lengths = [int(t) for t in args.lengths.split(",")] if args.lengths else [args.max_new_tokens]
    except ValueError:
        ap.error(f"--lengths: comma-separated integers, got {args.lengths!r}")
    if min(args.lengths) < 1:
        ap.error("--lengths must all be >= 1")
    if args.samples < 2:
        ap.error("--samples must be >= 2 (GRPO's group baseline)")
    if args.micro > min(args.sequences, args.prompts * args.samples):
        ap.error("--micro must be <= --sequences and <= --prompts x --samples")
    unknown = set(args.backends.split(",")) - {"local", "vllm"}
    if unknown:
        ap.error(f"--backends: unknown {sorted(unknown)}; valid: local, vllm")
    return args


# ----------------------------------------------------------------------------- model and data (CPU-safe)


def build_tokenizer():
    """postlab's byte-level tokenizer with Qwen's ChatML specials, EOS <|im_end|>, pad <|endoftext|>."""
    from postlab.models.tokenizer import build_tokenizer as postlab_tokenizer

    tok = postlab_tokenizer([], "char")
    tok.add_special_tokens({"additional_special_tokens": CHATML_SPECIALS})
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_model(tok, tiny: bool = False, seed: int = 0):
    """A random-init Qwen2ForCausalLM of Qwen2-0.5B's shape (or --tiny), float32."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    sizes = TINY if tiny else QWEN2_0_5B
    if len(tok) > sizes["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tok)} tokens, more than the model's vocabulary {sizes['vocab_size']}")
    cfg = Qwen2Config(**sizes, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, do_sample=False)
    return model


def write_checkpoint(out: Path, tiny: bool = False) -> Path:
    """Model + tokenizer as a Hugging Face directory (model.path for the trainers, TRL's model id)."""
    from postlab.models.io import save_pretrained_atomic

    tok = build_tokenizer()
    save_pretrained_atomic(build_model(tok, tiny), tok, out)
    return out


def sft_records(n: int) -> list[dict]:
    """Procedural math dialogues, paper style (problem + worked solution with \\boxed{})."""
    import postlab.envs.math  # noqa: F401  (registers the env)
    from postlab.envs import make

    env = make("math", split="ood", style="paper")
    return [{"messages": env.reset(seed=i).messages + [{"role": "assistant", "content": env.expert()}]}
            for i in range(n)]


def model_config(path: Path, args):
    from postlab.config import LoRAConfig, ModelConfig

    dtype = "bfloat16" if args.precision == "bf16" else "float32"
    return ModelConfig(path=str(path), dtype=dtype, autocast="bfloat16" if args.precision == "autocast" else None,
                       gradient_checkpointing=args.gradient_checkpointing,
                       lora=LoRAConfig(r=args.lora, alpha=2.0 * args.lora) if args.lora else None)


# ----------------------------------------------------------------------------- runs (GPU)


def _cuda_reset():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30, "device_used_gib": (total - free) / 2**30}


def _rates(rows: list[dict]) -> dict:
    rows = [r for r in rows if r.get("kind", "train") == "train"]
    timed = rows[1:] or rows  # the first step warms up kernels and allocators
    seconds = sum(r["step_time_s"] for r in timed)
    tokens = sum(r["tokens_trained"] + r["tokens_generated"] for r in timed)
    out = {"steps": len(rows), "steps_per_s": len(timed) / seconds, "tokens_per_s": tokens / seconds}
    if any("gen_tokens_per_s" in r for r in timed):
        out["generated_tokens_per_s"] = statistics.median(r["gen_tokens_per_s"] for r in timed)
    if all("time_training" in r for r in timed):  # RL: the update's trained tokens/s (compare with SFT's tokens/s)
        out["update_tokens_per_s"] = sum(r["tokens_trained"] for r in timed) / sum(r["time_training"] for r in timed)
        out["generation_s"] = statistics.median(r["time_generation"] for r in timed)
        out["update_s"] = statistics.median(r["time_training"] for r in timed)
    return out


def run_sft(path: Path, args, work: Path) -> dict:
    from postlab.config import OptimConfig, RunConfig
    from postlab.trainers.sft import BatchConfig, SFTConfig, train_sft

    out = work / "sft"
    cfg = SFTConfig(model=model_config(path, args), optim=OptimConfig(lr=1e-5, schedule="constant"),
                    batch=BatchConfig(args.sequences, args.micro),
                    run=RunConfig(out_dir=str(out), max_steps=args.sft_steps, log_every=1, progress=False,
                                  tensorboard=False))
    _cuda_reset()
    train_sft(cfg, train_records=sft_records(args.sequences * args.sft_steps))
    return {**_rates(_metrics(out)), **_cuda_peak()}


def run_grpo(path: Path, args, work: Path, backend: str) -> dict:
    import postlab.envs.math  # noqa: F401  (registers the env)
    from postlab.config import OptimConfig, RunConfig
    from postlab.rollout.backends import RolloutConfig
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl

    out = work / f"grpo-{backend}-{args.max_new_tokens}"
    cfg = RLConfig(model=model_config(path, args), env=RLEnvConfig(name="math", split="ood", style="paper",
                                                                     eval_splits=()),
                   batch=RLBatchConfig(args.prompts, args.samples, args.micro, 1),
                   sampling=RLSamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0),
                   rollout=RolloutConfig(backend=backend, gpu_memory_utilization=0.3),
                   optim=OptimConfig(lr=1e-6, schedule="constant"), algorithm="grpo",
                   run=RunConfig(out_dir=str(out), max_steps=args.rl_steps, log_every=1, progress=False,
                                 tensorboard=False))
    _cuda_reset()
    train_rl(cfg)
    return {**_rates(_metrics(out)), **_cuda_peak()}


def run_trl(path: Path, args, work: Path) -> dict:
    """TRL's GRPOTrainer: same model, prompts, verifier, batch shape, completion length, optimizer."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import postlab.envs.math  # noqa: F401  (registers the env)
    from postlab.envs import make

    env = make("math", split="ood", style="paper")
    n = args.prompts * args.rl_steps
    rows = [{"prompt": env.reset(seed=i).messages, "answer": env.expert_answer()} for i in range(n)]

    def reward(completions, answer, **kw):
        from postlab.verifiers.answers import answers_match, extract_answer

        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(answers_match(extract_answer(t), a)) for t, a in zip(texts, answer)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t = [], 0.0

        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t)

    cfg = GRPOConfig(output_dir=str(work / f"trl-{args.max_new_tokens}"), per_device_train_batch_size=args.prompts * args.samples,
                     num_generations=args.samples, max_completion_length=args.max_new_tokens, temperature=1.0,
                     learning_rate=1e-6, lr_scheduler_type="constant", beta=0.0, num_iterations=1,
                     gradient_accumulation_steps=1, max_steps=args.rl_steps, use_vllm=False,
                     bf16=args.precision != "fp32" and torch.cuda.is_available(),
                     gradient_checkpointing=args.gradient_checkpointing, use_cpu=not torch.cuda.is_available(),
                     report_to="none", save_strategy="no", logging_steps=1, shuffle_dataset=False, seed=0,
                     disable_tqdm=True)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    timer = Timer()
    _cuda_reset()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype), reward_funcs=reward,
                          args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(str(path)), callbacks=[timer])
    trainer.train()
    timed = timer.times[1:] or timer.times
    tokens = args.prompts * args.samples * args.max_new_tokens  # an upper bound: TRL stops rows at EOS too
    return {"steps": len(timer.times), "steps_per_s": len(timed) / sum(timed),
            "generated_tokens_per_s_upper_bound": tokens * len(timed) / sum(timed), **_cuda_peak()}


def run_generation(path: Path, args) -> dict:
    """Generated tokens/s: postlab's engine vs `model.generate`, same model, prompts, samples and length."""
    import torch

    import postlab.envs.math  # noqa: F401  (registers the env)
    from postlab.envs import make
    from postlab.models.io import load_model, load_tokenizer
    from postlab.rollout.engine import SamplingParams, generate, hf_generate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if args.precision == "bf16" else "float32"
    model, tok = load_model(str(path), dtype=dtype, device=device).eval(), load_tokenizer(str(path))
    env = make("math", split="ood", style="paper")
    texts = [tok.apply_chat_template(env.reset(seed=i).messages, tokenize=False, add_generation_prompt=True)
             for i in range(args.prompts)]
    prompts = [tok.encode(t, add_special_tokens=False) for t in texts]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, n=args.samples, temperature=1.0, seed=0)
    out = {}
    for name, fn in (("engine", generate), ("model.generate", hf_generate)):
        fn(model, tok, prompts, params)  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = fn(model, tok, prompts, params)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out[f"{name}_tokens_per_s"] = sum(len(c.token_ids) for c in res) / (time.perf_counter() - t)
    out["ratio"] = out["engine_tokens_per_s"] / out["model.generate_tokens_per_s"]
    del model
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def table(results: dict, device: str = "") -> str:
    lines = [f"| run ({device}) | steps/s | tokens/s | peak GPU memory (GiB) |", "|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | |")
            continue
        if "ratio" in r:  # a generation comparison
            lines.append(f"| {name} | | {r['engine_tokens_per_s']:,.0f} vs {r['model.generate_tokens_per_s']:,.0f} "
                         f"({r['ratio']:.2f}x) | |")
            continue
        tokens = r.get("tokens_per_s", r.get("generated_tokens_per_s_upper_bound"))
        peak = r.get("peak_allocated_gib")
        lines.append(f"| {name} | {r['steps_per_s']:.3f} | {tokens:,.0f} | "
                     + (f"{peak:.1f} (device used {r['device_used_gib']:.1f})" if peak is not None else "n/a") + " |")
    return "\n".join(lines)


def comparisons(results: dict, lengths: list[int], device: str) -> str:
    """The ratios benchmarks/rl_step.py prints on CPU: GRPO step vs TRL, engine vs model.generate, RL update vs SFT."""
    lines = [f"| new tokens ({device}) | GRPO s/step postlab (generation + update) | TRL s/step | ratio | "
             f"engine vs model.generate | RL update tokens/s / SFT tokens/s |", "|---|---|---|---|---|---|"]
    sft = results.get("postlab SFT", {})
    for T in lengths:
        ours, trl = results.get(f"postlab GRPO (local engine, {T} tokens)", {}), results.get(f"TRL GRPOTrainer ({T} tokens)", {})
        gen = results.get(f"generation ({T} tokens): engine vs model.generate", {})
        s_ours = 1 / ours["steps_per_s"] if "steps_per_s" in ours else None
        s_trl = 1 / trl["steps_per_s"] if "steps_per_s" in trl else None
        cell = f"{s_ours:.3f} ({ours['generation_s']:.3f} + {ours['update_s']:.3f})" if s_ours else "-"
        lines.append(f"| {T} | {cell} | " + (f"{s_trl:.3f} | {s_trl / s_ours:.2f}x" if s_trl and s_ours else "- | -")
                     + (f" | {gen['ratio']:.2f}x" if "ratio" in gen else " | -")
                     + (f" | {ours['update_tokens_per_s'] / sft['tokens_per_s']:.0%} |"
                        if "update_tokens_per_s" in ours and "tokens_per_s" in sft else " | - |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); this check measures "
              "GPU throughput and memory, so it does nothing here. Run it on a machine with a CUDA GPU and a CUDA "
              "build of torch (--allow-cpu forces a CPU run, e.g. with --tiny).", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        path = write_checkpoint(work / "model", tiny=args.tiny)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        shape = "tiny Qwen2" if args.tiny else "Qwen2-0.5B shape (random init)"
        print(f"gpu_check: {shape}, {device}, precision={args.precision}, lora={args.lora or 'off'}, "
              f"gradient_checkpointing={args.gradient_checkpointing}")
        results: dict[str, dict] = {}
        runs = [("postlab SFT", lambda: run_sft(path, args, work))]
        backends = args.backends.split(",")
        use_vllm, use_trl = "vllm" in backends, not args.no_trl
        if use_vllm and importlib.util.find_spec("vllm") is None:
            print("gpu_check: vLLM is not installed; skipping the vLLM GRPO run (pip install 'postlab[vllm]')")
            use_vllm = False
        if use_trl and importlib.util.find_spec("trl") is None:
            print("gpu_check: trl is not installed; skipping TRL's GRPOTrainer (pip install trl)")
            use_trl = False

        def at(T, fn):  # run fn with --max-new-tokens T
            return lambda: fn(argparse.Namespace(**{**vars(args), "max_new_tokens": T}))

        for T in args.lengths:
            if not args.no_generate_compare:
                runs.append((f"generation ({T} tokens): engine vs model.generate", at(T, lambda a: run_generation(path, a))))
            if "local" in backends:
                runs.append((f"postlab GRPO (local engine, {T} tokens)", at(T, lambda a: run_grpo(path, a, work, "local"))))
            if use_vllm:
                runs.append((f"postlab GRPO (vLLM, {T} tokens)", at(T, lambda a: run_grpo(path, a, work, "vllm"))))
            if use_trl:
                runs.append((f"TRL GRPOTrainer ({T} tokens)", at(T, lambda a: run_trl(path, a, work))))
        for name, fn in runs:
            try:
                results[name] = fn()
            except Exception as e:  # noqa: BLE001 - one failed run must not hide the others' numbers
                results[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"[{device}] {name}: {json.dumps(results[name])}", flush=True)
        (work / "gpu_check.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "device": device, "results": results}, indent=1))
        print("\n" + table(results, device))
        print("\n" + comparisons(results, args.lengths, device))
        if args.out:
            print(f"\nresults: {work / 'gpu_check.json'}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
