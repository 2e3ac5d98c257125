"""Adapter from a study's `rl` stage to `postlab.trainers.rl` (RLConfig, train_rl).

The stage's ``config`` is passed through as RLConfig overrides; the adapter fills what the
study owns: the input checkpoint (model.path), the run directory, the seed, per-step logging,
and the environment (name, split, style, max_turns, env_args) unless the stage's config sets
them itself.
"""

from __future__ import annotations

from postlab.config import load_config


def train_rl_stage(ctx):
    from postlab.studies.kinds import _resume
    from postlab.trainers.rl import train_rl

    return train_rl(rl_stage_config(ctx), resume=_resume(ctx))


def rl_stage_config(ctx):
    """The validated RLConfig of an `rl` stage (what `train_rl_stage` trains with)."""
    from postlab.studies.kinds import trainer_overrides
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
