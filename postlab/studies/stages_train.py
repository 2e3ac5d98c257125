"""The training stage kinds: pretrain (base corpus -> tiny model from scratch), sft (expert
demonstrations), rl (postlab.trainers.rl on the environment) and rl-probe (short RL runs over a
grid that choose an rl stage's budget on training problems; postlab.studies.probe).

Each builds its trainer's config from the stage's `config` with what the study owns filled in
(`trainer_overrides`: run directory, seed, input checkpoint) and resumes an interrupted run.
"""

from __future__ import annotations

import os

from postlab.config import ConfigError
from postlab.objectives.algorithms import ALGORITHMS, get_algorithm
from postlab.progress import console
from postlab.seeds import corpus_generator_seed
from postlab.studies.compute import count_params
from postlab.studies.probe import apply_choice, probe_config, probe_options, run_probes, settings, training_gain
from postlab.studies.stage_common import (StageKind, base_corpus_records, base_mix_records, check_keys, check_splits,
                                          expert_records, fill_stage_env, register_stage_kind, resume_dir, stage_error,
                                          trainer_config, trainer_overrides, trainer_result)


# ----------------------------------------------------------------------------- the RL config of a stage


def rl_stage_data(ctx) -> dict:
    """An `rl` (or `rl-probe`) stage's RL config mapping: the stage's `config` with what the study owns
    (input checkpoint, run directory, seed), the stage's environment unless its config sets its own,
    the probe's chosen setting for an rl stage fed by a probe (``after: [START, PROBE]``) and the
    teacher of a distillation stage (``after: [START, TEACHER]``; both: ``[START, TEACHER, PROBE]``)."""
    data = trainer_overrides(ctx, ctx.input_checkpoint(0))
    fill_stage_env(ctx, data)
    probe = _probe_input(ctx)
    if probe is not None:
        apply_choice(data, probe)
    teacher = _teacher_input(ctx, data)
    if teacher is not None:
        data.setdefault("teacher", teacher)
    return data


def _rl_inputs(ctx) -> tuple[int | None, int | None]:
    """Where an rl stage's teacher and probe are among its inputs (indices into ``after``, None if absent).
    After START come an optional TEACHER (any checkpoint stage) and an optional PROBE (an rl-probe run
    from START), in that order: [START], [START, PROBE], [START, TEACHER], [START, TEACHER, PROBE]."""
    kinds = [ctx.study.stages[name].kind for name in ctx.stage.after]
    has_probe = len(kinds) > 1 and kinds[-1] == "rl-probe"
    between = kinds[1:len(kinds) - has_probe]  # what sits between START and the PROBE: at most one TEACHER
    if kinds[0] == "rl-probe" or len(between) > 1 or "rl-probe" in between:
        raise ConfigError(f"stages.{ctx.stage.name}.after: an rl stage takes [START], [START, PROBE], [START, TEACHER] "
                          f"or [START, TEACHER, PROBE] (the probe an rl-probe stage run from START); "
                          f"got {ctx.stage.after}")
    return (1 if between else None), (len(kinds) - 1 if has_probe else None)


def _teacher_input(ctx, data: dict) -> str | None:
    """On-policy distillation's teacher (opd, gkd): the checkpoint of the stage's TEACHER input (``after:
    [START, TEACHER(, PROBE)]``, e.g. a larger model trained on the task); None for other algorithms."""
    algorithm = data.get("algorithm", "grpo")
    if data.get("teacher") or algorithm not in ALGORITHMS or not get_algorithm(algorithm).needs_teacher:
        return None  # an unknown algorithm: RLConfig's validation names it
    teacher, _ = _rl_inputs(ctx)
    if teacher is None:
        raise ConfigError(f"stages.{ctx.stage.name}.after: a {algorithm} stage distills from a teacher: after: [START, "
                          f"TEACHER] or [START, TEACHER, PROBE] (the teacher a training stage's checkpoint), or "
                          f"config.teacher: PATH; got {ctx.stage.after}")
    return str(ctx.input_checkpoint(teacher))


def _probe_input(ctx) -> dict | None:
    """The result of the stage's `rl-probe` input (the last of ``after``), or None without one."""
    if ctx.stage.kind != "rl":
        if any(ctx.study.stages[name].kind == "rl-probe" for name in ctx.stage.after):
            raise ConfigError(f"stages.{ctx.stage.name}.after: only an rl stage takes a probe; got {ctx.stage.after}")
        return None
    _, probe = _rl_inputs(ctx)
    if probe is None:
        return None
    probe_name = ctx.stage.after[probe]
    probe_start = ctx.study.stages[probe_name].after[:1]
    if probe_start != ctx.stage.after[:1]:
        raise ConfigError(f"stages.{ctx.stage.name}.after: the probe {probe_name!r} ran from {probe_start}, "
                          f"not from {ctx.stage.after[0]!r}; a budget is chosen for the checkpoint RL starts from")
    return ctx.inputs[probe] if len(ctx.inputs) > probe else {}


def rl_stage_config(ctx):
    """The validated RLConfig of an `rl` stage (`rl_stage_data`)."""
    from postlab.config import load_config
    from postlab.trainers.rl import RLConfig

    return load_config(RLConfig, base=rl_stage_data(ctx))


# ----------------------------------------------------------------------------- the kinds


def run_pretrain(ctx) -> dict:
    """Pre-train a tiny model from scratch on the environment's base corpus (lab scale)."""
    from postlab.trainers.sft import SFTConfig, train_sft

    data = ctx.spec.get("data") or {}
    records = base_corpus_records(ctx.spec, int(data.get("n", 10_000)),
                                  seed=int(data.get("seed", 0)) + corpus_generator_seed(ctx.seed, "pretrain"))
    cfg = trainer_config(ctx, SFTConfig, None)
    final = train_sft(cfg, records, resume=resume_dir(ctx))
    return trainer_result(ctx, final)


def validate_pretrain(ctx) -> None:
    from postlab.trainers.sft import SFTConfig

    check_keys(ctx, "data", ctx.spec.get("data"), ("n", "seed"))
    check_splits(ctx, [None])
    try:
        trainer_config(ctx, SFTConfig, None)
    except ConfigError as e:
        raise stage_error(ctx, e) from None


def run_sft(ctx) -> dict:
    """SFT from the input checkpoint on expert demonstrations of `split` (default id)."""
    from postlab.trainers.sft import SFTConfig, train_sft

    data = ctx.spec.get("data") or {}
    split = ctx.spec.get("split", "id")
    records = []
    for sp in split if isinstance(split, list) else [split]:  # a list mixes several splits
        records += expert_records(ctx.spec, sp, int(data.get("n", 1000)), seed=ctx.seed)
    records += base_mix_records(ctx.spec, len(records), data.get("base_mix", 0.0), seed=ctx.seed)
    if isinstance(split, list) or data.get("base_mix"):
        import random

        random.Random(ctx.seed).shuffle(records)
    holdout = int(data.get("eval_holdout", 0))
    train, heldout = (records[holdout:], records[:holdout]) if holdout else (records, None)
    cfg = trainer_config(ctx, SFTConfig, ctx.input_checkpoint(0))
    final = train_sft(cfg, train, heldout, resume=resume_dir(ctx))
    return trainer_result(ctx, final)


def validate_sft(ctx) -> None:
    from postlab.trainers.sft import SFTConfig

    data = ctx.spec.get("data") or {}
    check_keys(ctx, "data", data, ("n", "eval_holdout", "base_mix"))
    if not 0.0 <= float(data.get("base_mix") or 0.0) < 1.0:
        raise ConfigError(f"stages.{ctx.stage.name}.data.base_mix must be in [0, 1), got {data['base_mix']}")
    split = ctx.spec.get("split", "id")
    check_splits(ctx, split if isinstance(split, list) else [split])
    try:
        trainer_config(ctx, SFTConfig, ctx.input_checkpoint(0))
    except ConfigError as e:
        raise stage_error(ctx, e) from None


def run_rl(ctx) -> dict:
    """RL from the input checkpoint on the environment (postlab.trainers.rl). Fed by a probe that found no
    group with a success (the gate), an algorithm whose only signal is its rewards trains nothing: its result
    is the start checkpoint, marked skipped; one that learns beyond its rewards (expert traces, hints, a
    teacher) runs anyway, at its config's lr (the probe chose none)."""
    from postlab.trainers.rl import train_rl

    probe = _probe_input(ctx)
    gated = probe is not None and probe.get("skip")
    if gated and _learns_beyond_reward(ctx):  # LUFFY's traces, UFT's hints, a teacher: signal the gate cannot see
        console.print(f"[yellow]{ctx.stage.name}: the probe found no group with a success ({probe.get('reason')}); "
                      f"this algorithm learns from more than its rewards, so it runs at its config's lr[/yellow]")
    elif gated:
        console.print(f"[yellow]{ctx.stage.name}: RL skipped: {probe.get('reason')}[/yellow]")
        start = ctx.input_checkpoint(0)
        return {"checkpoint": os.path.relpath(start, ctx.path), "checkpoints": [], "steps": 0,
                "skipped": probe.get("reason"), "start": os.path.relpath(start, ctx.path),
                "compute": {"params": count_params(start), "tokens_trained": 0, "tokens_generated": 0}}
    cfg = rl_stage_config(ctx)
    final = train_rl(cfg, resume=resume_dir(ctx))
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


def _learns_beyond_reward(ctx) -> bool:
    algorithm = rl_stage_data(ctx).get("algorithm", "grpo")
    return algorithm in ALGORITHMS and get_algorithm(algorithm).learns_beyond_reward


def validate_rl(ctx) -> None:
    from postlab.trainers.envsection import validate_env

    try:
        validate_env(rl_stage_config(ctx).env)
    except ConfigError as e:
        raise stage_error(ctx, e) from None


def run_rl_probe(ctx) -> dict:
    """Short RL probes over a grid from the input checkpoint, on training problems only (postlab.studies.probe)."""
    opts = probe_options(ctx.spec.get("probe"), f"stages.{ctx.stage.name}.probe")
    result = run_probes(ctx.path, rl_stage_data(ctx), opts)
    result["compute"] = {"params": count_params(ctx.input_checkpoint(0)), "tokens_trained": result["tokens_trained"],
                         "tokens_generated": result["tokens_generated"]}
    return result


def validate_rl_probe(ctx) -> None:
    from postlab.trainers.envsection import validate_env

    opts = probe_options(ctx.spec.get("probe"), f"stages.{ctx.stage.name}.probe")
    data = rl_stage_data(ctx)
    for setting in settings(opts["grid"]):
        try:
            validate_env(probe_config(data, setting, opts["steps"], ctx.run_dir).env)
        except ConfigError as e:
            raise ConfigError(f"stages.{ctx.stage.name} (rl-probe), setting {setting}: {e}") from None


register_stage_kind(StageKind("pretrain", run_pretrain, validate_pretrain, "base corpus -> tiny model from scratch"))
register_stage_kind(StageKind("sft", run_sft, validate_sft, "SFT on expert demonstrations of `split`"))
register_stage_kind(StageKind("rl", run_rl, validate_rl, "RL on the environment (postlab.trainers.rl)"))
register_stage_kind(StageKind("rl-probe", run_rl_probe, validate_rl_probe,
                              "short RL probes over a grid on training problems; an rl stage after [START, PROBE] "
                              "takes the setting whose training success rose most (postlab.studies.probe)"))
