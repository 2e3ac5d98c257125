"""Where reason-style GeneralPoints answers go wrong: reading, arithmetic, or the formula.

For the first greedy answer on `n` evaluation hands per split, `check` takes a reason answer
(`9 3 13 1 | 9+3=12 [13 1 12] | 13-1=12 [12 12] | 12+12=24 | (9+3)+(13-1)=24`) apart:

- `values_read`: the values field is the hand's values under the stated rule;
- `steps_right`: every step's arithmetic is exact (each `a op b=c` field evaluates to c);
- `reaches_target`: the last step claims the target;
- `success`: the formula (the last field, the only scored part) is correct.

A model that reads the rule and computes steps right but fails has a planning problem; one
whose steps are wrong on rule-OOD hands only has learned arithmetic for ID numbers only.

    python -m postlab.eval.gp_derivations CKPT [CKPT ...] [--n 256] [--splits id,ood-rule]
"""

from __future__ import annotations

import argparse
from fractions import Fraction

from postlab.verifiers.arith import ArithError, evaluate as arith_value

CHECKS = ("values_read", "steps_right", "reaches_target", "success")


def check(answer: str, values: list[int], target: int = 24, success: bool | None = None) -> dict[str, bool]:
    """The checks of one reason-style answer against the hand's values under the stated rule."""
    fields = answer.split(" | ") if isinstance(answer, str) else []
    steps = [f.split(" [", 1)[0] for f in fields[1:-1]]

    def right(step: str) -> bool:
        lhs, eq, rhs = step.rpartition("=")
        try:
            return bool(eq) and arith_value(lhs) == Fraction(rhs.strip())
        except (ArithError, ValueError, ZeroDivisionError):
            return False

    return {"values_read": bool(fields) and fields[0].split() == [str(v) for v in values],
            "steps_right": bool(steps) and all(map(right, steps)),
            "reaches_target": bool(steps) and steps[-1].rpartition("=")[2].strip() == str(target),
            "success": bool(success)}


def probe(model, tokenizer, split: str, n: int = 256, max_new_tokens: int = 128) -> dict[str, int]:
    """Counts of each check over the first greedy answers on `n` evaluation hands of `split`."""
    from postlab.envs import make
    from postlab.eval.evaluate import evaluate

    r = evaluate(model, tokenizer, "generalpoints", split, n_episodes=n, max_turns=1, style="reason",
                 max_new_tokens=max_new_tokens, num_examples=n)
    counts = dict.fromkeys(CHECKS, 0)
    env = make("generalpoints", split=split, style="reason")
    for ex in r["examples"]:
        env.reset(ex["seed"])
        for k, ok in check(ex["messages"][1]["content"], env.values, env.target, ex["success"]).items():
            counts[k] += ok
    return counts


def main(argv: list[str] | None = None) -> int:
    from postlab.models.io import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=256, help="evaluation hands per split (the same for every model)")
    ap.add_argument("--splits", default="id,ood-rule", help="comma-separated GeneralPoints splits")
    args = ap.parse_args(argv)
    for ck in args.checkpoints:
        model, tok = load_model(ck).eval(), load_tokenizer(ck)
        for split in args.splits.split(","):
            c = probe(model, tok, split, args.n)
            print(f"{ck} {split}: of {args.n} first answers, values read {c['values_read']}, steps right "
                  f"{c['steps_right']}, last step at the target {c['reaches_target']}, correct {c['success']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
