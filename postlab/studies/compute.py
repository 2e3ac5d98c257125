"""Compute accounting of study stages: parameters, tokens, FLOPs. One owner, no study imports.

FLOPs ~= 6 N D_train + 2 N D_gen (N parameters; D_train tokens through a training forward and
backward pass; D_gen tokens generated). Trainers log integer token counts per step and their
running totals (`tokens_trained_total`, `tokens_generated_total`, postlab.trainers.loop), so a
point along training reads its cumulative compute from one metrics row.
"""

from __future__ import annotations

import json
from pathlib import Path


def flops(params: int, tokens_trained: int, tokens_generated: int) -> float:
    return 6.0 * params * tokens_trained + 2.0 * params * tokens_generated


def count_params(model_dir: Path) -> int:
    """Parameters in a safetensors checkpoint, from the headers (no weights loaded)."""
    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                size = 1
                for d in v["shape"]:
                    size *= d
                total += size
    return total


def cumulative_tokens(run_dir: Path) -> dict[int, tuple[int, int]]:
    """step -> (tokens trained, tokens generated) up to and including that step, from the run's
    train rows (the loop logs integer running totals on every logged step)."""
    p = Path(run_dir) / "metrics.jsonl"
    out: dict[int, tuple[int, int]] = {}
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind", "train") == "train" and "tokens_trained_total" in row:
            out[int(row["step"])] = (int(row["tokens_trained_total"]), int(row.get("tokens_generated_total", 0)))
    return out
