"""Cheap stand-in stage kinds for runner tests (kind: fake_stages:NAME)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _log(ctx, what: str) -> None:
    log = os.environ.get("FAKE_STAGE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps({"seed": ctx.seed, "stage": ctx.stage.name, "what": what}) + "\n")


def train(ctx) -> dict:
    """A 'trainer' that checkpoints every step into run/ckpt.json and resumes from it."""
    data = ctx.spec.get("data") or {}
    steps, sleep = int(data.get("steps", 3)), float(data.get("sleep", 0.0))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    ck = ctx.run_dir / "ckpt.json"
    step = json.loads(ck.read_text())["step"] if ck.exists() else 0
    _log(ctx, f"start@{step}")
    parent = ctx.inputs[0]["value"] if ctx.inputs else 0.0
    while step < steps:
        time.sleep(sleep)
        step += 1
        tmp = ck.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        tmp.replace(ck)
    value = parent + float(data.get("gain", 0.1))
    (ctx.run_dir / "final").mkdir(exist_ok=True)
    (ctx.run_dir / "final" / "model.safetensors").write_text(f"weights {value}")  # what an archive leaves out
    step_path = {s: "run/final" for s in range(1, steps + 1)}
    if data.get("step_dirs"):  # a saved model per step, with its optimizer state, as a real trainer's run holds
        for s in step_path:
            step_path[s] = f"run/checkpoints/step_{s:06d}"
            (ctx.path / step_path[s]).mkdir(parents=True, exist_ok=True)
            (ctx.path / step_path[s] / "model.safetensors").write_text(f"weights at {s}")
            (ctx.path / step_path[s] / "trainer_state.safetensors").write_text(f"optimizer at {s}")
    out = {"checkpoint": "run/final", "value": value, "steps": steps,
           "checkpoints": [{"step": s, "path": step_path[s], "tokens_trained": 100 * s, "tokens_generated": 10 * s,
                            "flops": 6e3 * s} for s in range(1, steps + 1)],
           "compute": {"params": 10, "tokens_trained": 100 * steps, "tokens_generated": 10 * steps}}
    if ctx.inputs:  # where it started, as the real trainer stages record it (evaluations read it for drift)
        out["start"] = os.path.relpath(ctx.input_checkpoint(0), ctx.path)
    return out


train.reads_start = False  # a trainer reads its input's checkpoint, not where that input started


def evaluate(ctx) -> dict:
    """An 'eval' whose success per split is derived from the input's value (and the seed)."""
    _log(ctx, "eval")
    src = ctx.inputs[0]
    splits = ctx.spec.get("splits") or ["id", "ood"]
    offsets = (ctx.spec.get("data") or {}).get("offsets", {})
    points = []
    for p in src.get("checkpoints") or [{"step": 0, "flops": 0.0}]:
        frac = p["step"] / max(1, src.get("steps", 1))
        res = {s: {"success_rate": min(1.0, max(0.0, src["value"] * frac + offsets.get(s, 0.0) + 0.01 * ctx.seed)),
                   "ci": [0.0, 1.0]} for s in splits}
        n = int((ctx.spec.get("data") or {}).get("problems", 0))
        for r in res.values():  # per-problem outcomes on n shared problems: the first round(rate * n) solved
            if n:
                r["per_problem"] = [1.0 if i < round(r["success_rate"] * n) else 0.0 for i in range(n)]
        points.append({"step": p["step"], "flops": p["flops"], "results": res})
    return {"splits": splits, "points": points, "success": {s: points[-1]["results"][s]["success_rate"] for s in splits},
            "compute": {"params": 10, "tokens_generated": 50}}


def rendezvous(ctx) -> dict:
    """A stage that finishes only once stage `data.partner` has started too, in any process: a study of two
    of them completes only when two processes run them at the same time."""
    data = ctx.spec.get("data") or {}
    meet = Path(data["dir"])
    meet.mkdir(parents=True, exist_ok=True)
    (meet / f"{ctx.stage.name}.started").write_text(str(os.getpid()))
    _log(ctx, f"pid {os.getpid()}")
    deadline = time.time() + float(data.get("timeout", 90))
    while not (meet / f"{data['partner']}.started").exists():
        if time.time() > deadline:
            raise RuntimeError(f"{ctx.stage.name}: {data['partner']} never started beside it")
        time.sleep(0.05)
    return {"value": 0.5, "pid": os.getpid()}
