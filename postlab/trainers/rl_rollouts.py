"""The rollouts of one RL step: play them, score them (rewards, dynamic sampling, advantages, metrics)
once on the whole step.

`play_step` is what the RL trainer and the budget probe (postlab.studies.probe) play: the step's
problems from the `rl` seed range, `samples_per_prompt` episodes each (with LUFFY, the last
`expert_traces` of each group are the env's expert answers). `score_step` gathers the step's
rewards from every rank once and decides everything that crosses groups on the global tensor,
then slices this rank's part.
"""

from __future__ import annotations

import dataclasses
import math
import random
import torch

from postlab import distributed
from postlab.envs.base import make
from postlab.objectives.advantages import overlong_penalty, zero_std_groups
from postlab.objectives.spectrum import hint_boundaries, sample_hint_chunks, staged_hint_chunks, uft_hint_probability
from postlab.rollout.engine import stop_token_ids
from postlab.rollout.episodes import expert_episode, run_episodes
from postlab.seeds import expert_seed, item_draw_seed, rl_seed, sampling_seed
from postlab.trainers import rl_batch as rb

# `cfg` below is the RL trainer's RLConfig (postlab.trainers.rl, which imports this module: not imported here)


def play_step(cfg, model, tok, step: int, rank: int = 0, local_prompts: int | None = None,
              backend=None) -> list:
    """The episodes of RL step `step` (0-based) on rank `rank`: its `local_prompts` problems from the `rl`
    seed range (never evaluation's), `samples_per_prompt` episodes each, sampled with the step's seed.
    The trainer plays its rollouts through this, and the budget probe (postlab.studies.probe) plays the
    frozen start model on exactly the same problems with the same sampling seeds."""
    P, G = cfg.batch.prompts_per_step, cfg.batch.samples_per_prompt
    E = cfg.experts_per_group
    local_prompts = P if local_prompts is None else local_prompts
    # This rank's prompts are a contiguous block, so gathering per-rank results in rank order
    # restores the step's prompt order.
    first = rank * local_prompts
    prompt_seeds = [rl_seed(cfg.run.seed, step * P + p) for p in range(first, first + local_prompts)]
    seeds = [s for s in prompt_seeds for _ in range(G - E)]
    env_args = dict(split=cfg.env.split, style=cfg.env.style, max_turns=cfg.env.max_turns, **cfg.env.kwargs)
    envs = [make(cfg.env.name, **env_args) for _ in seeds]
    params = cfg.sampling_params(sampling_seed(cfg.run.seed, step, rank))
    hints = None
    if cfg.spec.hints:  # UFT: one hint per prompt, shared by its group (drawn as the prompt is loaded)
        per_prompt = [uft_hint(cfg, make(cfg.env.name, **env_args), s, step, first + i)
                      for i, s in enumerate(prompt_seeds)]
        hints = [h for h in per_prompt for _ in range(G - E)]
    sampled = run_episodes(model, tok, envs, seeds, params, backend=backend, hints=hints)
    X = expert_batch_size(cfg, local_prompts)
    if not E and not X:
        return sampled
    stop_id = tok.eos_token_id if tok.eos_token_id is not None else stop_token_ids(model, tok)[0]
    expert = lambda seed: expert_episode(make(cfg.env.name, **env_args), tok, seed, stop_id)  # noqa: E731
    # LUFFY's mixed groups: the policy's G - E samples of each prompt, then E expert traces of it
    groups = [sampled[i * (G - E):(i + 1) * (G - E)] + [expert(s) for _ in range(E)]
              for i, s in enumerate(prompt_seeds)] if E else [sampled]
    # CHORD's expert batch after the groups: X expert demonstrations on problems of the SFT data's
    # seed range (an SFT set beside the RL prompts, as CHORD's), X per rank, distinct across steps and ranks
    world = max(1, P // local_prompts)
    tail = [expert(expert_seed(cfg.run.seed, (step * world + rank) * X + j)) for j in range(X)]
    return [e for g in groups for e in g] + tail


def solution_segments(text: str) -> list[str]:
    """The units a UFT hint is cut from [recon: the authors' data gives each solution as a list whose
    unit the code does not say]: lines of a worked solution, else words, else characters."""
    lines = text.splitlines(keepends=True)
    if len(lines) > 1:
        return lines
    words = text.split(" ")
    if len(words) > 1:
        return [w + " " for w in words[:-1]] + [words[-1]]
    return list(text)


def uft_hint(cfg, env, seed: int, step: int, prompt: int) -> str:
    """The hint of one prompt at `step`: the first k of at most `max_chunks` chunks of the env's expert
    solution, k ~ Binomial(chunks, p_t) (or the staged k), drawn from a generator seeded by the run, step
    and prompt, so a resumed run draws the same hints."""
    u = cfg.uft
    env.reset(seed=seed)
    segments = solution_segments(env.expert())
    sep = hint_boundaries(len(segments), u.max_chunks)
    num = len(sep) - 1
    if u.staged:
        k = staged_hint_chunks(step, u.hint_steps, num)
    else:
        p = uft_hint_probability(step, u.hint_steps, u.p_low, u.p_high)
        k = sample_hint_chunks(p, num, random.Random(item_draw_seed(cfg.run.seed, step, prompt)))
    return "".join(segments[:sep[k]])


def expert_batch_size(cfg, local_prompts: int) -> int:
    """CHORD's expert samples per rank and step: ceil(ratio x this rank's sampled sequences)."""
    ratio = cfg.chord.expert_ratio if cfg.spec.expert_batch else 0.0
    return math.ceil(ratio * local_prompts * cfg.batch.samples_per_prompt)


@dataclasses.dataclass
class ScoredStep:
    """One step's rewards, decided once on the whole step (every rank's episodes, in prompt order)."""

    metrics: dict  # rollout metrics of the whole step (rewards, success, lengths, kept_fraction)
    kept: list[int]  # this rank's episodes that train (dynamic sampling keeps groups with reward variance)
    advantages: torch.Tensor | None  # [len(kept)] sequence-level advantages; None: a critic's GAE (PPO) in _update
    any_kept: bool  # some rank trains this step, so every rank joins the update's collectives


def score_step(cfg, episodes: list, reward_fn=None, rank: int = 0) -> ScoredStep:
    """Rewards (env verifier or reward_fn, DAPO overlong shaping), gathered from every rank once; the
    step's metrics, dynamic sampling and the algorithm's advantages on the global tensor; then this
    rank's slice (its episodes are a contiguous block of the step, `rank * len(episodes)` on)."""
    spec, G = cfg.spec, cfg.batch.samples_per_prompt
    # CHORD's expert batch (after the groups) trains with the SFT term only: no reward, advantage 0
    n_tail = sum(e.off_policy for e in episodes) if spec.expert_batch else 0  # (no expert inside its groups)
    episodes, tail = episodes[:len(episodes) - n_tail], episodes[len(episodes) - n_tail:]
    raw = rb.episode_rewards(episodes, reward_fn)
    shaped = raw
    if cfg.overlong_buffer:
        lengths = [len(e.turns[-1].token_ids) for e in episodes]
        shaped = shaped + overlong_penalty(lengths, cfg.sampling.max_new_tokens, cfg.overlong_buffer)
    all_raw, all_shaped = _gather(raw), _gather(shaped)
    metrics = _global_rollout_metrics(episodes, raw, all_raw, G, cfg.experts_per_group)
    dynamic = cfg.dynamic_sampling if cfg.dynamic_sampling is not None else spec.dynamic_sampling
    keep = rb.keep_informative_groups(len(all_shaped), all_shaped, G) if dynamic else list(range(len(all_shaped)))
    metrics["kept_fraction"] = len(keep) / len(all_shaped)
    offset = rank * len(episodes)
    kept = [k - offset for k in keep if offset <= k < offset + len(episodes)]
    advantages = None
    if spec.advantages is not None:
        advantages = spec.advantages(all_shaped, G)[[offset + k for k in kept]]
    if tail:
        metrics["expert_success"] = _gather(torch.tensor([float(e.success) for e in tail])).mean().item()
        kept += [len(episodes) + j for j in range(len(tail))]
        advantages = torch.cat([advantages, torch.zeros(len(tail))])
    return ScoredStep(metrics, kept, advantages, bool(keep) or bool(tail))


def _gather(values: torch.Tensor) -> torch.Tensor:
    """The step's values from every rank, in rank (= prompt) order; `values` itself on one process."""
    if distributed.world()[1] == 1:
        return values
    return torch.tensor([v for part in distributed.all_gather_objects(values.tolist()) for v in part],
                        dtype=values.dtype)


def _global_rollout_metrics(episodes, raw: torch.Tensor, all_raw: torch.Tensor, group_size: int,
                            experts: int = 0) -> dict:
    """`rollout_metrics` of the whole step: every rank plays as many episodes, so per-episode means
    average over ranks; reward mean/std and zero-std groups come from the gathered rewards of the
    policy's own samples (LUFFY's `experts` traces are the last of each group). (Per-component reward
    std is the mean of the ranks' stds.)"""
    m = rollout_metrics(episodes, raw, group_size)
    if distributed.world()[1] == 1:
        return m
    rows = distributed.all_gather_objects(m)
    keys = sorted({k for r in rows for k in r})  # e.g. success_turn_3 only where some episode got that far
    m = {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in keys}
    all_raw = all_raw.view(-1, group_size)[:, :group_size - experts].flatten()
    group_size -= experts
    m.update(reward_mean=all_raw.mean().item(), reward_std=all_raw.std().item() if len(all_raw) > 1 else 0.0,
             zero_std_groups=zero_std_groups(all_raw, group_size).float().mean().item())
    return m


def rollout_metrics(episodes, rewards: torch.Tensor, group_size: int) -> dict:
    """Reward mean/std (total and per component), zero-std groups, lengths, truncation, per-turn success,
    of the policy's own episodes; LUFFY's expert traces (the last of each group) are counted apart
    (`expert_success`), so training success stays what the policy itself achieved."""
    on = [i for i, e in enumerate(episodes) if not e.off_policy]
    expert_metrics = {}
    if len(on) < len(episodes):
        experts = [e for e in episodes if e.off_policy]
        expert_metrics = {"expert_success": sum(e.success for e in experts) / len(experts)}
        group_size -= len(experts) * group_size // len(episodes)
        episodes, rewards = [episodes[i] for i in on], rewards[on]
    m = {"reward_mean": rewards.mean().item(), "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
         "zero_std_groups": zero_std_groups(rewards, group_size).float().mean().item(),
         "success": sum(e.success for e in episodes) / len(episodes),
         "completion_len": sum(len(t.token_ids) for e in episodes for t in e.turns) / len(episodes),
         "truncation": sum(e.truncated for e in episodes) / len(episodes),
         "turns": sum(len(e.turns) for e in episodes) / len(episodes)}
    comps: dict[str, list[float]] = {}
    for e in episodes:
        for name, v in e.turns[-1].info.get("components", {}).items():
            comps.setdefault(name, []).append(float(v))
    for name, vs in comps.items():
        t = torch.tensor(vs)
        m[f"reward/{name}_mean"], m[f"reward/{name}_std"] = t.mean().item(), (t.std().item() if len(t) > 1 else 0.0)
    horizon = max(len(e.turns) for e in episodes)
    for k in range(horizon):
        m[f"success_turn_{k + 1}"] = sum(len(e.turns) > k and e.turns[k].success for e in episodes) / len(episodes)
    return m | expert_metrics


__all__ = ["ScoredStep", "play_step", "rollout_metrics", "score_step"]
