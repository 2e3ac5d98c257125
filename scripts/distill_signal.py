"""What an on-policy distillation teacher says about a student's own answers, before any training.

Samples `--samples` answers per problem from the student on RL training problems (the `rl` seed range:
never evaluation problems), scores every sampled token with student and teacher through the RL trainer's
own packing (`rl_batch.pack_episodes` + `packed_outputs`, so the log-probs are the ones `opd` trains on),
and prints:
- success of the student's and the teacher's samples on the same problems;
- OPD's sequence return (sum over the answer of log pi_T - log pi_S) on right and on wrong answers, and how
  often it ranks a right answer above a wrong one of the same group;
- the per-token advantages' positive and negative mass (OPD's signal, token by token).

    python scripts/distill_signal.py --student RUN/final --teacher TEACHER/final \\
        --env generalpoints --style reason --env-arg expert_choice=canonical --max-new-tokens 96
"""

from __future__ import annotations

import argparse

import torch

from postlab.envs.base import make
from postlab.models.io import load_model, load_tokenizer
from postlab.rollout.engine import SamplingParams
from postlab.rollout.episodes import play
from postlab.seeds import rl_seed
from postlab.trainers import rl_batch


def token_logprobs(model, episodes, chunk: int = 32) -> list[torch.Tensor]:
    """Per episode, the model's log-prob of every sampled (trained) token."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(episodes), chunk):
            part = episodes[lo:lo + chunk]
            batch = rl_batch.pack_episodes(part, {})
            logp = rl_batch.packed_outputs(model, batch).logp
            out += [logp[batch.seq_idx == j] for j in range(len(part))]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", required=True, help="student checkpoint directory (a run's final/)")
    ap.add_argument("--teacher", required=True, help="teacher checkpoint directory (same tokenizer)")
    ap.add_argument("--env", default="generalpoints")
    ap.add_argument("--style", default=None)
    ap.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment option (repeatable), e.g. expert_choice=canonical")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--run-seed", type=int, default=0, help="which run seed's training problems")
    args = ap.parse_args(argv)
    env_args = {}
    for item in args.env_arg:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--env-arg takes KEY=VALUE, got {item!r}")
        env_args[key] = value
    style = {"style": args.style} if args.style else {}

    tok = load_tokenizer(args.student)
    student, teacher = load_model(args.student).eval(), load_model(args.teacher).eval()
    G = args.samples
    seeds = [rl_seed(args.run_seed, i) for i in range(args.problems) for _ in range(G)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=7)
    new_env = lambda: make(args.env, split="id", **style, **env_args)  # noqa: E731
    episodes = {name: play(m, tok, new_env, seeds, params, max_turns=1)
                for name, m in (("student", student), ("teacher", teacher))}
    for name, eps in episodes.items():
        print(f"{name} samples: success {100 * sum(e.success for e in eps) / len(eps):.1f}%")

    eps = episodes["student"]
    adv = [t - s for s, t in zip(token_logprobs(student, eps), token_logprobs(teacher, eps))]
    ret = [float(a.sum()) for a in adv]
    ok = [bool(e.success) for e in eps]

    def mean(xs, keep):
        xs = [x for x, k in zip(xs, keep) if k]
        return sum(xs) / len(xs) if xs else float("nan")

    print(f"student answers: {sum(ok)} right, {len(ok) - sum(ok)} wrong")
    print(f"OPD return (sum of log pT - log pS): right {mean(ret, ok):+.2f}, wrong {mean(ret, [not o for o in ok]):+.2f}")
    wins = pairs = 0
    for g in range(args.problems):
        group = range(g * G, (g + 1) * G)
        for a in (i for i in group if ok[i]):
            for b in (i for i in group if not ok[i]):
                wins += (ret[a] > ret[b]) + 0.5 * (ret[a] == ret[b])
                pairs += 1
    if pairs:
        print(f"mixed groups: the return ranks a right answer above a wrong one in {100 * wins / pairs:.1f}% of {pairs} pairs")
    flat = torch.cat(adv)
    right_pos = sum(float(a.clamp(min=0).sum()) for a, o in zip(adv, ok) if o)
    print(f"per-token advantages over {flat.numel()} tokens: positive mass {float(flat.clamp(min=0).sum()):.1f}, "
          f"negative mass {float(flat.clamp(max=0).sum()):.1f}; |advantage| > 1 on {100 * float((flat.abs() > 1).float().mean()):.2f}%; "
          f"positive mass per right answer {right_pos / max(1, sum(ok)):.2f}")


if __name__ == "__main__":
    main()
