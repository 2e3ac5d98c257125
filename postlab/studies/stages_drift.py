"""DRIFT (postlab.trainers.drift) as two stage kinds: a `rollout` stage samples the offline dataset
ONCE from its input checkpoint (the fixed reference; postlab.rollout.offline), a `drift` stage
trains from that same checkpoint on it (`after: [REF, ROLLOUT]`). The method's cost is the two
stages' sum.
"""

from __future__ import annotations

import copy
from pathlib import Path

from postlab.config import ConfigError
from postlab.studies.compute import count_params
from postlab.studies.stage_common import (StageKind, check_keys, register_stage_kind, resume_dir, stage_error,
                                          trainer_overrides, trainer_result)

ROLLOUT_FILE = "trajectories.jsonl"  # in the rollout stage's directory


def rollout_stage_config(ctx):
    """The validated RolloutJobConfig of a `rollout` stage: its `config` (n_prompts, samples_per_prompt,
    temperature, max_new_tokens, batch_size, ...) with what the study owns: the input checkpoint as
    the reference, the output file, the seed, and the stage's environment (env, split, style, env_args,
    max_turns: the same env section the RL and eval stages fill)."""
    from postlab.config import load_config
    from postlab.rollout.offline import RolloutJobConfig

    spec = ctx.spec
    data = copy.deepcopy(spec.get("config") or {})
    owned = sorted({"model", "out", "seed", "env"} & set(data))
    if owned:
        raise ConfigError(f"stages.{ctx.stage.name}.config: {owned} are set by the study (input checkpoint, stage "
                          "directory, seed, and the stage's env / env_args / split / style / max_turns); remove them")
    env = {"name": spec["env"], "split": spec.get("split", "id"), "style": spec.get("style", "compact"),
           "kwargs": dict(spec.get("env_args") or {}), "max_turns": spec.get("max_turns")}
    data.update(model=str(ctx.input_checkpoint(0)), out=str(ctx.path / ROLLOUT_FILE), seed=ctx.seed, env=env)
    data.setdefault("progress", True)
    try:
        return load_config(RolloutJobConfig, base=data)
    except ConfigError as e:
        raise stage_error(ctx, e) from None


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

    check_keys(ctx, "data", ctx.spec.get("data"), ())
    try:
        make_env_factory(rollout_stage_config(ctx))
    except ConfigError as e:
        raise stage_error(ctx, e) from None


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
        raise stage_error(ctx, e) from None


def run_drift(ctx) -> dict:
    """DRIFT from the input checkpoint on the input rollout stage's trajectories (postlab.trainers.drift)."""
    from postlab.trainers.drift import train_drift

    cfg = drift_stage_config(ctx)
    final = train_drift(cfg, resume=resume_dir(ctx))
    return {**trainer_result(ctx, final), "dataset": cfg.data.paths[0]}


def validate_drift(ctx) -> None:
    from postlab.trainers.envsection import validate_env

    check_keys(ctx, "data", ctx.spec.get("data"), ())
    cfg = drift_stage_config(ctx)
    if cfg.env.eval_splits:
        try:
            validate_env(cfg.env)
        except ConfigError as e:
            raise stage_error(ctx, e) from None


register_stage_kind(StageKind("rollout", run_rollout, validate_rollout,
                              "offline trajectories sampled once from the input checkpoint (postlab.rollout.offline)"))
register_stage_kind(StageKind("drift", run_drift, validate_drift,
                              "DRIFT: importance-weighted SFT on a rollout stage's data (after: [REF, ROLLOUT])"))
