"""Multi-turn sampling: the kept KV cache (DialogueSampler) vs re-encoding every dialogue each turn.

    python benchmarks/multiturn_sampling.py CKPT [--episodes 64] [--env math] [--threads 2]
    python benchmarks/multiturn_sampling.py --episodes 2 --max-new-tokens 3   # no CKPT: a random-init tiny preset

Both paths run in one process on the same episodes (unary-feedback env, --attempts 5, temperature 1),
one after the other; the episodes they produce are compared token for token. Quote the ratio.
"""

import argparse
import time

import torch

import postlab.envs.multiturn  # noqa: F401  (registers unary-feedback)
from postlab.envs import make
from postlab.models.io import load_model, load_tokenizer
from postlab.rollout.engine import SamplingParams
from postlab.rollout.episodes import run_episodes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt", nargs="?", help="a checkpoint directory (default: a random-init model of --preset)")
    ap.add_argument("--preset", default="tiny", help="model preset when no CKPT is given")
    ap.add_argument("--attempts", type=int, default=5, help="unary-feedback attempts per episode")
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--group", type=int, default=16, help="episodes per problem")
    ap.add_argument("--env", default="math")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ckpt:
        model, tok = load_model(args.ckpt).eval(), load_tokenizer(args.ckpt)
    else:
        from postlab.models import build_tokenizer, init_model

        tok = build_tokenizer([], "char")
        model = init_model(args.preset, tok, seed=0).eval()
    seeds = [2 * 10**10 + i // args.group for i in range(args.episodes)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    out = {}
    for name, cached in (("kept cache", True), ("re-encode", False)):
        envs = [make("unary-feedback", env=args.env, max_attempts=args.attempts) for _ in seeds]
        t = time.perf_counter()
        eps = run_episodes(model, tok, envs, seeds, params, max_turns=2 * args.attempts, prefix_cache=cached)
        dt = time.perf_counter() - t
        gen = sum(len(tr.token_ids) for e in eps for tr in e.turns)
        out[name] = (eps, dt)
        print(f"{name:>10}: {dt:7.1f} s  {gen / dt:8.0f} generated tok/s  "
              f"{sum(len(e.turns) for e in eps) / len(eps):.1f} turns/episode  threads={torch.get_num_threads()}")
    same = [e.input_ids for e in out["kept cache"][0]] == [e.input_ids for e in out["re-encode"][0]]
    print(f"speed-up {out['re-encode'][1] / out['kept cache'][1]:.2f}x; identical episodes: {same}")


if __name__ == "__main__":
    main()
