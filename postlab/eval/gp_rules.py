"""Which face-card rule a model applies on GeneralPoints rule-OOD hands (a memorization probe).

On `ood-rule` hands (J/Q/K = 11/12/13, every hand has a face card) the first greedy answer is
classified by the numbers it writes: `rule` if it uses a face card's rule value (11-13),
`id_rule` if it writes 10 although no card is worth 10 under the rule (the ID convention
J=Q=K=10 applied where it no longer holds), `other` otherwise. A model that reads the rule
line scores high on `rule` even when it cannot reach 24; a model that memorized the ID rule
scores high on `id_rule`.

    python -m postlab.eval.gp_rules CKPT [CKPT ...] [--n 64]
"""

from __future__ import annotations

import argparse

from postlab.eval.evaluate import SEED_BASE


def classify(answer: str, ranks: list[int], values: list[int]) -> str:
    """'rule' | 'id_rule' | 'other' for one answer to a rule-OOD hand (postlab.envs.generalpoints.face_rule_applied)."""
    from postlab.envs.generalpoints import face_rule_applied

    return {"stated": "rule", "other": "id_rule", "neither": "other"}[face_rule_applied(answer, ranks, 11)]


def probe(model, tokenizer, n: int = 64, max_new_tokens: int = 24) -> dict[str, int]:
    from postlab.envs import make
    from postlab.rollout.engine import SamplingParams
    from postlab.rollout.episodes import run_episodes

    seeds = list(range(SEED_BASE, SEED_BASE + n))
    envs = [make("generalpoints", split="ood-rule", style="compact", max_turns=1) for _ in seeds]
    episodes = run_episodes(model, tokenizer, envs, seeds, SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
    counts = {"rule": 0, "id_rule": 0, "other": 0}
    for env, ep in zip(envs, episodes):
        counts[classify(ep.turns[0].text, env.ranks, env.values)] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    from postlab.models.io import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=64, help="rule-OOD hands (evaluation seeds, the same for every model)")
    args = ap.parse_args(argv)
    for ck in args.checkpoints:
        counts = probe(load_model(ck).eval(), load_tokenizer(ck), args.n)
        print(f"{ck}: of {args.n} rule-OOD hands, the first answer uses the rule's face values in {counts['rule']}, "
              f"the ID value 10 instead in {counts['id_rule']}, neither in {counts['other']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
