"""Write the synthetic JSONL data sets the configs in this folder train on.

    python configs/sft/make_data.py            # -> data/addition/{train,eval}.jsonl, data/reverse/{train,eval}.jsonl
    python configs/sft/make_data.py --out DIR  # somewhere else

addition: {"prompt": "12+30=", "completion": "42"}, operands 0..99, eval prompts never seen in training.
reverse:  {"prompt": "abc=", "completion": "cba"}, 3-5 letters from a-f.
Deterministic (seeded), so every machine trains on the same records. The configs here read the
same records without any file (`data.train: synthetic:addition/train`, postlab.data.synthetic);
this script is for looking at them or training from JSONL.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from postlab.data.synthetic import addition, reverse


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
