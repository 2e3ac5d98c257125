"""The stage kinds whose trainers verify answers with the environment: rasft (rollout-adaptive
SFT, postlab.trainers.rasft) and rft (rejection-sampling fine-tuning, postlab.trainers.rft).

Their validation builds the trainer config and the environment and checks that it has a verifier
(check_answer, expert_answer). The SFT variants RASFT is compared with are plain `sft` stages
(`config.objective`: nll, dft, asft, sft_kl, profit); GRPO is an `rl` stage.
"""

from __future__ import annotations

from postlab.config import ConfigError
from postlab.seeds import expert_seed
from postlab.studies.stage_common import (StageKind, check_keys, expert_records, fill_stage_env, register_stage_kind,
                                          resume_dir, stage_error, trainer_overrides, trainer_result)


def rasft_stage_config(ctx):
    """The validated RASFTConfig of a `rasft` stage (input checkpoint = policy and frozen reference)."""
    from postlab.config import load_config
    from postlab.trainers.rasft import RASFTConfig

    return load_config(RASFTConfig, base=fill_stage_env(ctx, trainer_overrides(ctx, ctx.input_checkpoint(0))))


def rft_stage_config(ctx):
    """The validated RFTConfig of an `rft` stage."""
    from postlab.config import load_config
    from postlab.trainers.rft import RFTConfig

    return load_config(RFTConfig, base=fill_stage_env(ctx, trainer_overrides(ctx, ctx.input_checkpoint(0))))


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

    final = train_rasft(rasft_stage_config(ctx), rasft_items(ctx), resume=resume_dir(ctx))
    return trainer_result(ctx, final)


def run_rft(ctx) -> dict:
    """Rejection-sampling fine-tuning from the input checkpoint on the environment (postlab.trainers.rft)."""
    from postlab.trainers.rft import train_rft

    final = train_rft(rft_stage_config(ctx), resume=resume_dir(ctx))
    return trainer_result(ctx, final)


def validate_rasft(ctx) -> None:
    from postlab.trainers.envsection import validate_env

    check_keys(ctx, "data", ctx.spec.get("data"), ("n",))
    try:
        validate_env(rasft_stage_config(ctx).env, "a rasft stage")
    except ConfigError as e:
        raise stage_error(ctx, e) from None


def validate_rft(ctx) -> None:
    from postlab.trainers.envsection import validate_env

    check_keys(ctx, "data", ctx.spec.get("data"), ())
    try:
        validate_env(rft_stage_config(ctx).env, "an rft stage")
    except ConfigError as e:
        raise stage_error(ctx, e) from None


register_stage_kind(StageKind("rasft", run_rasft, validate_rasft,
                              "rollout-adaptive SFT on expert demonstrations of `split` (postlab.trainers.rasft)"))
register_stage_kind(StageKind("rft", run_rft, validate_rft,
                              "rejection-sampling fine-tuning on the environment (postlab.trainers.rft)"))
