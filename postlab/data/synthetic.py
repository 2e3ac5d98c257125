"""Small deterministic data sets postlab builds itself: `data.train: synthetic:addition/train`.

So a config can train on a fresh clone with no data file and no download. Each generator is
seeded, so every machine trains on the same records; evaluation prompts never appear in
training.

- ``addition``: ``{"prompt": "12+30=", "completion": "42"}``, operands 0..99, 8000 train / 200 eval.
- ``reverse``:  ``{"prompt": "abc=", "completion": "cba"}``, 3-5 letters from a-f, 4000 train / 200 eval.
"""

from __future__ import annotations

import random

from postlab.data.files import DataError

PREFIX = "synthetic:"


def addition(n_train: int = 8000, n_eval: int = 200, seed: int = 0, max_operand: int = 99):
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed).shuffle(pairs)
    recs = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in pairs]
    return recs[n_eval:n_eval + n_train], recs[:n_eval]


def reverse(n_train: int = 4000, n_eval: int = 200, seed: int = 0, alphabet: str = "abcdef", lengths=(3, 5)):
    rng = random.Random(seed)
    seen, recs = set(), []
    while len(recs) < n_train + n_eval:
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(*lengths)))
        if s not in seen:
            seen.add(s)
            recs.append({"prompt": s + "=", "completion": s[::-1]})
    return recs[n_eval:], recs[:n_eval]


DATASETS = {"addition": addition, "reverse": reverse}


def load_synthetic(source: str) -> list[dict]:
    """`synthetic:NAME/train` or `synthetic:NAME/eval` -> records."""
    name, _, part = source[len(PREFIX):].partition("/")
    if name not in DATASETS or part not in ("train", "eval"):
        raise DataError(f"{source}: unknown synthetic data set; valid: "
                        + ", ".join(f"{PREFIX}{n}/train, {PREFIX}{n}/eval" for n in DATASETS))
    train, ev = DATASETS[name]()
    return train if part == "train" else ev
