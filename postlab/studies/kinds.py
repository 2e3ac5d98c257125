"""The built-in stage kinds: pretrain, sft, rl, eval. Each is `run_KIND(ctx) -> result dict`.

A result holds ``checkpoint`` (relative to the stage directory; what downstream stages load),
``checkpoints`` (the saved points along training, with cumulative compute at each, used by
eval stages with ``points: all``) and ``compute`` (tokens trained/generated, parameters).
A custom kind (``kind: module:function``) follows the same contract.

Seeds: training episodes of study seed s use env seeds s*100_003 + i (always < 1e6);
evaluation uses seeds >= 1e6 (postlab.eval.evaluate.SEED_BASE), identical for every model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from postlab.eval.evaluate import SEED_BASE
from postlab.progress import console

TRAIN_SEED_STRIDE = 100_003
BASE_MIX_SEED_OFFSET = 7_919  # corpus seeds of SFT base-mix items: disjoint from pre-training's (0 + study seed)


# ----------------------------------------------------------------------------- data adapters


def _env(spec: dict, split: str | None = None, max_turns: int | None = None):
    from postlab.envs import ENV_REGISTRY, make

    kwargs = dict(spec.get("env_args") or {})
    turns = max_turns if max_turns is not None else spec.get("max_turns")
    if turns is not None:
        kwargs["max_turns"] = turns
    # A stage without a split (e.g. base pre-training) uses the env's first split: split names
    # are per environment (biographies has no 'id').
    cls = ENV_REGISTRY.get(spec["env"])
    split = split or spec.get("split") or (cls.splits[0] if cls else "id")
    return make(spec["env"], split=split, style=spec.get("style", "compact"), **kwargs)


def base_corpus_records(spec: dict, n: int, seed: int) -> list[dict]:
    env = _env(spec)
    records = env.base_corpus_records(n, seed=seed)
    if not records:
        raise ValueError(f"environment {spec['env']!r} has no base corpus (base_corpus returned nothing)")
    return records


def base_mix_records(spec: dict, n_task: int, fraction: float, seed: int) -> list[dict]:
    """Base-corpus items to mix into SFT data so that they make up `fraction` of the mix.

    At lab scale this stands in for what a pre-trained LLM keeps through a short format
    warm-up: a 3M model fine-tuned on ID episodes alone overwrites what its base corpus
    taught it (measured on GeneralPoints: the base model reads the stated face-card rule on
    55 of 64 rule-OOD hands, the warm-up on 1; docs/results.md). The items are fresh draws
    of the base corpus (another corpus seed than pre-training), never task episodes."""
    fraction = float(fraction or 0.0)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.base_mix must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return []
    n = round(n_task * fraction / (1.0 - fraction))
    return base_corpus_records(spec, n, seed=BASE_MIX_SEED_OFFSET + seed)


def expert_records(spec: dict, split: str, n: int, seed: int, max_steps: int = 64) -> list[dict]:
    """Expert demonstrations as chat records: play each episode with env.expert() to the end."""
    env = _env(spec, split=split)
    first = seed * TRAIN_SEED_STRIDE
    if first + n >= SEED_BASE:
        raise ValueError(f"training episodes {first}..{first + n} would overlap evaluation seeds (>= {SEED_BASE})")
    records = []
    for i in range(n):
        obs = env.reset(first + i)
        msgs = [dict(m) for m in obs.messages]
        for _ in range(max_steps):
            answer = env.expert()
            msgs.append({"role": "assistant", "content": answer})
            res = env.step(answer)
            if res.done:
                break
            msgs.extend(dict(m) for m in res.feedback)
        records.append({"messages": msgs})
    return records


# ----------------------------------------------------------------------------- compute helpers


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


TRAIN_TOKEN_KEYS = ("tokens_trained", "train_tokens", "tokens")
GEN_TOKEN_KEYS = ("tokens_generated", "generated_tokens", "gen_tokens")


def _first(row: dict, keys) -> float:
    for k in keys:
        if isinstance(row.get(k), (int, float)):
            return float(row[k])
    return 0.0


def cumulative_tokens(run_dir: Path) -> dict[int, tuple[int, int]]:
    """step -> (tokens trained, tokens generated) summed over steps <= step (needs log_every=1)."""
    p = run_dir / "metrics.jsonl"
    out: dict[int, tuple[int, int]] = {}
    if not p.exists():
        return out
    per_step: dict[int, tuple[float, float]] = {}
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind", "train") != "train":
            continue
        trained, generated = _first(row, TRAIN_TOKEN_KEYS), _first(row, GEN_TOKEN_KEYS)
        if not generated and "gen_tokens_per_s" in row and "time_generation" in row:  # postlab.trainers.rl rows
            generated = row["gen_tokens_per_s"] * row["time_generation"]
            if not trained and "tokens_per_s" in row:
                trained = row["tokens_per_s"] * (row["time_generation"] + row.get("time_training", 0.0))
        per_step[int(row["step"])] = (trained, generated)
    tr = ge = 0.0
    for step in sorted(per_step):
        tr, ge = tr + per_step[step][0], ge + per_step[step][1]
        out[step] = (int(tr), int(ge))
    return out


def trainer_result(ctx, final: Path) -> dict:
    from postlab.studies.runner import flops

    params = count_params(final)
    cum = cumulative_tokens(ctx.run_dir)
    last = max(cum) if cum else 0
    trained, generated = cum.get(last, (0, 0))
    points = []
    for d in sorted((ctx.run_dir / "checkpoints").glob("step_*")):
        if not d.is_dir() or d.name.endswith((".tmp", ".old")):
            continue
        step = int(d.name.split("_")[1])
        t, g = cum.get(step, (0, 0))
        points.append({"step": step, "path": str(d.relative_to(ctx.path)), "tokens_trained": t,
                       "tokens_generated": g, "flops": flops(params, t, g)})
    return {"checkpoint": str(final.relative_to(ctx.path)), "checkpoints": points, "steps": last,
            "compute": {"params": params, "tokens_trained": trained, "tokens_generated": generated}}


def _trainer_config(ctx, cls, model_path: Path | None):
    """The trainer config: the stage's `config` with the study's run dir, seed and input model."""
    from postlab.config import load_config

    return load_config(cls, base=trainer_overrides(ctx, model_path))


def trainer_overrides(ctx, model_path: Path | None) -> dict:
    """The stage's `config` mapping with what the study owns filled in (run dir, seed,
    per-step logging for compute accounting, the input model)."""
    data = copy.deepcopy(ctx.spec.get("config") or {})
    run = data.setdefault("run", {})
    run["out_dir"] = str(ctx.run_dir)
    run.setdefault("seed", ctx.seed)
    run["log_every"] = 1  # per-step token counts: compute accounting
    run.setdefault("keep_checkpoints", 1000)  # eval stages may evaluate every saved point
    if model_path is not None:
        model = data.setdefault("model", {})
        model["path"], model["preset"] = str(model_path), None
    return data


def _resume(ctx) -> str | None:
    return str(ctx.run_dir) if ctx.run_dir.exists() else None


# ----------------------------------------------------------------------------- kinds


def run_pretrain(ctx) -> dict:
    """Pre-train a tiny model from scratch on the environment's base corpus (lab scale)."""
    from postlab.trainers.sft import SFTConfig, train_sft

    data = ctx.spec.get("data") or {}
    records = base_corpus_records(ctx.spec, int(data.get("n", 10_000)), seed=int(data.get("seed", 0)) + ctx.seed)
    cfg = _trainer_config(ctx, SFTConfig, None)
    final = train_sft(cfg, records, resume=_resume(ctx))
    return trainer_result(ctx, final)


def run_sft(ctx) -> dict:
    """SFT from the input checkpoint on expert demonstrations of `split` (default id)."""
    from postlab.trainers.sft import SFTConfig, train_sft

    data = ctx.spec.get("data") or {}
    split = ctx.spec.get("split", "id")
    records = []
    for i, sp in enumerate(split if isinstance(split, list) else [split]):  # a list mixes several splits
        recs = expert_records(ctx.spec, sp, int(data.get("n", 1000)), seed=ctx.seed)
        records += recs
    records += base_mix_records(ctx.spec, len(records), data.get("base_mix", 0.0), seed=ctx.seed)
    if isinstance(split, list) or data.get("base_mix"):
        import random

        random.Random(ctx.seed).shuffle(records)
    holdout = int(data.get("eval_holdout", 0))
    train, heldout = (records[holdout:], records[:holdout]) if holdout else (records, None)
    cfg = _trainer_config(ctx, SFTConfig, ctx.input_checkpoint(0))
    final = train_sft(cfg, train, heldout, resume=_resume(ctx))
    return trainer_result(ctx, final)


def run_rl(ctx) -> dict:
    """RL from the input checkpoint on the environment (postlab.trainers.rl)."""
    from postlab.studies.rl_adapter import train_rl_stage

    final = train_rl_stage(ctx)
    return trainer_result(ctx, final)


def run_eval(ctx) -> dict:
    """Evaluate the input model (its final checkpoint, or every saved point along training) on `splits`."""
    from postlab.envs import make
    from postlab.eval.evaluate import evaluate
    from postlab.models.io import load_model, load_tokenizer, pick_device
    from postlab.studies.runner import flops

    spec = ctx.spec
    src = ctx.inputs[0] if ctx.inputs else {}
    splits = spec.get("splits") or list(make(spec["env"]).splits)
    opts = dict(spec.get("eval") or {})
    device = pick_device(opts.pop("device", "auto"))
    if spec.get("max_turns") is not None:
        opts.setdefault("max_turns", spec["max_turns"])
    opts.setdefault("style", spec.get("style", "compact"))
    if spec.get("env_args"):
        opts.setdefault("env_args", spec["env_args"])
    final_path = ctx.input_checkpoint(0)
    in_compute = src.get("compute") or {}
    final_point = {"step": src.get("steps", 0), "path": final_path, "tokens_trained": in_compute.get("tokens_trained", 0),
                   "tokens_generated": in_compute.get("tokens_generated", 0)}
    points = []
    if spec.get("points", "final") == "all":
        for p in src.get("checkpoints") or []:
            if p["step"] != final_point["step"]:
                points.append({**p, "path": ctx.input_dirs[0] / p["path"]})
    points.append(final_point)
    params = count_params(final_path)
    generated = 0
    out_points = []
    for p in points:
        model = load_model(str(p["path"]), device=device)
        tok = load_tokenizer(str(p["path"]))
        results = {}
        for split in splits:
            r = evaluate(model, tok, spec["env"], split, **opts)
            generated += r["generated_tokens"]
            results[split] = r
            console.print(f"  step {p['step']}: {split} success {r['success_rate']:.3f} "
                          f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", highlight=False)
            if r["truncated_fraction"] > 0.25:
                console.print(f"  [yellow]warning: {r['truncated_fraction']:.0%} of {split} episodes hit the "
                              "generation cap; raise the stage's eval.max_new_tokens[/yellow]")
        out_points.append({"step": p["step"], "tokens_trained": p["tokens_trained"],
                           "tokens_generated": p["tokens_generated"],
                           "flops": flops(params, p["tokens_trained"], p["tokens_generated"]),
                           "results": {s: {k: v for k, v in r.items() if k != "examples"} for s, r in results.items()}})
        (ctx.path / f"examples_step_{p['step']}.json").write_text(
            json.dumps({s: r["examples"] for s, r in results.items()}, indent=2, ensure_ascii=False))
        del model
    final = out_points[-1]["results"]
    return {"env": spec["env"], "splits": splits, "points": out_points,
            "success": {s: final[s]["success_rate"] for s in splits},
            "compute": {"params": params, "tokens_trained": 0, "tokens_generated": generated}}
