"""Where an RL update's time goes: the same episodes through each micro-batch layout.

A fresh model (preset `micro`, 0.63M parameters, char tokenizer: the lab studies' GeneralPoints
model) plays GeneralPoints (compact, VIter `--turns`) for `--prompts` x `--samples` episodes once;
then one forward + backward over all micro-batches, per layout:

    shared   a group's prompt once per row, its answers after it, a dense L x L mask (rl_batch.pack_shared_prefix)
    padded   one episode per row, rows sorted by length, sdpa's causal kernel (models.forward, the default)
    packed   every episode of a micro-batch in one row, block-diagonal mask built by transformers
    chosen   what the RL trainer uses: shared where rl_batch.shared_prefix_pays says it is cheaper

    .venv/bin/python benchmarks/rl_update.py [--prompts 64] [--samples 8] [--turns 5] [--tokens 24] [--micro 8,64]
    .venv/bin/python benchmarks/rl_update.py --prompts 2 --samples 2 --turns 1 --tokens 4 --micro 2 --repeats 1   # smoke

Seconds are the median of `--repeats` runs. Log-probs of every layout are checked against the
padded one (max abs difference printed), so a faster layout that computes something else shows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def play(prompts: int, samples: int, turns: int, tokens: int):
    from postlab.envs import make
    from postlab.models.io import init_model
    from postlab.models.tokenizer import build_tokenizer
    from postlab.rollout.engine import SamplingParams
    from postlab.rollout.episodes import run_episodes

    tok = build_tokenizer([])
    model = init_model("micro", tok, seed=0)
    seeds = [p for p in range(prompts) for _ in range(samples)]
    envs = [make("generalpoints", split="id", style="compact", max_turns=turns) for _ in seeds]
    eps = run_episodes(model, tok, envs, seeds, SamplingParams(max_new_tokens=tokens, temperature=1.0, seed=0))
    return model.train(), eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--turns", type=int, default=5, help="model turns per episode (verification iterations)")
    ap.add_argument("--tokens", type=int, default=24, help="new tokens per model turn")
    ap.add_argument("--micro", default="8,64", help="micro-batch sizes (episodes), comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from postlab.models import forward
    from postlab.trainers import rl_batch as rb

    model, eps = play(args.prompts, args.samples, args.turns, args.tokens)
    n_tokens = sum(len(e.input_ids) for e in eps)
    print(f"{len(eps)} episodes, {n_tokens} tokens, prompt {eps[0].turns[0].start}, "
          f"mean episode {n_tokens / len(eps):.0f} tokens, {args.threads} threads")

    def batches(micro: int, layout: str):
        out = []
        for lo in range(0, len(eps), micro):
            group = eps[lo:lo + micro]
            per = {"advantages": [torch.ones(len(e.target_turns())) for e in group]}
            if layout == "shared":
                out.append(rb.pack_shared_prefix(group, per))
            elif layout == "chosen":
                out.append(rb.pack_for_update(group, per, model))
            else:
                out.append(rb.pack_episodes(group, per))
        return out

    def run(bs: list, layout: str) -> tuple[float, torch.Tensor]:
        blocked = forward.padded_path_blocked
        if layout == "packed":  # the one-row path the padded layout replaced
            forward.padded_path_blocked = lambda m: True
        try:
            t0 = time.perf_counter()
            logps = []
            for b in bs:
                out = rb.packed_outputs(model, b)
                out.logp.sum().backward()
                logps.append(out.logp.detach())
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - t0, torch.cat(logps)
        finally:
            forward.padded_path_blocked = blocked

    for micro in [int(x) for x in args.micro.split(",")]:
        ref = None
        for layout in ("padded", "shared", "packed", "chosen"):
            bs = batches(micro, layout)
            times, logp = [], None
            for _ in range(args.repeats):
                t, logp = run(bs, layout)
                times.append(t)
            ref = logp if ref is None else ref
            rows = sum(int(b.input_ids.numel()) for b in bs)
            print(f"micro {micro:4d}  {layout:7s} {statistics.median(times):7.2f} s  tokens {rows:7d}  "
                  f"max |logp - padded| {float((logp - ref).abs().max()):.1e}")


if __name__ == "__main__":
    main()
