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
import math
import os
from collections.abc import Callable
from pathlib import Path

from postlab.config import ConfigError, _suggest
from postlab.naming import Registry
from postlab.progress import console
from postlab.seeds import corpus_generator_seed, expert_seed
from postlab.studies.compute import count_params, cumulative_tokens, flops
from postlab.studies.probe import apply_choice, probe_config, probe_options, run_probes, settings, training_gain


# ----------------------------------------------------------------------------- data adapters


def _env(spec: dict, split: str | None = None, max_turns: int | None = None):
    from postlab.envs.base import env_class

    kwargs = dict(spec.get("env_args") or {})
    turns = max_turns if max_turns is not None else spec.get("max_turns")
    if turns is not None:
        kwargs["max_turns"] = turns
    # A stage without a split (e.g. base pre-training) uses the env's first split: split names
    # are per environment (biographies has no 'id').
    cls = env_class(spec["env"])  # a registered name or an import path ('mypkg.myenv:MyEnv')
    split = split or spec.get("split") or (cls.splits[0] if cls.splits else "id")
    return cls(split=split, style=spec.get("style", "compact"), **kwargs)


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
    out = {"checkpoint": str(final.relative_to(ctx.path)), "checkpoints": points, "steps": last,
           "compute": {"params": params, "tokens_trained": trained, "tokens_generated": generated}}
    if ctx.inputs and ctx.inputs[0].get("checkpoint"):  # where it started: eval stages measure drift from it
        out["start"] = os.path.relpath(ctx.input_checkpoint(0), ctx.path)
    return out


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


def rl_stage_data(ctx) -> dict:
    """An `rl` (or `rl-probe`) stage's RL config mapping: the stage's `config` with what the study owns
    (input checkpoint, run directory, seed), the stage's environment unless its config sets its own,
    and, for an rl stage fed by a probe (``after: [START, PROBE]``), the probe's chosen setting."""
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
    probe = _probe_input(ctx)
    if probe is not None:
        apply_choice(data, probe)
    return data


def _probe_input(ctx) -> dict | None:
    """The result of the stage's `rl-probe` input (``after: [START, PROBE]``), or None without one."""
    kinds = [ctx.study.stages[name].kind for name in ctx.stage.after]
    if "rl-probe" not in kinds:
        return None
    if ctx.stage.kind != "rl" or kinds[1:] != ["rl-probe"] or len(kinds) != 2:
        raise ConfigError(f"stages.{ctx.stage.name}.after: an rl stage takes a probe as [START, PROBE] (the probe "
                          f"run from START); got {ctx.stage.after}")
    probe_start = ctx.study.stages[ctx.stage.after[1]].after[:1]
    if probe_start != ctx.stage.after[:1]:
        raise ConfigError(f"stages.{ctx.stage.name}.after: the probe {ctx.stage.after[1]!r} ran from {probe_start}, "
                          f"not from {ctx.stage.after[0]!r}; a budget is chosen for the checkpoint RL starts from")
    return ctx.inputs[1] if len(ctx.inputs) > 1 else {}


def rl_stage_config(ctx):
    """The validated RLConfig of an `rl` stage (`rl_stage_data`)."""
    from postlab.config import load_config
    from postlab.trainers.rl import RLConfig

    return load_config(RLConfig, base=rl_stage_data(ctx))


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
    """RL from the input checkpoint on the environment (postlab.trainers.rl). Fed by a probe that found no
    signal (the gate), it trains nothing: its result is the start checkpoint, marked skipped."""
    from postlab.trainers.rl import train_rl

    probe = _probe_input(ctx)
    if probe is not None and probe.get("skip"):
        console.print(f"[yellow]{ctx.stage.name}: RL skipped: {probe.get('reason')}[/yellow]")
        start = ctx.input_checkpoint(0)
        return {"checkpoint": os.path.relpath(start, ctx.path), "checkpoints": [], "steps": 0,
                "skipped": probe.get("reason"), "start": os.path.relpath(start, ctx.path),
                "compute": {"params": count_params(start), "tokens_trained": 0, "tokens_generated": 0}}
    cfg = rl_stage_config(ctx)
    final = train_rl(cfg, resume=_resume(ctx))
    result = trainer_result(ctx, final)
    if probe is not None:  # the probe's test once more on the real run: did training success rise?
        result["probe_choice"] = probe.get("chosen")
        window = min(int(probe.get("window") or 1), cfg.run.max_steps)
        gain = training_gain(cfg, ctx.run_dir, window)
        result["training_gain"] = {k: v for k, v in gain.items() if not k.startswith("tokens_")}
        console.print(f"{ctx.stage.name}: training success {gain['on_policy_success']:.3f} vs frozen start "
                      f"{gain['frozen_success']:.3f} on the last {window} steps' hands: gain {gain['gain']:+.3f} "
                      f"[{gain['gain_ci'][0]:+.3f}, {gain['gain_ci'][1]:+.3f}]", highlight=False)
    return result


def run_rl_probe(ctx) -> dict:
    """Short RL probes over a grid from the input checkpoint, on training problems only (postlab.studies.probe)."""
    opts = probe_options(ctx.spec.get("probe"), f"stages.{ctx.stage.name}.probe")
    result = run_probes(ctx.path, rl_stage_data(ctx), opts)
    result["compute"] = {"params": count_params(ctx.input_checkpoint(0)), "tokens_trained": result["tokens_trained"],
                         "tokens_generated": result["tokens_generated"]}
    return result


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
        _check_keys(ctx, "drift", drift, fields)
        drift = {"max_new_tokens": opts.get("max_new_tokens", 64), "split": _eval_splits(spec)[0], **drift}
        try:
            DriftOptions(**drift)
        except ValueError as e:
            raise ConfigError(f"stages.{ctx.stage.name}.{e}") from None
    else:
        drift = None
    return opts, sampled or None, drift


SAMPLED_KEYS = ("samples", "temperature", "k")


def _eval_splits(spec: dict) -> list[str]:
    """An eval stage's splits: its `splits`, or every split of its environment."""
    from postlab.envs import make

    return list(spec.get("splits") or make(spec["env"]).splits)


def _report_split(split: str, r: dict) -> None:
    ci = f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
    extra = f", pass@{r['k']} {r['pass_at_k']:.3f}" if "pass_at_k" in r else ""
    console.print(f"  {split} success {r['success_rate']:.3f} {ci}{extra}", highlight=False)
    if r["truncated_fraction"] > 0.25:
        console.print(f"  [yellow]warning: {r['truncated_fraction']:.0%} of {split} episodes hit the "
                      "generation cap; raise the stage's eval.max_new_tokens[/yellow]")


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
    points = []
    if spec.get("points", "final") == "all":
        for p in src.get("checkpoints") or []:
            if p["step"] != final_point["step"]:
                points.append({**p, "path": ctx.input_dirs[0] / p["path"]})
    points.append(final_point)
    params = count_params(final_path)
    drift_ref = None
    if drift_opts is not None and src.get("start"):
        drift_ref = _drift_reference(ctx, ctx.input_dirs[0] / src["start"], drift_opts, opts, device)
    generated = 0
    out_points = []
    for p in points:
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
        if drift_ref is not None:
            point["drift"] = drift_ref.measure(model)
            console.print(f"  drift from the start: KL {point['drift']['kl']:.4f} nats/sequence, "
                          f"||dtheta|| {point['drift']['param_distance']:.4f}", highlight=False)
        out_points.append(point)
        (ctx.path / f"examples_step_{p['step']}.json").write_text(
            json.dumps({s: r["examples"] for s, r in results.items()}, indent=2, ensure_ascii=False))
        del model
    final = out_points[-1]["results"]
    return {"env": spec["env"], "splits": splits, "points": out_points,
            "success": {s: final[s]["success_rate"] for s in splits},
            "compute": {"params": params, "tokens_trained": 0, "tokens_generated": generated}}


def _drift_reference(ctx, start: Path, drift_opts: dict, opts: dict, device):
    """The start model's samples on the drift split's evaluation prompts (drawn once per eval stage)."""
    from postlab.eval.drift import DriftOptions, DriftReference
    from postlab.models.io import load_model, load_tokenizer

    o = DriftOptions(**drift_opts)
    start_model = load_model(str(start), device=device)  # only its samples and parameters are kept
    return DriftReference(start_model, load_tokenizer(str(start)),
                          lambda: _env(ctx.spec, split=o.split, max_turns=opts.get("max_turns")), o)


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


def validate_rl_probe(ctx) -> None:
    from postlab.trainers.rl import validate_env

    opts = probe_options(ctx.spec.get("probe"), f"stages.{ctx.stage.name}.probe")
    data = rl_stage_data(ctx)
    for setting in settings(opts["grid"]):
        try:
            validate_env(probe_config(data, setting, opts["steps"], ctx.run_dir).env)
        except ConfigError as e:
            raise ConfigError(f"stages.{ctx.stage.name} (rl-probe), setting {setting}: {e}") from None


def validate_eval(ctx) -> None:
    from postlab.eval.evaluate import evaluate

    owned = ("model", "tokenizer", "env", "split")  # the stage supplies these
    valid = [p for p in inspect.signature(evaluate).parameters if p not in owned] + ["device"]
    _check_keys(ctx, "eval", ctx.spec.get("eval"), valid)
    if ctx.spec.get("points", "final") not in ("final", "all"):
        raise ConfigError(f"stages.{ctx.stage.name}.points: {ctx.spec['points']!r}; valid: 'final', 'all'")
    _check_splits(ctx, ctx.spec.get("splits") or [None])
    _, _, drift = eval_stage_options(ctx)
    if drift is not None:
        _check_splits(ctx, [drift["split"]])


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
register_stage_kind(StageKind("rl-probe", run_rl_probe, validate_rl_probe,
                              "short RL probes over a grid on training problems; an rl stage after [START, PROBE] "
                              "takes the setting whose training success rose most (postlab.studies.probe)"))


# ----------------------------------------------------------------------------- rasft and rft stages
# Rollout-adaptive SFT (postlab.trainers.rasft) and rejection-sampling fine-tuning
# (postlab.trainers.rft). Both verify answers with the environment, so their validation builds
# the trainer config and the environment and checks that it has a verifier (check_answer,
# expert_answer). The SFT variants RASFT is compared with are plain `sft` stages
# (`config.objective`: nll, dft, asft, sft_kl, profit); GRPO is an `rl` stage.


def _verifier_env_overrides(ctx, data: dict) -> dict:
    """The stage's environment in a trainer config's `env` section (unless the config sets its own):
    single-turn (max_turns 1 unless the stage says otherwise), evaluated on the training split."""
    spec = ctx.spec
    split = spec.get("split", "id")
    env = data.setdefault("env", {})
    wanted = {"name": spec.get("env"), "split": split, "style": spec.get("style"), "kwargs": spec.get("env_args"),
              "max_turns": spec.get("max_turns"), "eval_splits": [split]}
    for k, v in wanted.items():
        if v is not None:
            env.setdefault(k, v)
    return data


def rasft_stage_config(ctx):
    """The validated RASFTConfig of a `rasft` stage (input checkpoint = policy and frozen reference)."""
    from postlab.config import load_config
    from postlab.trainers.rasft import RASFTConfig

    return load_config(RASFTConfig, base=_verifier_env_overrides(ctx, trainer_overrides(ctx, ctx.input_checkpoint(0))))


def rft_stage_config(ctx):
    """The validated RFTConfig of an `rft` stage."""
    from postlab.config import load_config
    from postlab.trainers.rft import RFTConfig

    return load_config(RFTConfig, base=_verifier_env_overrides(ctx, trainer_overrides(ctx, ctx.input_checkpoint(0))))


def rasft_items(ctx) -> list[dict]:
    """The stage's training items: the same expert demonstrations an `sft` stage of this seed and
    split trains on (`expert_records`: item i is problem expert_seed(seed, i)), each with its env
    seed in `meta.seed` so that RASFT can verify rollouts of that problem."""
    data = ctx.spec.get("data") or {}
    split = ctx.spec.get("split", "id")
    records = expert_records(ctx.spec, split, int(data.get("n", 1000)), seed=ctx.seed)
    for i, rec in enumerate(records):
        rec["meta"] = {"env": ctx.spec["env"], "split": split, "seed": expert_seed(ctx.seed, i)}
    return records


def run_rasft(ctx) -> dict:
    """RASFT from the input checkpoint on expert demonstrations of `split` (postlab.trainers.rasft)."""
    from postlab.trainers.rasft import train_rasft

    final = train_rasft(rasft_stage_config(ctx), rasft_items(ctx), resume=_resume(ctx))
    return trainer_result(ctx, final)


def run_rft(ctx) -> dict:
    """Rejection-sampling fine-tuning from the input checkpoint on the environment (postlab.trainers.rft)."""
    from postlab.trainers.rft import train_rft

    final = train_rft(rft_stage_config(ctx), resume=_resume(ctx))
    return trainer_result(ctx, final)


def validate_rasft(ctx) -> None:
    from postlab.trainers.rasft import validate_env

    _check_keys(ctx, "data", ctx.spec.get("data"), ("n",))
    try:
        validate_env(rasft_stage_config(ctx).env, "a rasft stage")
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def validate_rft(ctx) -> None:
    from postlab.trainers.rasft import validate_env

    _check_keys(ctx, "data", ctx.spec.get("data"), ())
    try:
        validate_env(rft_stage_config(ctx).env, "an rft stage")
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


register_stage_kind(StageKind("rasft", run_rasft, validate_rasft,
                              "rollout-adaptive SFT on expert demonstrations of `split` (postlab.trainers.rasft)"))
register_stage_kind(StageKind("rft", run_rft, validate_rft,
                              "rejection-sampling fine-tuning on the environment (postlab.trainers.rft)"))


# ----------------------------------------------------------------------------- diagnose and rejuvenate stages
# Plasticity diagnostics and Rejuvenation (postlab.interventions, docs/interventions.md) as study
# stages. Both take two inputs, `after: [MODEL, BASE]`: the checkpoint to diagnose or rejuvenate
# and the base model it was trained from (at lab scale the `pretrain` stage). Their options are
# the stage's `config` mapping: diagnose's keyword options (n, tau, hessian_iters, ...) or
# RejuvenationConfig's fields (alpha, fraction, scorer, mode, omega, ...). The environment and
# splits are the stage's own (`env`, `splits` or `split`, `style`, `env_args`).

DIAGNOSE_OWNED = ("ckpt", "base", "env", "splits", "out")  # diagnose() arguments the stage supplies
# The per-model numbers a diagnose stage's result keeps per split (diagnostics.json has the rest).
DIAGNOSTIC_SUMMARY_KEYS = ("entropy_mean", "max_prob_mean", "sft_loss", "dormant_ratio", "effective_rank",
                           "hessian_top_eigenvalue", "perturbation_loss_rise")
REJUVENATE_CALL_OPTIONS = ("device", "dtype")  # rejuvenate() arguments that are not RejuvenationConfig fields


def _check_two_inputs(ctx) -> None:
    if len(ctx.stage.after) != 2:
        raise ConfigError(f"stages.{ctx.stage.name}.after: a {ctx.stage.kind} stage takes two inputs, "
                          f"[MODEL, BASE] (the checkpoint and the base model it was trained from); got "
                          f"{ctx.stage.after or 'none'}")


def _intervention_error(ctx, e: Exception) -> ConfigError:
    """An intervention's CLI-worded error (`--fraction must be ...`) re-worded for the stage's config keys."""
    import re

    names = {"alpha_module": "module_alphas", "split": "splits"}
    text = re.sub(r"--([a-z][a-z-]*)", lambda m: "config." + names.get(m[1].replace("-", "_"), m[1].replace("-", "_")),
                  str(e))
    return ConfigError(f"stages.{ctx.stage.name} ({ctx.stage.kind}): {text}")


def _stage_splits(ctx) -> list[str] | None:
    """`splits`, else `split`, else None (the intervention then uses the env's first split)."""
    splits = ctx.spec.get("splits") or ctx.spec.get("split")
    return [splits] if isinstance(splits, str) else (list(splits) if splits else None)


def diagnose_options(ctx) -> dict:
    """diagnose()'s keyword options: the stage's `config`, with the stage's style and env_args."""
    from postlab.interventions.diagnostics import diagnose

    opts = dict(ctx.spec.get("config") or {})
    _check_keys(ctx, "config", opts, [p for p in inspect.signature(diagnose).parameters if p not in DIAGNOSE_OWNED])
    opts.setdefault("style", ctx.spec.get("style", "compact"))
    if ctx.spec.get("env_args"):
        opts.setdefault("env_args", ctx.spec["env_args"])
    opts.setdefault("seed", ctx.seed)
    return opts


def run_diagnose(ctx) -> dict:
    """Plasticity diagnostics of input 0 against input 1 (the base); the checkpoint passes through."""
    import os

    from postlab.interventions import diagnose

    ckpt, base = ctx.input_checkpoint(0), ctx.input_checkpoint(1)
    out = diagnose(ckpt, base, ctx.spec["env"], _stage_splits(ctx), out=ctx.path, **diagnose_options(ctx))
    per_split, base_split = {}, {}
    for split, r in out["per_split"].items():
        per_split[split] = {k: r["checkpoint"][k] for k in DIAGNOSTIC_SUMMARY_KEYS}
        per_split[split]["entropy_gap_mean"] = r["entropy_gap"]["mean"]
        base_split[split] = {k: r["base"][k] for k in DIAGNOSTIC_SUMMARY_KEYS}
        base_split[split]["entropy_gap_mean"] = 0.0
    src = ctx.inputs[0]
    # `checkpoint` is relative to this stage's directory, so a downstream stage (rejuvenate, rl,
    # eval) can take the diagnosed model as its input through this stage.
    return {"checkpoint": os.path.relpath(ckpt, ctx.path), "steps": src.get("steps", 0),
            "diagnostics": {"drift": out["drift"]["total"], "per_split": per_split, "base": base_split,
                            "splits": out["splits"], "n": out["n"], "file": "diagnostics.json"},
            "compute": {"params": count_params(ckpt), "tokens_trained": 0, "tokens_generated": 0}}


def validate_diagnose(ctx) -> None:
    from postlab.interventions.diagnostics import _validate, diagnose

    _check_two_inputs(ctx)
    opts = diagnose_options(ctx)
    _check_splits(ctx, _stage_splits(ctx) or [None])
    defaults = {p.name: p.default for p in inspect.signature(diagnose).parameters.values()}
    checked = {k: opts.get(k, defaults[k]) for k in inspect.signature(_validate).parameters}
    try:
        _validate(**checked)
    except TypeError:  # a string where a number belongs: '<' between str and int
        bad = {k: v for k, v in checked.items() if isinstance(v, str)}
        raise ConfigError(f"stages.{ctx.stage.name}.config: numbers expected, got {bad}") from None
    except ConfigError as e:
        raise _intervention_error(ctx, e) from None


def rejuvenation_config(ctx):
    """The stage's RejuvenationConfig (validated on construction) and rejuvenate()'s other options."""
    from postlab.interventions.rejuvenation import make_config

    opts = dict(ctx.spec.get("config") or {})
    call = {k: opts.pop(k) for k in REJUVENATE_CALL_OPTIONS if k in opts}
    owned = [k for k in ("env", "splits") if k in opts]
    if owned:
        raise ConfigError(f"stages.{ctx.stage.name}.config.{owned[0]}: set by the stage; use the stage's own "
                          f"`{'env' if owned[0] == 'env' else 'splits'}` field")
    opts.update(env=ctx.spec["env"], splits=_stage_splits(ctx))
    opts.setdefault("style", ctx.spec.get("style", "compact"))
    if ctx.spec.get("env_args"):
        opts.setdefault("env_args", ctx.spec["env_args"])
    # Calibration prompts are the training problems of this study seed's SFT (expert_seed(seed, i)),
    # never the evaluation problems; ReDo's re-initialization is seeded by it too.
    opts.setdefault("calibration_seed", ctx.seed)
    opts.setdefault("seed", ctx.seed)
    try:
        return make_config(**opts), call
    except TypeError as e:  # e.g. a list where a number belongs
        raise ConfigError(f"stages.{ctx.stage.name}.config: {e}") from None
    except ConfigError as e:
        raise _intervention_error(ctx, e) from None


def run_rejuvenate(ctx) -> dict:
    """Rejuvenate input 0 (the SFT model) against input 1 (the base): a new checkpoint for RL."""
    from postlab.interventions import rejuvenate

    config, call = rejuvenation_config(ctx)
    out = ctx.path / "model"
    # The stage directory is the stage's own: a leftover checkpoint there is an interrupted attempt.
    report = rejuvenate(ctx.input_checkpoint(1), ctx.input_checkpoint(0), out, force=True, config=config, **call)
    entropy = report.get("entropy") or {}
    summary = {"reset_units": report["reset"]["reset_units"], "scored_units": report["reset"]["scored_units"],
               "per_module": report["reset"]["per_module"],
               "drift": {who: report["drift"][who]["total"] for who in ("sft", "fused", "rejuvenated")},
               "entropy": {who: e["mean"] for who, e in entropy.items()}, "report": "model/rejuvenation_report.json"}
    return {"checkpoint": "model", "steps": 0, "rejuvenation": summary,
            "compute": {"params": count_params(out), "tokens_trained": 0, "tokens_generated": 0}}


def validate_rejuvenate(ctx) -> None:
    _check_two_inputs(ctx)
    _check_splits(ctx, _stage_splits(ctx) or [None])
    rejuvenation_config(ctx)


register_stage_kind(StageKind("diagnose", run_diagnose, validate_diagnose,
                              "plasticity diagnostics of a checkpoint vs its base (after: [MODEL, BASE])"))
register_stage_kind(StageKind("rejuvenate", run_rejuvenate, validate_rejuvenate,
                              "Rejuvenation: base-anchored fusion + unit reset (after: [SFT, BASE])"))


# ----------------------------------------------------------------------------- rollout and drift stages
# DRIFT (postlab.trainers.drift): a `rollout` stage samples the offline dataset ONCE from its input
# checkpoint (the fixed reference; postlab.rollout.offline), a `drift` stage trains from that
# same checkpoint on it (`after: [REF, ROLLOUT]`). The method's cost is the two stages' sum.

ROLLOUT_FILE = "trajectories.jsonl"  # in the rollout stage's directory


def rollout_stage_config(ctx):
    """The validated RolloutJobConfig of a `rollout` stage: its `config` (n_prompts, samples_per_prompt,
    temperature, max_new_tokens, batch_size, ...) with what the study owns: the input checkpoint as
    the reference, the output file, the seed, and the stage's environment. For `unary-feedback` the
    job's `max_turns` is the attempt budget (env_args.max_attempts, default 5) and its env allows
    2 x that many turns, so a stage `max_turns` must be that (or unset)."""
    from postlab.config import load_config
    from postlab.rollout.offline import RolloutJobConfig

    spec = ctx.spec
    data = copy.deepcopy(spec.get("config") or {})
    owned = sorted({"model", "out", "seed", "env", "env_kwargs", "split", "style", "max_turns"} & set(data))
    if owned:
        raise ConfigError(f"stages.{ctx.stage.name}.config: {owned} are set by the study (input checkpoint, stage "
                          "directory, seed, and the stage's env / env_args / split / style / max_turns); remove them")
    env_args = dict(spec.get("env_args") or {})
    turns = spec.get("max_turns")
    if spec["env"] == "unary-feedback":
        attempts = env_args.pop("max_attempts", None) or (min(5, turns) if turns else 5)
        if turns is not None and turns != 2 * attempts:
            raise ConfigError(f"stages.{ctx.stage.name}.max_turns: a rollout job's unary-feedback env allows 2 x "
                              f"max_attempts = {2 * attempts} turns (unparsable ones included), not {turns}; set "
                              f"max_turns: {2 * attempts} (the same env the RL and eval stages should use) or drop it")
        turns = attempts
    data.update(model=str(ctx.input_checkpoint(0)), out=str(ctx.path / ROLLOUT_FILE), seed=ctx.seed, env=spec["env"],
                env_kwargs=env_args, split=spec.get("split", "id"), style=spec.get("style", "compact"),
                max_turns=turns or 5)
    data.setdefault("progress", True)
    try:
        return load_config(RolloutJobConfig, base=data)
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def run_rollout(ctx) -> dict:
    """Sample the offline trajectory dataset from the input checkpoint (postlab.rollout.offline);
    an interrupted stage resumes the file (the job itself checks it is the same job)."""
    from postlab.data.trajectories import read_trajectories
    from postlab.rollout.offline import run_rollout_job

    cfg = rollout_stage_config(ctx)
    summary = run_rollout_job(cfg)
    trajs = read_trajectories(cfg.out)  # the whole file: a resumed stage counts what earlier attempts sampled too
    return {"dataset": ROLLOUT_FILE, "trajectories": len(trajs), "prompts": summary.prompts,
            "success_rate": summary.success_rate, "mean_turns": summary.mean_turns,
            "compute": {"params": count_params(Path(cfg.model)), "tokens_trained": 0,
                        "tokens_generated": int(sum(t["generated_tokens"] for t in trajs))}}


def validate_rollout(ctx) -> None:
    from postlab.rollout.offline import make_env_factory

    _check_keys(ctx, "data", ctx.spec.get("data"), ())
    try:
        make_env_factory(rollout_stage_config(ctx))
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def drift_stage_config(ctx):
    """The validated DRIFTConfig of a `drift` stage: policy = input 0's checkpoint, data = input 1's
    (a rollout stage sampled from that same checkpoint) trajectory file."""
    from postlab.config import load_config
    from postlab.trainers.drift import DRIFTConfig

    after, stages = ctx.stage.after, ctx.study.stages
    if len(after) != 2 or stages[after[1]].kind != "rollout":
        raise ConfigError(f"stages.{ctx.stage.name}.after: must be [REFERENCE, ROLLOUT]: the checkpoint to train "
                          f"from and the rollout stage that sampled from it; got {after}")
    if stages[after[1]].after[:1] != after[:1]:
        raise ConfigError(f"stages.{ctx.stage.name}.after: the rollout stage {after[1]!r} sampled from "
                          f"{stages[after[1]].after[:1]}, not from {after[0]!r}; DRIFT starts from the reference its "
                          "data came from")
    data = trainer_overrides(ctx, ctx.input_checkpoint(0))
    data.setdefault("data", {})["paths"] = [str(ctx.input_dirs[1] / ctx.inputs[1].get("dataset", ROLLOUT_FILE))]
    try:
        return load_config(DRIFTConfig, base=data)
    except ConfigError as e:
        raise _stage_error(ctx, e) from None


def run_drift(ctx) -> dict:
    """DRIFT from the input checkpoint on the input rollout stage's trajectories (postlab.trainers.drift)."""
    from postlab.trainers.drift import train_drift

    cfg = drift_stage_config(ctx)
    final = train_drift(cfg, resume=_resume(ctx))
    return {**trainer_result(ctx, final), "dataset": cfg.data.paths[0]}


def validate_drift(ctx) -> None:
    from postlab.trainers.drift import validate_eval

    _check_keys(ctx, "data", ctx.spec.get("data"), ())
    cfg = drift_stage_config(ctx)
    if cfg.eval.episodes:
        try:
            validate_eval(cfg.eval)
        except ConfigError as e:
            raise _stage_error(ctx, e) from None


register_stage_kind(StageKind("rollout", run_rollout, validate_rollout,
                              "offline trajectories sampled once from the input checkpoint (postlab.rollout.offline)"))
register_stage_kind(StageKind("drift", run_drift, validate_drift,
                              "DRIFT: importance-weighted SFT on a rollout stage's data (after: [REF, ROLLOUT])"))
