"""Which face-card rule a model applies on GeneralPoints rule-OOD hands (a memorization probe).

On `ood-rule` hands (J/Q/K = 11/12/13, every hand has a face card) the first greedy answer is
classified by the numbers it writes (`postlab.envs.generalpoints.face_rule_applied`, the
`face_rule` diagnostic every GeneralPoints evaluation reports): `stated` if it uses a face
card's rule value (11-13), `other` if it writes 10 although no card is worth 10 under the rule
(the ID convention J=Q=K=10 applied where it no longer holds), `neither` otherwise. A model
that reads the rule line scores high on `stated` even when it cannot reach 24; a model that
memorized the ID rule scores high on `other`.

    python -m postlab.eval.gp_rules CKPT [CKPT ...] [--n 64]
"""

from __future__ import annotations

import argparse


def probe(model, tokenizer, n: int = 64, max_new_tokens: int = 24) -> dict[str, int]:
    """Counts of `stated` / `other` / `neither` first answers on `n` rule-OOD evaluation hands."""
    from postlab.eval.evaluate import evaluate

    r = evaluate(model, tokenizer, "generalpoints", "ood-rule", n_episodes=n, max_turns=1,
                 max_new_tokens=max_new_tokens)
    per_problem = r["diagnostics_per_problem"]["face_rule"]
    return {cat: sum(cats[0] == cat for cats in per_problem) for cat in ("stated", "other", "neither")}


def main(argv: list[str] | None = None) -> int:
    from postlab.models.io import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=64, help="rule-OOD hands (evaluation seeds, the same for every model)")
    args = ap.parse_args(argv)
    for ck in args.checkpoints:
        counts = probe(load_model(ck).eval(), load_tokenizer(ck), args.n)
        print(f"{ck}: of {args.n} rule-OOD hands, the first answer uses the rule's face values in {counts['stated']}, "
              f"the ID value 10 instead in {counts['other']}, neither in {counts['neither']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
