"""Write the synthetic JSONL data sets the configs in this folder train on.

    python configs/sft/make_data.py            # -> data/addition/{train,eval}.jsonl, data/reverse/{train,eval}.jsonl
    python configs/sft/make_data.py --out DIR  # somewhere else

addition: {"prompt": "12+30=", "completion": "42"}, operands 0..99, eval prompts never seen in training.
reverse:  {"prompt": "abc=", "completion": "cba"}, 3-5 letters from a-f.
Deterministic (seeded), so every machine trains on the same records.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


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


def write(recs, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data", help="output folder (default: data/)")
    args = ap.parse_args(argv)
    for name, make in (("addition", addition), ("reverse", reverse)):
        train, ev = make()
        write(train, Path(args.out) / name / "train.jsonl")
        write(ev, Path(args.out) / name / "eval.jsonl")
        print(f"wrote {args.out}/{name}/train.jsonl ({len(train)}) and eval.jsonl ({len(ev)})")


if __name__ == "__main__":
    main()
