"""ID/OOD evaluation of a model on an environment split.

`evaluate(model, tokenizer, env, split, ...)` plays `n_episodes` problems (env seeds
`postlab.seeds.eval_seed(seed + i)`: the evaluation range, disjoint from every training and
corpus seed, and the same for every model, so every checkpoint sees the same problems)
and returns a JSON-ready dict. `env_seeds` plays the given problems instead, in that order
(e.g. the training problems a run saw, to compare them with held-out ones), played the same way:

- ``success_rate`` with a percentile-bootstrap 95% CI over problems (sampled decoding: the
  mean over samples, i.e. pass@1);
- ``pass_at_k`` (sampled decoding, n_samples >= k per problem; unbiased estimator) with CI;
- ``success_by_turn``: fraction of episodes solved within t model calls, t = 1..max_turns
  (multi-turn revision with verifier feedback, `max_turns` = verification iterations; None
  keeps the environment's default, e.g. navigation's own step cap and verify_iter);
- ``failure_reasons``: per-reason counts from the verifier's info, over failed episodes
  (final attempt) and over every failed attempt;
- ``generated_tokens``, ``mean_reward``, ``wall_time_s`` and a few sample dialogues;
- multi-turn envs (``max_turns`` > 1, or the ``unary-feedback`` wrapper): ``multiturn``, the
  fields of `postlab.eval.multiturn.multiturn_report` (per-turn accuracy, cumulative accuracy by
  attempt k, ``multi@k`` for every k up to the env's attempt budget, correction rate, each a
  mean with a bootstrap CI), and ``multiturn_per_problem`` (``multi@k`` and ``correction_rate``
  per problem, None where a problem has no value), so reports can pair two models on them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from postlab.eval.metrics import mean_ci, pass_at_k_per_problem
from postlab.rollout.engine import SamplingParams
from postlab.rollout.episodes import Episode, context_limit, play
from postlab.seeds import eval_seed


def failure_reasons(info: dict) -> list[str]:
    """Reasons a verifier gives for a failed step, from the StepResult info (several conventions)."""
    for key in ("reasons", "failure_reasons", "errors"):
        val = info.get(key)
        if isinstance(val, (list, tuple)) and val:
            return [_reason_key(v) for v in val]
        if isinstance(val, str) and val:
            return [_reason_key(val)]
    for key in ("reason", "verdict", "error", "status"):
        val = info.get(key)
        if isinstance(val, str) and val and val not in ("correct", "ok", "success"):
            return [_reason_key(val)]
    return ["unspecified"]


def _reason_key(v) -> str:
    """A short category for a reason: 'you used invalid numbers: [11]' -> 'you used invalid numbers'."""
    if isinstance(v, dict):
        v = v.get("kind") or v.get("reason") or v.get("type") or str(v)
    s = str(v).strip()
    for sep in (":", "(", "["):
        if sep in s:
            s = s.split(sep, 1)[0].strip()
    return s[:80] or "unspecified"


def episode_reasons(ep: Episode) -> tuple[list[str], list[str]]:
    """(reasons of every failed attempt, reasons of the final failure) of one episode.

    A failed attempt is a turn with negative reward, or the turn that ended the episode without
    success; an episode stopped by the step cap rather than by the env fails with "step cap"."""
    attempts: list[str] = []
    final: list[str] = []
    for t in ep.turns:
        if not t.success and (t.reward < 0 or t.env_done):
            reasons = failure_reasons(t.info)
            attempts += reasons
            if t.env_done:
                final = reasons
    if not ep.success and ep.turns and not ep.turns[-1].env_done:
        final = ["step cap"]
        attempts.append("step cap")
    return attempts, final


def success_turn(ep: Episode) -> int | None:
    """1-based model call at which the episode first succeeded."""
    return next((k + 1 for k, t in enumerate(ep.turns) if t.success), None)


def first_attempt_diagnostics(by_problem: list[list[Episode]], keys) -> dict:
    """``diagnostics``: key -> category -> fraction of first attempts, over the episodes whose
    first turn has that key (not None); ``diagnostics_per_problem``: key -> per problem, the
    categories of its samples' first attempts (None where a sample has none), so reports can
    pair two models problem by problem for any category."""
    fractions: dict[str, dict[str, float]] = {}
    per_problem: dict[str, list[list]] = {}
    for key in keys:
        cats = [[ep.turns[0].info.get(key) if ep.turns else None for ep in eps] for eps in by_problem]
        seen = [c for cs in cats for c in cs if c is not None]
        if seen:
            fractions[key] = {c: seen.count(c) / len(seen) for c in sorted(set(seen))}
            per_problem[key] = cats
    return {"diagnostics": fractions, "diagnostics_per_problem": per_problem} if keys else {}


def truncated_shares(episodes: list[Episode]) -> tuple[float, float]:
    """(share of episodes with any answer cut at max_new_tokens, share whose first answer was cut). Apart,
    as a multi-turn model may run on in the retries after a wrong first answer (a cap that costs time,
    not success) while its first answers, what most findings read, all end."""
    n = max(len(episodes), 1)
    return (sum(e.truncated for e in episodes) / n,
            sum(bool(e.turns) and e.turns[0].finish_reason == "length" for e in episodes) / n)


def evaluate(model, tokenizer, env: str, split: str = "id", n_episodes: int = 64,
             decoding: Literal["greedy", "sampled"] = "greedy", temperature: float = 1.0, k: int = 1,
             n_samples: int = 0, max_turns: int | None = None, style: str = "compact", seed: int = 0,
             max_new_tokens: int = 64, max_steps: int = 256, env_args: dict | None = None, batch_size: int = 256,
             n_boot: int = 2000, num_examples: int = 3, backend=None, env_seeds: Sequence[int] | None = None) -> dict:
    """Play `n_episodes` evaluation problems of `env`/`split` (see the module doc); a JSON-ready dict.

    `env_seeds`: play these problems (env seeds, in order; `n_episodes` is then their number) instead of
    the evaluation range. `backend` (e.g. a `VLLMBackend` serving the same weights) samples instead of
    the local engine."""
    from postlab.envs.base import env_class, make

    if decoding not in ("greedy", "sampled"):
        raise ValueError(f"decoding: {decoding!r}; valid: 'greedy', 'sampled'")
    if env_seeds is None and n_episodes <= 0:
        raise ValueError(f"n_episodes must be > 0, got {n_episodes}")
    if env_seeds is not None and not len(env_seeds):
        raise ValueError("env_seeds is empty; give at least one env seed, or None for the evaluation range")
    problems = [eval_seed(seed + i) for i in range(n_episodes)] if env_seeds is None else [int(s) for s in env_seeds]
    n_episodes = len(problems)
    samples = 1 if decoding == "greedy" else max(n_samples or k, k)
    if decoding == "greedy" and k > 1:
        raise ValueError("pass@k with k > 1 needs decoding='sampled' (greedy gives one answer per problem)")
    kw = dict(env_args or {}) if max_turns is None else {**(env_args or {}), "max_turns": max_turns}
    start = time.time()
    # samples of one problem are consecutive episodes with the same env seed
    seeds = [p for p in problems for _ in range(samples)]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0 if decoding == "greedy" else temperature,
                            seed=seed)
    episodes = play(model, tokenizer, lambda: make(env, split=split, style=style, **kw), seeds, params,
                    max_turns=max_steps, batch_size=batch_size, max_context=context_limit(model, max_new_tokens),
                    backend=backend)
    by_problem = [episodes[i * samples:(i + 1) * samples] for i in range(n_episodes)]
    per_problem = [sum(e.success for e in eps) / len(eps) for eps in by_problem]
    result = {"env": env, "split": split, "style": style, "decoding": decoding,
              "temperature": params.temperature, "n_episodes": n_episodes,
              "n_samples": samples, "max_turns": max_turns, "seed": seed}
    if env_seeds is not None:  # not the evaluation range: say which problems these are
        result["env_seeds"] = problems
    sr = mean_ci(per_problem, n_boot=n_boot, seed=seed)
    result["success_rate"], result["ci"] = sr["mean"], [sr["ci_low"], sr["ci_high"]]
    # per problem, in seed order (the same problems for every model): lets a report bootstrap
    # paired differences between two models instead of comparing two marginal CIs
    result["per_problem"] = per_problem
    if decoding == "sampled":
        pk = mean_ci(pass_at_k_per_problem([[e.success for e in eps] for eps in by_problem], k), n_boot=n_boot, seed=seed)
        result["k"], result["pass_at_k"], result["pass_at_k_ci"] = k, pk["mean"], [pk["ci_low"], pk["ci_high"]]
    horizon = max([max_turns or 1] + [len(e.turns) for e in episodes])
    firsts = [success_turn(e) for e in episodes]
    result["success_by_turn"] = [sum(1 for f in firsts if f is not None and f <= t) / len(episodes)
                                 for t in range(1, horizon + 1)]
    final, attempts = Counter(), Counter()
    for e in episodes:
        tried, last = episode_reasons(e)
        attempts.update(tried)
        if not e.success:
            final.update(last or ["unspecified"])
    result["failure_reasons"] = dict(final.most_common())
    result["attempt_failure_reasons"] = dict(attempts.most_common())
    result.update(first_attempt_diagnostics(by_problem, env_class(env).diagnostics))
    # answers cut at max_new_tokens fail for a reason no verifier names: count them separately
    result["truncated_fraction"], result["truncated_first_turn_fraction"] = truncated_shares(episodes)
    result["mean_reward"] = sum(e.reward for e in episodes) / len(episodes)
    result["mean_turns"] = sum(len(e.turns) for e in episodes) / len(episodes)
    result["generated_tokens"] = sum(len(t.token_ids) for e in episodes for t in e.turns)
    result["wall_time_s"] = round(time.time() - start, 3)
    result["examples"] = [{"seed": e.seed, "success": e.success, "messages": e.messages}
                          for e in episodes[:num_examples]]
    if env == "unary-feedback" or (max_turns or 1) > 1:
        probe = make(env, split=split, style=style, **kw)
        k_max = getattr(probe, "max_attempts", None) or max_turns or horizon
        result.update(multiturn_fields(by_problem, k_max, n_boot=n_boot, seed=seed))
    return result


def multiturn_fields(by_problem: list[list[Episode]], k_max: int, n_boot: int = 2000, seed: int = 0) -> dict:
    """``multiturn``: `multiturn_report` over every episode plus ``multi@k`` for k = 1..k_max (the
    cumulative accuracy at k); ``multiturn_per_problem``: per problem (the mean over its samples),
    ``multi@k`` and ``correction_rate`` (among its samples wrong at attempt 1; None if none was)."""
    from postlab.eval.multiturn import attempt_outcomes, multiturn_report, solved_at, verdicts_of

    report = multiturn_report([e for eps in by_problem for e in eps], k_max=k_max, n_boot=n_boot, seed=seed)
    for k in range(1, k_max + 1):
        report[f"multi@{k}"] = report["cumulative_accuracy"][k - 1]
    per_problem: dict[str, list] = {f"multi@{k}": [] for k in range(1, k_max + 1)}
    per_problem["correction_rate"] = []
    for eps in by_problem:
        first = [solved_at(attempt_outcomes(verdicts_of(e))) for e in eps]
        for k in range(1, k_max + 1):
            per_problem[f"multi@{k}"].append(sum(f is not None and f <= k for f in first) / len(first))
        wrong_first = [f for f in first if f != 1]
        per_problem["correction_rate"].append(
            sum(f is not None and f <= k_max for f in wrong_first) / len(wrong_first) if wrong_first else None)
    return {"multiturn": report, "multiturn_per_problem": per_problem}


def evaluate_checkpoint(path: str, env: str, splits: list[str], device: str = "auto", backend: str = "local",
                        **kwargs) -> list[dict]:
    """Load a Hugging Face checkpoint and evaluate it on each split (`backend="vllm"`: vLLM samples)."""
    from postlab.models.io import load_model, load_tokenizer, pick_device
    from postlab.rollout.backends import RolloutConfig, config_only_model, make_backend

    engine = make_backend(RolloutConfig(backend=backend), str(path), dtype="bfloat16")
    tokenizer = load_tokenizer(str(path))
    if engine is not None:  # the engine holds the weights; episodes read only the model's configs
        model = config_only_model(str(path))
    else:
        model = load_model(str(path), device=pick_device(device)).eval()
    return [{"checkpoint": str(path), **evaluate(model, tokenizer, env, split, backend=engine, **kwargs)}
            for split in splits]


def results_table(results: list[dict], title: str = "evaluation"):
    """A rich Table of evaluation results (one row per split)."""
    from rich.table import Table

    table = Table(title=title)
    multiturn = any("multiturn" in r for r in results)  # multi-turn columns only when some result has them
    cols = ["env", "split", "decoding", "episodes", "success", "95% CI", "pass@k", "by turn"]
    cols += ["multi@1", "multi@k", "correction"] if multiturn else []
    for col in cols + ["top failure"]:
        table.add_column(col, justify="right" if col not in ("env", "split", "decoding", "top failure") else "left")
    for r in results:
        pk = f"{r['pass_at_k']:.3f} (k={r['k']})" if "pass_at_k" in r else "-"
        by_turn = " ".join(f"{x:.2f}" for x in r["success_by_turn"][:6])
        top = next(iter(r["failure_reasons"].items()), None)
        extra = []
        if multiturn:
            mt = r.get("multiturn")
            extra = ["-", "-", "-"]
            if mt:
                k = mt["k_max"]
                extra = [_with_ci(mt["multi@1"]), f"{_with_ci(mt[f'multi@{k}'])} (k={k})",
                         _with_ci(mt["correction_rate"])]
        table.add_row(r["env"], r["split"], r["decoding"], f"{r['n_episodes']}x{r['n_samples']}",
                      f"{r['success_rate']:.3f}", f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", pk, by_turn, *extra,
                      f"{top[0]} ({top[1]})" if top else "-")
    return table


def _with_ci(m: dict) -> str:
    """A `mean_ci` dict as 'mean [low, high]' ('-' when it has no values, e.g. no first-attempt failure)."""
    if not m.get("n"):
        return "-"
    return f"{m['mean']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"
