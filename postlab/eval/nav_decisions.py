"""Which navigation decisions a model gets right, with the expert's history (teacher forcing).

Route success needs every decision right, so a success rate of 0 does not say what fails. This
probe replays each route's expert dialogue and, at every position, asks the model for its
greedy answer to the same history, then scores it with the environment's verifier. Decisions
are grouped by the gold action: the opening turn (read instruction 1), later turns (find the
current instruction), forward and stop (match the observation against the instruction's
landmark). Restated answers are scored on their action, as in the environment.

    python -m postlab.eval.nav_decisions CKPT [CKPT ...] [--split id] [--routes 24] [--restate]
"""

from __future__ import annotations

import argparse

KINDS = ("opening turn", "later turn", "forward", "stop")


def decision_kind(action: tuple, position: int) -> str:
    if action[0] == "turn":
        return "opening turn" if position == 0 else "later turn"
    return action[0]


def probe(model, tokenizer, split: str = "id", routes: int = 24, max_new_tokens: int = 32,
          env_args: dict | None = None) -> dict[str, tuple[int, int]]:
    """kind -> (right, total) over the decisions of `routes` evaluation routes (the evaluation's
    own seeds). The history is always the expert's, so every decision's prompt is known up front
    and all are generated greedily in one batch."""
    from postlab.envs import make
    from postlab.seeds import eval_seed
    from postlab.rollout.engine import SamplingParams, generate
    from postlab.rollout.episodes import render_chat
    from postlab.verifiers.navigation import score_action

    env = make("navigation", split=split, **(env_args or {}))
    prompts, decisions = [], []  # decisions: (kind, gold action, at an intersection)
    for i in range(routes):
        env.reset(eval_seed(i))
        while not env.done:
            here = env.rail[env.index]
            prompts.append(tokenizer(render_chat(tokenizer, env.messages, True), add_special_tokens=False)["input_ids"])
            decisions.append((decision_kind(here.action, env.index), here.action, env.city.is_intersection(here.pos)))
            env.step(env.expert())
    answers = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    counts = {k: [0, 0] for k in KINDS}
    for (kind, gold, at_intersection), answer in zip(decisions, answers):
        counts[kind][0] += score_action(answer.text.strip(), gold, at_intersection).correct
        counts[kind][1] += 1
    return {k: (right, total) for k, (right, total) in counts.items()}


def main(argv: list[str] | None = None) -> int:
    from postlab.models.io import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--split", default="id")
    ap.add_argument("--routes", type=int, default=24, help="evaluation routes (the same for every model)")
    ap.add_argument("--restate", action="store_true", help="expert history with restated answers (as trained)")
    args = ap.parse_args(argv)
    for ck in args.checkpoints:
        counts = probe(load_model(ck).eval(), load_tokenizer(ck), args.split, args.routes,
                       env_args={"restate": args.restate})
        print(f"{ck} ({args.split}, {args.routes} routes): " +
              ", ".join(f"{k} {right}/{total}" for k, (right, total) in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
