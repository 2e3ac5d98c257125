"""SFT training throughput: postlab vs TRL's SFTTrainer, and postlab vs the machine's matmul peak.

    python benchmarks/sft_throughput.py                 # defaults below (about 1-2 minutes on 2 CPU cores)
    python benchmarks/sft_throughput.py --steps 40 --batch 32 --json out.json

Same model (preset `tiny`: 3.4M-parameter Qwen2, postlab char tokenizer, same initial weights),
same records (prompt/completion, completion-only loss), same batch (sequences per optimizer
step), same lr and AdamW, fp32, on the same CPU threads, in one process:

- postlab: the SFT trainer's step (`pack_micro_batches` -> `step_normalizer` ->
  `accumulate_gradients` -> `optimizer_step`), i.e. padding-free packed rows and the LM head
  only at trained positions;
- TRL: `trl.SFTTrainer` (transformers Trainer underneath), `padding_free=True` (its collator
  flattens the batch into one row with position_ids; transformers builds the block-diagonal
  mask from them for sdpa on CPU), report_to none, no saving, no eval.

Tokens/s counts every input token (prompt + completion) that goes through the model; the
first `--warmup` steps of each are excluded. Achieved FLOP/s uses the usual 6 * N * tokens
(N = parameters, tied embedding counted once) and is compared with a measured fp32 matmul peak
(best of several 2048x2048 products).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import torch


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Arithmetic-flavoured prompt/completion pairs of varied length (about 40-140 characters)."""
    rng = random.Random(seed)
    recs = []
    for _ in range(n):
        nums = [rng.randint(1, 13) for _ in range(4)]
        prompt = f"Cards: {', '.join(map(str, nums))}. " + "Use each card once to make 24. " * rng.randint(0, 2) + "Answer:"
        expr = f"({nums[0]}+{nums[1]})*{nums[2]}-{nums[3]}" + " = " + str((nums[0] + nums[1]) * nums[2] - nums[3])
        completion = " " + expr + (" because " + "x" * rng.randint(0, 40) if rng.random() < 0.5 else "")
        recs.append({"prompt": prompt, "completion": completion})
    return recs


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def fresh_model(tok, seed: int = 0):
    from postlab.models import init_model

    return init_model("tiny", tok, seed=seed).train()


def bench_postlab(tok, records, args) -> dict:
    from postlab.config import OptimConfig
    from postlab.data.records import encode_all
    from postlab.objectives import get_objective
    from postlab.trainers.common import (accumulate_gradients, make_optimizer, optimizer_step, pack_micro_batches,
                                         set_lr, step_normalizer)

    model = fresh_model(tok)
    opt = make_optimizer(model, OptimConfig(lr=args.lr, betas=(0.9, 0.999), grad_clip=1.0))
    set_lr(opt, args.lr)
    seqs = encode_all(tok, records)
    objective = get_objective("nll")
    tokens, t0, losses = 0, None, []
    for step in range(args.steps + args.warmup):
        if step == args.warmup:
            t0, tokens = time.perf_counter(), 0
        batch = seqs[step * args.batch:(step + 1) * args.batch]
        micro = pack_micro_batches(batch, args.micro or args.batch)
        norm = step_normalizer(micro)
        m = accumulate_gradients(model, micro, objective, {}, "token_mean", norm)
        optimizer_step(model, opt, 1.0)
        tokens += sum(mb.num_tokens for mb in micro)
        losses.append(m["loss"])
    dt = time.perf_counter() - t0
    return {"tokens_per_s": tokens / dt, "tokens": tokens, "seconds": dt, "first_loss": losses[0],
            "last_loss": losses[-1]}


def bench_trl(tok, records, args) -> dict:
    import datasets
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model = fresh_model(tok)
    counted = {"tokens": 0, "on": False}

    def count(_module, _args, kwargs):  # every token that goes through the model (padding excluded)
        if counted["on"]:
            mask = kwargs.get("attention_mask")
            counted["tokens"] += int(mask.sum()) if mask is not None else int(kwargs["input_ids"].numel())

    model.register_forward_pre_hook(count, with_kwargs=True)
    times = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                counted["on"], times["t0"] = True, time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times["t1"] = time.perf_counter()

    n = (args.steps + args.warmup) * args.batch
    ds = datasets.Dataset.from_list(records[:n])
    cfg = SFTConfig(output_dir=os.path.join(args.tmp, "trl"), per_device_train_batch_size=args.micro or args.batch,
                    gradient_accumulation_steps=args.batch // (args.micro or args.batch), learning_rate=args.lr,
                    lr_scheduler_type="constant", warmup_steps=0, max_steps=args.steps + args.warmup,
                    max_grad_norm=1.0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
                    padding_free=args.trl_padding_free, max_length=None if args.trl_padding_free else 1024,
                    report_to="none", save_strategy="no", eval_strategy="no", logging_steps=10_000,
                    use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0, bf16=False, fp16=False)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    out = trainer.train()
    dt = times["t1"] - times["t0"]
    return {"tokens_per_s": counted["tokens"] / dt, "tokens": counted["tokens"], "seconds": dt,
            "train_loss": out.training_loss, "padding_free": args.trl_padding_free}


def main(argv=None) -> dict:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=32, help="sequences per optimizer step")
    ap.add_argument("--micro", type=int, default=0, help="sequences per micro-batch (0: = batch)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--trl-padding-free", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmul that measures the peak")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from postlab.models import build_tokenizer

    tok = build_tokenizer([], "char")
    records = make_records((args.steps + args.warmup) * args.batch)
    n_params = sum(p.numel() for p in fresh_model(tok).parameters())
    peak = matmul_peak(args.peak_size)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        pl = bench_postlab(tok, records, args)
        trl = None if args.skip_trl else bench_trl(tok, records, args)
    pl_flops = 6 * n_params * pl["tokens_per_s"]
    res = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
           "torch": torch.__version__, "params": n_params, "batch": args.batch, "steps": args.steps,
           "matmul_peak_gflops": peak / 1e9, "postlab": pl, "trl": trl,
           "postlab_gflops": pl_flops / 1e9, "postlab_fraction_of_peak": pl_flops / peak,
           "speedup_vs_trl": pl["tokens_per_s"] / trl["tokens_per_s"] if trl else None}
    print(f"\nmodel: preset tiny, {n_params / 1e6:.2f}M parameters; batch {args.batch} sequences/step; "
          f"{args.steps} timed steps; {res['machine']}")
    print(f"{'':32}{'tokens/s':>12}{'GFLOP/s (6N)':>15}{'of peak':>10}")
    print(f"{f'fp32 matmul peak ({args.peak_size}^3)':32}{'':>12}{peak / 1e9:>15.1f}{'100%':>10}")
    print(f"{'postlab':32}{pl['tokens_per_s']:>12,.0f}{pl_flops / 1e9:>15.1f}{pl_flops / peak:>10.0%}")
    if trl:
        tf = 6 * n_params * trl["tokens_per_s"]
        name = "TRL SFTTrainer" + (" (padding_free)" if args.trl_padding_free else " (padded)")
        print(f"{name:32}{trl['tokens_per_s']:>12,.0f}{tf / 1e9:>15.1f}{tf / peak:>10.0%}")
        print(f"postlab / TRL tokens/s: {res['speedup_vs_trl']:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
