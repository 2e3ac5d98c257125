"""Batches of episodes and SFT / corpus records from environments.

Records use postlab's record kinds (`postlab.data.records`):

- SFT: `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}, ...], "meta": {...}}`,
  the whole expert dialogue for multi-turn envs (navigation: one assistant turn per action);
- base corpus: `{"text": ...}`.

Typical use::

    envs = make_batch("generalpoints", 64, split="id", style="compact")   # built once, cloned
    observations = [e.reset(seed) for e, seed in zip(envs, seeds)]
    write_jsonl(sft_records(make("generalpoints"), range(10_000)), "gp_sft.jsonl")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from postlab.envs.base import Env, make


def make_batch(name: str | Env, n: int, **kwargs) -> list[Env]:
    """`n` independent envs from one construction (worlds and caches are shared, not rebuilt)."""
    if n < 1:
        raise ValueError(f"make_batch: n must be >= 1, got {n}")
    first = make(name, **kwargs) if isinstance(name, str) else name
    return [first] + [first.clone() for _ in range(n - 1)]


def expert_dialogue(env: Env, seed: int, max_steps: int = 1000) -> list[dict]:
    """Reset to `seed` and play the expert to the end; the full dialogue. Raises if the expert
    does not succeed, which would mean a bug in the env (tests rely on this)."""
    obs = env.reset(seed)
    messages = [dict(m) for m in obs.messages]
    for _ in range(max_steps):
        # an env written against the plain protocol (no Env base class) demonstrates every turn
        trained = getattr(env, "expert_turn_trained", lambda: True)()
        answer = env.expert()
        result = env.step(answer)
        messages.append({"role": "assistant", "content": answer} | ({} if trained else {"train": False}))
        messages += [dict(m) for m in result.feedback]
        if result.done:
            if not result.success:
                raise RuntimeError(f"{env.name}: the expert failed on seed {seed} ({result.info})")
            return messages
    raise RuntimeError(f"{env.name}: the expert did not finish seed {seed} within {max_steps} steps")


def sft_records(env: Env, seeds: Iterable[int]) -> Iterator[dict]:
    """One messages-record per seed: the expert dialogue."""
    for seed in seeds:
        yield {"messages": expert_dialogue(env, seed),
               "meta": {"env": env.name, "split": env.split, "style": env.style, "seed": seed}}


def corpus_records(env: Env, n: int, seed: int = 0) -> list[dict]:
    """The env's base corpus as training records (text records and chat records)."""
    return env.base_corpus_records(n, seed)


def write_jsonl(records: Iterable[dict], path: str | Path) -> int:
    """Write records one JSON object per line (UTF-8, suits kept as ♠); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count


def export(name: str, split: str | None, n: int, out: str | Path, kind: str = "sft", seed: int = 0,
           **env_kwargs) -> int:
    """`postlab data export`: n SFT records (seeds seed..seed+n-1) or n base-corpus texts."""
    if kind not in ("sft", "corpus"):
        raise ValueError(f"data export: unknown kind {kind!r}; valid: sft, corpus")
    if n < 1:
        raise ValueError(f"data export: -n must be >= 1, got {n}")
    kwargs = dict(env_kwargs) | ({"split": split} if split is not None else {})
    env = make(name, **kwargs)
    records = sft_records(env, range(seed, seed + n)) if kind == "sft" else corpus_records(env, n, seed)
    return write_jsonl(records, out)
