"""The built-in stage kinds, declared once in a registry: pretrain, sft, rl, eval.

A `StageKind` pairs `run(ctx) -> result dict` with `validate(ctx)`, which builds and checks
everything the stage will use (trainer config, environment and splits, `data:` and `eval:`
keys) without training anything. The runner validates every stage of a study before the first
one runs, so a typo in a late stage fails in a second, not forty minutes in.

A result holds ``checkpoint`` (relative to the stage directory; what downstream stages load),
``checkpoints`` (the saved points along training, with cumulative compute at each, used by
eval stages with ``points: all``) and ``compute`` (integer tokens trained/generated,
parameters). A custom kind (``kind: module:function``) follows the same contract.

Seeds: every problem seed comes from `postlab.seeds` (expert demonstrations, the RL range,
corpus episodes, evaluation), whose named ranges are disjoint by construction.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from collections.abc import Callable
from pathlib import Path

from postlab.config import ConfigError, _suggest
from postlab.naming import Registry
from postlab.progress import console
from postlab.seeds import corpus_generator_seed, expert_seed
from postlab.studies.compute import count_params, cumulative_tokens, flops


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
    return base_corpus_records(spec, n, seed=corpus_generator_seed(seed, "base_mix"))


def expert_records(spec: dict, split: str, n: int, seed: int, max_steps: int = 64) -> list[dict]:
    """Expert demonstrations as chat records (postlab.envs.export.expert_dialogue, the one expert
    player), on the `sft_expert` seed range of run seed `seed`."""
    from postlab.envs.export import expert_dialogue

    env = _env(spec, split=split)
    return [{"messages": expert_dialogue(env, expert_seed(seed, i), max_steps)} for i in range(n)]


# ----------------------------------------------------------------------------- trainer stages


def trainer_result(ctx, final: Path) -> dict:
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
    run["log_every"] = 1  # every step's running token totals: compute at any saved point
    run.setdefault("keep_checkpoints", 1000)  # eval stages may evaluate every saved point
    if model_path is not None:
        model = data.setdefault("model", {})
        model["path"], model["preset"] = str(model_path), None
    return data


def _resume(ctx) -> str | None:
    """The stage's run directory when an interrupted attempt left a run there (resume it)."""
    from postlab.trainers.loop import holds_run

    return str(ctx.run_dir) if (ctx.run_dir / "config.yaml").exists() and holds_run(ctx.run_dir) else None


def rl_stage_config(ctx):
    """The validated RLConfig of an `rl` stage: the stage's `config` with what the study owns (input
    checkpoint, run directory, seed) and the stage's environment unless its config sets its own."""
    from postlab.config import load_config
    from postlab.trainers.rl import RLConfig

    spec = ctx.spec
    data = trainer_overrides(ctx, ctx.input_checkpoint(0))
    env = data.setdefault("env", {})
    split = spec.get("split", "id")
    # The trainer's own periodic eval runs on the training split unless the stage names others:
    # split names are per environment (biographies has no 'id'); the study's eval stages do the ID/OOD evaluation.
    wanted = {"name": spec.get("env"), "split": split, "style": spec.get("style"),
              "max_turns": spec.get("max_turns"), "kwargs": spec.get("env_args"), "eval_splits": [split]}
    for k, v in wanted.items():
        if v is not None:
            env.setdefault(k, v)
    return load_config(RLConfig, base=data)


# ----------------------------------------------------------------------------- kinds


def run_pretrain(ctx) -> dict:
    """Pre-train a tiny model from scratch on the environment's base corpus (lab scale)."""
    from postlab.trainers.sft import SFTConfig, train_sft

    data = ctx.spec.get("data") or {}
    records = base_corpus_records(ctx.spec, int(data.get("n", 10_000)),
                                  seed=int(data.get("seed", 0)) + corpus_generator_seed(ctx.seed, "pretrain"))
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
    from postlab.trainers.rl import train_rl

    final = train_rl(rl_stage_config(ctx), resume=_resume(ctx))
    return trainer_result(ctx, final)


def run_eval(ctx) -> dict:
    """Evaluate the input model (its final checkpoint, or every saved point along training) on `splits`."""
    from postlab.envs import make
    from postlab.eval.evaluate import evaluate
    from postlab.models.io import load_model, load_tokenizer, pick_device

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


# ----------------------------------------------------------------------------- validation


def _check_keys(ctx, field: str, given: dict, valid) -> None:
    for key in given or {}:
        if key not in valid:
            raise ConfigError(f"stages.{ctx.stage.name}.{field}.{key}: unknown key.{_suggest(key, list(valid))} "
                              f"Valid for a {ctx.stage.kind} stage: {', '.join(valid)}")


def _check_splits(ctx, splits: list[str]) -> None:
    """Each split must exist for the stage's environment (built once, as the stage would)."""
    for split in splits:
        try:
            _env(ctx.spec, split=split)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"stages.{ctx.stage.name}: {e}") from None


def _stage_error(ctx, e: Exception) -> ConfigError:
    return ConfigError(f"stages.{ctx.stage.name} ({ctx.stage.kind}): {e}")


def validate_pretrain(ctx) -> None:
    from postlab.trainers.sft import SFTConfig

    _check_keys(ctx, "data", ctx.spec.get("data"), ("n", "seed"))
    _check_splits(ctx, [None])
    try:
        _trainer_config(ctx, SFTConfig, None)
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def validate_sft(ctx) -> None:
    from postlab.trainers.sft import SFTConfig

    data = ctx.spec.get("data") or {}
    _check_keys(ctx, "data", data, ("n", "eval_holdout", "base_mix"))
    if not 0.0 <= float(data.get("base_mix") or 0.0) < 1.0:
        raise ConfigError(f"stages.{ctx.stage.name}.data.base_mix must be in [0, 1), got {data['base_mix']}")
    split = ctx.spec.get("split", "id")
    _check_splits(ctx, split if isinstance(split, list) else [split])
    try:
        _trainer_config(ctx, SFTConfig, ctx.input_checkpoint(0))
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def validate_rl(ctx) -> None:
    from postlab.trainers.rl import validate_env

    try:
        validate_env(rl_stage_config(ctx).env)
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def validate_eval(ctx) -> None:
    from postlab.eval.evaluate import evaluate

    owned = ("model", "tokenizer", "env", "split")  # the stage supplies these
    valid = [p for p in inspect.signature(evaluate).parameters if p not in owned] + ["device"]
    _check_keys(ctx, "eval", ctx.spec.get("eval"), valid)
    if ctx.spec.get("points", "final") not in ("final", "all"):
        raise ConfigError(f"stages.{ctx.stage.name}.points: {ctx.spec['points']!r}; valid: 'final', 'all'")
    _check_splits(ctx, ctx.spec.get("splits") or [None])


# ----------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class StageKind:
    name: str
    run: Callable  # run(ctx) -> result dict
    validate: Callable  # validate(ctx) -> None; raises ConfigError naming the stage and key
    doc: str = ""


STAGE_KINDS: Registry = Registry("stage kind")


def register_stage_kind(kind: StageKind) -> StageKind:
    return STAGE_KINDS.add(kind.name, kind)


register_stage_kind(StageKind("pretrain", run_pretrain, validate_pretrain, "base corpus -> tiny model from scratch"))
register_stage_kind(StageKind("sft", run_sft, validate_sft, "SFT on expert demonstrations of `split`"))
register_stage_kind(StageKind("rl", run_rl, validate_rl, "RL on the environment (postlab.trainers.rl)"))
register_stage_kind(StageKind("eval", run_eval, validate_eval, "ID/OOD evaluation (postlab.eval.evaluate)"))
