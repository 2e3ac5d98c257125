"""Batched episode runner for evaluation: every active episode generates together, per turn.

    episodes = [Episode(env, seed) ...]         # one env instance per (problem, sample)
    run_episodes(model, tokenizer, episodes, ...)

Each turn: render every active episode's dialogue with the tokenizer's chat template, one
`generate` call over all of them (chunked by `batch_size`), then `env.step(text)` for each.
An episode ends when its env says done (success, or verification attempts exhausted) or after
`max_steps` model calls (a safety cap; counted as a failure with reason "step cap").
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from postlab.rollout.engine import SamplingParams, generate


@dataclasses.dataclass
class Episode:
    env: object
    seed: int
    problem: int = 0  # index of the problem (several samples of one problem share it)
    messages: list = dataclasses.field(default_factory=list)
    done: bool = False
    success: bool = False
    turns: int = 0  # model calls made
    success_turn: int | None = None
    reward: float = 0.0
    generated_tokens: int = 0
    attempt_reasons: Counter = dataclasses.field(default_factory=Counter)
    final_reasons: list = dataclasses.field(default_factory=list)


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
    """A short category for a reason: reasons such as 'you used invalid numbers: [11]' -> 'you used invalid numbers'."""
    if isinstance(v, dict):
        v = v.get("kind") or v.get("reason") or v.get("type") or str(v)
    s = str(v).strip()
    for sep in (":", "(", "["):
        if sep in s:
            s = s.split(sep, 1)[0].strip()
    return s[:80] or "unspecified"


def _prompt_ids(tokenizer, messages: list[dict], limit: int | None) -> list[int]:
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if limit is not None and len(ids) > limit:
        ids = ids[-limit:]
    return ids


def run_episodes(model, tokenizer, episodes: list[Episode], temperature: float = 0.0, max_new_tokens: int = 64,
                 max_steps: int = 64, batch_size: int = 256, seed: int = 0) -> list[Episode]:
    """Play all episodes to the end; returns them (mutated in place)."""
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    limit = max_pos - max_new_tokens if max_pos else None
    for ep in episodes:
        ep.messages = list(ep.env.reset(ep.seed).messages)
    turn = 0
    while True:
        active = [ep for ep in episodes if not ep.done]
        if not active:
            break
        turn += 1
        for start in range(0, len(active), batch_size):
            chunk = active[start:start + batch_size]
            prompts = [_prompt_ids(tokenizer, ep.messages, limit) for ep in chunk]
            params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=1,
                                    seed=seed * 1_000_003 + turn * 7919 + start)
            outs = generate(model, tokenizer, prompts, params)
            for ep, out in zip(chunk, outs):
                text = out.text.strip()
                ep.generated_tokens += len(out.token_ids)
                ep.turns += 1
                ep.messages.append({"role": "assistant", "content": text})
                res = ep.env.step(text)
                ep.reward += float(res.reward)
                if res.success:
                    ep.success, ep.success_turn = True, ep.turns
                elif float(res.reward) < 0 or res.done:
                    reasons = failure_reasons(res.info or {})
                    ep.attempt_reasons.update(reasons)
                    if res.done:
                        ep.final_reasons = reasons
                if res.done or res.success:
                    ep.done = True
                elif ep.turns >= max_steps:
                    ep.done, ep.final_reasons = True, ["step cap"]
                    ep.attempt_reasons.update(["step cap"])
                else:
                    ep.messages.extend(res.feedback)
    return episodes
