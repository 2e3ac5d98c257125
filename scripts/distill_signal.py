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

`teacher_return` is the same signal as a GRPO reward (docs/results.md, the reason line's distillation):

    POSTLAB_TEACHER=TEACHER/final PYTHONPATH=scripts postlab train rl RUN/config.yaml \\
        reward_fn=distill_signal:teacher_return
"""

from __future__ import annotations

import argparse
import os

import torch

from postlab.envs.base import make
from postlab.objectives.advantages import grpo_advantages
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


_REWARD_TEACHER = {}


def teacher_return(episode) -> float:
    """OPD's sequence return as an RL reward (`reward_fn=distill_signal:teacher_return`, with scripts/ on
    PYTHONPATH and the teacher's directory in $POSTLAB_TEACHER): the sum over the sampled tokens of
    log pi_T - log pi_S, the student's log-probs being the sampler's. Its expectation is minus the
    sequence-level reverse KL, so GRPO on it optimizes what `opd` does, with outcome-level credit."""
    path = os.environ["POSTLAB_TEACHER"]
    if path not in _REWARD_TEACHER:
        _REWARD_TEACHER[path] = load_model(path).eval()
    (teacher,) = token_logprobs(_REWARD_TEACHER[path], [episode])
    return float((teacher - torch.tensor(episode.target_logprobs())).sum())


def distill_signal(student, teacher, tokenizer, make_env, problems: int = 64, samples: int = 8,
                   max_new_tokens: int = 96, run_seed: int = 0) -> dict:
    """Sample `samples` answers per training problem from student and teacher; OPD's per-token advantages
    (log pi_T - log pi_S at every token the student sampled) and what they say about right and wrong answers."""
    seeds = [rl_seed(run_seed, i) for i in range(problems) for _ in range(samples)]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, seed=7)
    episodes = {name: play(m, tokenizer, make_env, seeds, params, max_turns=1)
                for name, m in (("student", student), ("teacher", teacher))}
    eps = episodes["student"]
    adv = [t - s for s, t in zip(token_logprobs(student, eps), token_logprobs(teacher, eps))]
    ret = [float(a.sum()) for a in adv]
    ok = [bool(e.success) for e in eps]

    def mean(xs, keep):
        xs = [x for x, k in zip(xs, keep) if k]
        return sum(xs) / len(xs) if xs else float("nan")

    # GRPO's group-normalized advantage of each answer in the mixed groups, with the return as the reward and
    # with the env's success as the reward: how far apart each puts right and wrong answers
    grpo = {"return": grpo_advantages(torch.tensor(ret), samples).tolist(),
            "success": grpo_advantages(torch.tensor(ok, dtype=torch.float32), samples).tolist()}
    sep = {name: ([], []) for name in grpo}
    wins = pairs = mixed = 0
    for g in range(problems):
        group = range(g * samples, (g + 1) * samples)
        if not 0 < sum(ok[i] for i in group) < samples:
            continue
        mixed += 1
        for a in (i for i in group if ok[i]):
            for b in (i for i in group if not ok[i]):
                wins += (ret[a] > ret[b]) + 0.5 * (ret[a] == ret[b])
                pairs += 1
        for name, adv_of in grpo.items():
            for i in group:
                sep[name][0 if ok[i] else 1].append(adv_of[i])
    flat = torch.cat(adv)
    return {
        "grpo_advantage": {name: (sum(r) / max(1, len(r)), sum(w) / max(1, len(w))) for name, (r, w) in sep.items()},
        "success": {name: sum(e.success for e in e_) / len(e_) for name, e_ in episodes.items()},
        "right": sum(ok), "wrong": len(ok) - sum(ok),
        "return_right": mean(ret, ok), "return_wrong": mean(ret, [not o for o in ok]),
        "mixed_groups": mixed / problems, "ranked_pairs": pairs,
        "right_ranked_first": wins / pairs if pairs else float("nan"),
        "tokens": flat.numel(), "positive_mass": float(flat.clamp(min=0).sum()),
        "negative_mass": float(flat.clamp(max=0).sum()), "large_share": float((flat.abs() > 1).float().mean()),
        "positive_per_right": sum(float(a.clamp(min=0).sum()) for a, o in zip(adv, ok) if o) / max(1, sum(ok)),
        "returns": ret, "episodes": eps,
    }


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
    r = distill_signal(student, teacher, tok, lambda: make(args.env, split="id", **style, **env_args),
                       args.problems, args.samples, args.max_new_tokens, args.run_seed)
    for name, rate in r["success"].items():
        print(f"{name} samples: success {100 * rate:.1f}%")
    print(f"student answers: {r['right']} right, {r['wrong']} wrong")
    print(f"OPD return (sum of log pT - log pS): right {r['return_right']:+.2f}, wrong {r['return_wrong']:+.2f}")
    print(f"groups with right and wrong answers: {100 * r['mixed_groups']:.1f}%")
    if r["ranked_pairs"]:
        print(f"in them, the return ranks a right answer above a wrong one in "
              f"{100 * r['right_ranked_first']:.1f}% of {r['ranked_pairs']} pairs")
    for name, (right, wrong) in r["grpo_advantage"].items():
        print(f"GRPO advantage in mixed groups with the {name} as reward: "
              f"right answers {right:+.2f}, wrong {wrong:+.2f}")
    print(f"per-token advantages over {r['tokens']} tokens: positive mass {r['positive_mass']:.1f}, negative mass "
          f"{r['negative_mass']:.1f}; |advantage| > 1 on {100 * r['large_share']:.2f}%; "
          f"positive mass per right answer {r['positive_per_right']:.2f}")


if __name__ == "__main__":
    main()
