"""Helpers for the foundation tests: a tiny synthetic task (the CLI in a subprocess: tests/harness.py)."""

import random


def reverse_records(n: int, seed: int = 0, alphabet: str = "abcdef", lengths=(3, 5), exclude=()) -> list[dict]:
    """`{"prompt": "abc=", "completion": "cba"}`: reverse a short string; distinct prompts."""
    rng = random.Random(seed)
    seen, out = set(exclude), []
    while len(out) < n:
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(*lengths)))
        if s + "=" in seen:
            continue
        seen.add(s + "=")
        out.append({"prompt": s + "=", "completion": s[::-1]})
    return out
