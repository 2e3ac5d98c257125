"""ID/OOD evaluation of a model on an environment split.

`evaluate(model, tokenizer, env, split, ...)` plays `n_episodes` problems (episode seeds
`seed_base + seed + i`, the same for every model, so every checkpoint sees the same problems)
and returns a JSON-ready dict:

- ``success_rate`` with a percentile-bootstrap 95% CI over problems (sampled decoding: the
  mean over samples, i.e. pass@1);
- ``pass_at_k`` (sampled decoding, n_samples >= k per problem; unbiased estimator) with CI;
- ``success_by_turn``: fraction of episodes solved within t model calls, t = 1..max_turns
  (multi-turn revision with verifier feedback, `max_turns` = verification iterations; None
  keeps the environment's default, e.g. navigation's own step cap and verify_iter);
- ``failure_reasons``: per-reason counts from the verifier's info, over failed episodes
  (final attempt) and over every failed attempt;
- ``generated_tokens``, ``mean_reward``, ``wall_time_s`` and a few sample dialogues.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Literal

from postlab.eval.episodes import Episode, run_episodes
from postlab.eval.metrics import mean_ci, pass_at_k_per_problem

SEED_BASE = 1_000_000  # evaluation problems never overlap the training seeds studies use (< 1e6)


def evaluate(model, tokenizer, env: str, split: str = "id", n_episodes: int = 64,
             decoding: Literal["greedy", "sampled"] = "greedy", temperature: float = 1.0, k: int = 1,
             n_samples: int = 0, max_turns: int | None = None, style: str = "compact", seed: int = 0,
             max_new_tokens: int = 64, max_steps: int = 256, env_args: dict | None = None, batch_size: int = 256,
             n_boot: int = 2000, num_examples: int = 3, seed_base: int = SEED_BASE) -> dict:
    from postlab.envs import make

    if decoding not in ("greedy", "sampled"):
        raise ValueError(f"decoding: {decoding!r}; valid: 'greedy', 'sampled'")
    if n_episodes <= 0:
        raise ValueError(f"n_episodes must be > 0, got {n_episodes}")
    samples = 1 if decoding == "greedy" else max(n_samples or k, k)
    if decoding == "greedy" and k > 1:
        raise ValueError("pass@k with k > 1 needs decoding='sampled' (greedy gives one answer per problem)")
    env_args = dict(env_args or {})
    start = time.time()
    episodes = []
    for i in range(n_episodes):
        for _ in range(samples):
            kw = dict(env_args) if max_turns is None else {**env_args, "max_turns": max_turns}
            e = make(env, split=split, style=style, **kw)
            episodes.append(Episode(env=e, seed=seed_base + seed + i, problem=i))
    run_episodes(model, tokenizer, episodes, temperature=0.0 if decoding == "greedy" else temperature,
                 max_new_tokens=max_new_tokens, max_steps=max_steps, batch_size=batch_size, seed=seed)
    by_problem: list[list[Episode]] = [[] for _ in range(n_episodes)]
    for ep in episodes:
        by_problem[ep.problem].append(ep)
    per_problem = [sum(e.success for e in eps) / len(eps) for eps in by_problem]
    result = {"env": env, "split": split, "style": style, "decoding": decoding,
              "temperature": 0.0 if decoding == "greedy" else temperature, "n_episodes": n_episodes,
              "n_samples": samples, "max_turns": max_turns, "seed": seed}
    sr = mean_ci(per_problem, n_boot=n_boot, seed=seed)
    result["success_rate"], result["ci"] = sr["mean"], [sr["ci_low"], sr["ci_high"]]
    if decoding == "sampled":
        pk = mean_ci(pass_at_k_per_problem([[e.success for e in eps] for eps in by_problem], k), n_boot=n_boot, seed=seed)
        result["k"], result["pass_at_k"], result["pass_at_k_ci"] = k, pk["mean"], [pk["ci_low"], pk["ci_high"]]
    horizon = max([max_turns or 1] + [e.turns for e in episodes])
    result["success_by_turn"] = [sum(1 for e in episodes if e.success and e.success_turn <= t) / len(episodes)
                                 for t in range(1, horizon + 1)]
    final, attempts = Counter(), Counter()
    for e in episodes:
        attempts.update(e.attempt_reasons)
        if not e.success:
            final.update(e.final_reasons or ["unspecified"])
    result["failure_reasons"] = dict(final.most_common())
    result["attempt_failure_reasons"] = dict(attempts.most_common())
    result["mean_reward"] = sum(e.reward for e in episodes) / len(episodes)
    result["mean_turns"] = sum(e.turns for e in episodes) / len(episodes)
    result["generated_tokens"] = sum(e.generated_tokens for e in episodes)
    result["wall_time_s"] = round(time.time() - start, 3)
    result["examples"] = [{"seed": e.seed, "success": e.success, "messages": e.messages} for e in episodes[:num_examples]]
    return result


def evaluate_checkpoint(path: str, env: str, splits: list[str], device: str = "auto", **kwargs) -> list[dict]:
    """Load a Hugging Face checkpoint and evaluate it on each split."""
    from postlab.models.io import load_model, load_tokenizer, pick_device

    model = load_model(str(path), device=pick_device(device))
    tokenizer = load_tokenizer(str(path))
    model.eval()
    return [{"checkpoint": str(path), **evaluate(model, tokenizer, env, split, **kwargs)} for split in splits]


def results_table(results: list[dict], title: str = "evaluation"):
    """A rich Table of evaluation results (one row per split)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("env", "split", "decoding", "episodes", "success", "95% CI", "pass@k", "by turn", "top failure"):
        table.add_column(col, justify="right" if col not in ("env", "split", "decoding", "top failure") else "left")
    for r in results:
        pk = f"{r['pass_at_k']:.3f} (k={r['k']})" if "pass_at_k" in r else "-"
        by_turn = " ".join(f"{x:.2f}" for x in r["success_by_turn"][:6])
        top = next(iter(r["failure_reasons"].items()), None)
        table.add_row(r["env"], r["split"], r["decoding"], f"{r['n_episodes']}x{r['n_samples']}",
                      f"{r['success_rate']:.3f}", f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", pk, by_turn,
                      f"{top[0]} ({top[1]})" if top else "-")
    return table
