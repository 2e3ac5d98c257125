"""Greedy success on the problems a run trained on (a trajectory file's prompts) against held-out problems.

An offline method that trains on few prompts (DRIFT on a rollout of 48 hands x 16) can fit those hands'
answers while losing on new ones. This plays every checkpoint greedily, with the env's feedback, on the
distinct `env_seed`s of a trajectory file (`postlab rollout`'s output: the problems DRIFT saw) and on the
first N problems of the evaluation range (the held-out ones a study evaluates), then compares each
checkpoint with the first (the reference): its change on the seen problems and on the held-out ones, each
with a paired bootstrap 95% CI over problems, and the gap between the two changes (seen minus held-out; a
bootstrap over both sets, independently: they are different problems). A gap above 0 with a CI that
excludes 0 means the method gained more on what it saw than on what it did not.

    python scripts/seen_vs_heldout.py --trajectories RUN/seed_0/gp-rollout-*/trajectories.jsonl \\
        --env unary-feedback --env-arg env=generalpoints --env-arg max_attempts=5 --style reason \\
        --max-turns 10 --max-new-tokens 96 --heldout 64 REF/final DRIFT/final [MORE/final ...]

(docs/results.md, drift `reason`.) Only the file's `env_seed`s are used: any trajectory file of the same
env will do.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from postlab.config import parse_override
from postlab.data.records import DataError
from postlab.data.trajectories import read_trajectories
from postlab.eval.metrics import paired_difference_ci
from postlab.eval.evaluate import evaluate
from postlab.models.io import load_model, load_tokenizer


def seen_seeds(path: str | Path) -> list[int]:
    """The distinct `env_seed`s of a trajectory file (read and validated by `read_trajectories`), in file order."""
    return list(dict.fromkeys(t["env_seed"] for t in read_trajectories(path)))


def greedy_success(model, tok, env: str, **evaluate_kwargs) -> list[float]:
    """1.0 / 0.0 per problem: does the greedy episode (with the env's feedback) succeed? Played by
    `postlab.eval.evaluate` (its `env_seeds`, or its evaluation range's first `n_episodes`), as a study's
    evaluation plays its problems."""
    with torch.no_grad():
        return evaluate(model, tok, env, "id", num_examples=0, **evaluate_kwargs)["per_problem"]


def gap_ci(seen: Sequence[float], heldout: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(seen) - mean(heldout) of two independent samples (per-problem changes), percentile-bootstrap 95% CI
    resampling each sample on its own."""
    a, b = np.asarray(seen, dtype=np.float64), np.asarray(heldout, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("gap_ci needs at least one problem on each side")
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(0, a.size, (n_boot, a.size))].mean(1) - b[rng.integers(0, b.size, (n_boot, b.size))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"mean": float(a.mean() - b.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def compare(outcomes: dict[str, dict[str, list[float]]]) -> dict[str, dict]:
    """Per checkpoint after the first: its change from the first on `seen` and `heldout` (paired CIs) and the gap."""
    ref_name = next(iter(outcomes))
    ref = outcomes[ref_name]
    out = {}
    for name, o in list(outcomes.items())[1:]:
        seen_d = [x - y for x, y in zip(o["seen"], ref["seen"])]
        held_d = [x - y for x, y in zip(o["heldout"], ref["heldout"])]
        out[name] = {"seen": paired_difference_ci(o["seen"], ref["seen"]),
                     "heldout": paired_difference_ci(o["heldout"], ref["heldout"]),
                     "gap": gap_ci(seen_d, held_d)}
    return out


def _fmt(ci: dict) -> str:
    return f"{100 * ci['mean']:+.1f} [{100 * ci['ci_low']:+.1f}, {100 * ci['ci_high']:+.1f}]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint directories; the first is the reference")
    ap.add_argument("--trajectories", required=True, help="a trajectory file whose env_seeds are the seen problems")
    ap.add_argument("--env", required=True)
    ap.add_argument("--style", default="compact", help="the prompt style (as `postlab eval --style`)")
    ap.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment option (repeatable), e.g. max_attempts=5")
    ap.add_argument("--heldout", type=int, default=64, help="held-out problems: the evaluation range's first N")
    ap.add_argument("--max-turns", type=int, default=None, help="the env's turn limit (default: the env's)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", default=None, help="write every per-problem outcome and CI as JSON here")
    args = ap.parse_args(argv)
    twice = next((c for i, c in enumerate(args.checkpoints) if c in args.checkpoints[:i]), None)
    if twice:
        ap.error(f"checkpoint {twice} is given twice; give each checkpoint once (the first is the reference)")
    env_args = {}
    for item in args.env_arg:
        key, value = parse_override(item)
        env_args[".".join(key)] = value
    play_as = dict(env_args=env_args, style=args.style, max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    try:
        seen = seen_seeds(args.trajectories)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    outcomes = {}
    for path in args.checkpoints:
        model, tok = load_model(path).eval(), load_tokenizer(path)
        outcomes[path] = {"seen": greedy_success(model, tok, args.env, env_seeds=seen, **play_as),
                          "heldout": greedy_success(model, tok, args.env, n_episodes=args.heldout, **play_as)}
        o = outcomes[path]
        print(f"{path}: seen {100 * np.mean(o['seen']):.1f}% of {len(seen)}, "
              f"held-out {100 * np.mean(o['heldout']):.1f}% of {args.heldout}", flush=True)
    changes = compare(outcomes)
    for name, c in changes.items():
        print(f"{name} - {args.checkpoints[0]}: seen {_fmt(c['seen'])}, held-out {_fmt(c['heldout'])}, "
              f"gap (seen - held-out) {_fmt(c['gap'])}")
    if args.out:
        Path(args.out).write_text(json.dumps({"outcomes": outcomes, "changes": changes}, indent=1))


if __name__ == "__main__":
    main()
