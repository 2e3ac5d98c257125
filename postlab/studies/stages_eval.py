"""The eval stage kind: the input model (its final checkpoint, or every saved point along
training with ``points: all``) on the stage's splits, greedy and, with ``sampled:``, with N samples
per problem (``SPLIT@sampled``); where the input records its start, the drift from it (KL and
parameter distance, postlab.eval.drift). Its result is what the report's tables, curves and
findings read (postlab.studies.report_data). Each point is kept as it is measured (``points/``): an
interrupted stage resumes at the first point it had not finished.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from pathlib import Path

from postlab.config import ConfigError
from postlab.progress import console
from postlab.studies.compute import count_params, flops
from postlab.studies.stage_common import (StageKind, check_keys, check_splits, register_stage_kind, stage_env,
                                          write_json_atomic)

SAMPLED_KEYS = ("samples", "temperature", "k")


def eval_stage_options(ctx) -> tuple[dict, dict | None, dict | None]:
    """(evaluate() options, sampled options or None, drift options or None) of an eval stage.

    ``sampled: {samples: N, temperature: T, k: K}`` evaluates every split a second time with N
    samples per problem at temperature T (mean success = pass@1, and pass@K), stored as split
    ``SPLIT@sampled`` beside the greedy ``SPLIT``. ``drift: {split, n_problems, samples,
    max_new_tokens}`` (on by default where the input stage records its start; ``drift: false``
    turns it off) measures KL(start || model) and parameter distance at every point
    (`postlab.eval.drift`)."""
    spec = ctx.spec
    opts = dict(spec.get("eval") or {})
    if spec.get("max_turns") is not None:
        opts.setdefault("max_turns", spec["max_turns"])
    opts.setdefault("style", spec.get("style", "compact"))
    if spec.get("env_args"):
        opts.setdefault("env_args", spec["env_args"])
    sampled = spec.get("sampled")
    if sampled:
        sampled = dict(sampled)
        unknown = set(sampled) - set(SAMPLED_KEYS)
        if unknown:
            raise ConfigError(f"stages.{ctx.stage.name}.sampled.{sorted(unknown)[0]}: unknown key; valid: "
                              f"{', '.join(SAMPLED_KEYS)}")
        sampled.setdefault("samples", 8)
        sampled.setdefault("temperature", 1.0)
        sampled.setdefault("k", sampled["samples"])
        if not (isinstance(sampled["samples"], int) and isinstance(sampled["k"], int)
                and 1 <= sampled["k"] <= sampled["samples"]):
            raise ConfigError(f"stages.{ctx.stage.name}.sampled: need integers 1 <= k <= samples, got {sampled}")
        t = sampled["temperature"]
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise ConfigError(f"stages.{ctx.stage.name}.sampled.temperature must be a finite number > 0, got {t!r}")
    drift = spec.get("drift", {})
    if drift is not False and drift is not None:
        from postlab.eval.drift import DriftOptions

        if not isinstance(drift, dict):
            raise ConfigError(f"stages.{ctx.stage.name}.drift: a mapping or false, got {drift!r}")
        fields = [f.name for f in dataclasses.fields(DriftOptions)]
        check_keys(ctx, "drift", drift, fields)
        drift = {"max_new_tokens": opts.get("max_new_tokens", 64), "split": _eval_splits(spec)[0], **drift}
        try:
            DriftOptions(**drift)
        except ValueError as e:
            raise ConfigError(f"stages.{ctx.stage.name}.{e}") from None
    else:
        drift = None
    return opts, sampled or None, drift


def _eval_splits(spec: dict) -> list[str]:
    """An eval stage's splits: its `splits`, or every split of its environment."""
    from postlab.envs import make

    return list(spec.get("splits") or make(spec["env"]).splits)


def run_eval(ctx) -> dict:
    """Evaluate the input model (its final checkpoint, or every saved point along training) on `splits`:
    greedy, and with `sampled` also sampled (``SPLIT@sampled``); with a recorded start, its drift from it."""
    from postlab.eval.evaluate import evaluate
    from postlab.models.io import load_model, load_tokenizer, pick_device

    spec = ctx.spec
    src = ctx.inputs[0] if ctx.inputs else {}
    splits = _eval_splits(spec)
    opts, sampled, drift_opts = eval_stage_options(ctx)
    device = pick_device(opts.pop("device", "auto"))
    final_path = ctx.input_checkpoint(0)
    in_compute = src.get("compute") or {}
    final_point = {"step": src.get("steps", 0), "path": final_path, "tokens_trained": in_compute.get("tokens_trained", 0),
                   "tokens_generated": in_compute.get("tokens_generated", 0)}
    # the final checkpoint first: a stage interrupted after it already holds what most findings read
    points = [final_point]
    if spec.get("points", "final") == "all":
        for p in src.get("checkpoints") or []:
            if p["step"] != final_point["step"]:
                points.append({**p, "path": ctx.input_dirs[0] / p["path"]})
    params = count_params(final_path)
    # the start model's samples, drawn (with their own seed) for the first point this run measures: a resumed
    # stage whose points were all kept needs none
    with_drift, drift_ref = drift_opts is not None and bool(src.get("start")), None
    generated = 0
    out_points = []
    measured = ctx.path / "points"  # one file per point: a killed stage resumes after its last whole point
    measured.mkdir(exist_ok=True)
    for p in points:
        done = measured / f"step_{p['step']}.json"
        kept = _kept_point(done)
        if kept is not None:
            console.print(f"  step {p['step']}: measured before the interruption ({done})", highlight=False)
            out_points.append(kept["point"])
            generated += kept["generated_tokens"]
            continue
        generated_before = generated
        model = load_model(str(p["path"]), device=device)
        tok = load_tokenizer(str(p["path"]))
        results = {}
        console.print(f"  step {p['step']}:", highlight=False)
        for split in splits:
            runs = [(split, opts)]
            if sampled:
                runs.append((f"{split}@sampled", {**opts, "decoding": "sampled", "n_samples": sampled["samples"],
                                                  "k": sampled["k"], "temperature": sampled["temperature"]}))
            for name, o in runs:
                r = evaluate(model, tok, spec["env"], split, **o)
                generated += r["generated_tokens"]
                results[name] = r
                _report_split(name, r)
        point = {"step": p["step"], "tokens_trained": p["tokens_trained"], "tokens_generated": p["tokens_generated"],
                 "flops": flops(params, p["tokens_trained"], p["tokens_generated"]),
                 "results": {s: {k: v for k, v in r.items() if k != "examples"} for s, r in results.items()}}
        if with_drift:
            if drift_ref is None:
                drift_ref = _drift_reference(ctx, ctx.input_dirs[0] / src["start"], drift_opts, opts, device)
            point["drift"] = drift_ref.measure(model)
            console.print(f"  drift from the start: KL {point['drift']['kl']:.4f} nats/sequence, "
                          f"||dtheta|| {point['drift']['param_distance']:.4f}", highlight=False)
        out_points.append(point)
        (ctx.path / f"examples_step_{p['step']}.json").write_text(
            json.dumps({s: r["examples"] for s, r in results.items()}, indent=2, ensure_ascii=False))
        write_json_atomic(done, {"point": point, "generated_tokens": generated - generated_before})
        del model
    out_points.sort(key=lambda point: point["step"])
    final = out_points[-1]["results"]
    return {"env": spec["env"], "splits": splits, "points": out_points,
            "success": {s: final[s]["success_rate"] for s in splits},
            "compute": {"params": params, "tokens_trained": 0, "tokens_generated": generated}}


def _kept_point(path: Path) -> dict | None:
    """A point an interrupted run of the stage measured, or None: none kept, or a file that does not read
    as one (edited or damaged by hand: written atomically, it is never torn), which is measured again."""
    if not path.exists():
        return None
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept.get("point"), dict) and isinstance(kept.get("generated_tokens"), int):
            return kept
    except (ValueError, AttributeError):
        pass
    console.print(f"  [yellow]{path} does not read as a measured point: measuring it again[/yellow]")
    return None


def _report_split(split: str, r: dict) -> None:
    ci = f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
    extra = f", pass@{r['k']} {r['pass_at_k']:.3f}" if "pass_at_k" in r else ""
    console.print(f"  {split} success {r['success_rate']:.3f} {ci}{extra}", highlight=False)
    first = r.get("truncated_first_turn_fraction", r["truncated_fraction"])
    if first > 0.25:
        console.print(f"  [yellow]warning: {first:.0%} of {split} first answers hit the generation cap; raise the "
                      "stage's eval.max_new_tokens[/yellow]")
    elif r["truncated_fraction"] > 0.25:
        console.print(f"  {r['truncated_fraction']:.0%} of {split} episodes hit the generation cap in a retry after "
                      f"a wrong answer ({first:.0%} of first answers)", highlight=False)


def _drift_reference(ctx, start: Path, drift_opts: dict, opts: dict, device):
    """The start model's samples on the drift split's evaluation prompts (drawn once per eval stage)."""
    from postlab.eval.drift import DriftOptions, DriftReference
    from postlab.models.io import load_model, load_tokenizer

    o = DriftOptions(**drift_opts)
    start_model = load_model(str(start), device=device)  # only its samples and parameters are kept
    return DriftReference(start_model, load_tokenizer(str(start)),
                          lambda: stage_env(ctx.spec, split=o.split, max_turns=opts.get("max_turns")), o)


def validate_eval(ctx) -> None:
    from postlab.eval.evaluate import evaluate

    owned = ("model", "tokenizer", "env", "split")  # the stage supplies these
    valid = [p for p in inspect.signature(evaluate).parameters if p not in owned] + ["device"]
    check_keys(ctx, "eval", ctx.spec.get("eval"), valid)
    if ctx.spec.get("points", "final") not in ("final", "all"):
        raise ConfigError(f"stages.{ctx.stage.name}.points: {ctx.spec['points']!r}; valid: 'final', 'all'")
    check_splits(ctx, ctx.spec.get("splits") or [None])
    _, _, drift = eval_stage_options(ctx)
    if drift is not None:
        check_splits(ctx, [drift["split"]])


register_stage_kind(StageKind("eval", run_eval, validate_eval, "ID/OOD evaluation (postlab.eval.evaluate)",
                               reads_start=True))
