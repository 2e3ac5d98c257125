"""Adapter from a study's `rl` stage to `postlab.trainers.rl` (RLConfig, train_rl).

The stage's ``config`` is passed through as RLConfig overrides; the adapter fills what the
study owns: the input checkpoint (model.path), the run directory, the seed, per-step logging,
and the environment (name, split, style, max_turns, env_args) when RLConfig has an ``env``
section with those fields and the stage's config does not set them itself.
"""

from __future__ import annotations

import copy
import dataclasses
import typing

from postlab.config import ConfigError, load_config


def _env_fields(cls) -> dict[str, set[str]]:
    """section name -> field names, for RLConfig dataclass sections that look like an env section."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name)
        if dataclasses.is_dataclass(tp):
            names = {g.name for g in dataclasses.fields(tp)}
            if f.name == "env" or {"name", "split"} <= names:
                out[f.name] = names
    return out


def train_rl_stage(ctx):
    try:
        from postlab.trainers.rl import RLConfig, train_rl
    except ModuleNotFoundError as e:
        raise ConfigError("stage kind 'rl' needs postlab.trainers.rl, which is not available in this build") from e
    spec = ctx.spec
    data = copy.deepcopy(spec.get("config") or {})
    run = data.setdefault("run", {})
    run["out_dir"] = str(ctx.run_dir)
    run.setdefault("seed", ctx.seed)
    run["log_every"] = 1
    run.setdefault("keep_checkpoints", 1000)
    model = data.setdefault("model", {})
    model["path"], model["preset"] = str(ctx.input_checkpoint(0)), None
    sections = _env_fields(RLConfig)
    if "env" in sections:
        env = data.setdefault("env", {})
        names = sections["env"]
        wanted = {"name": spec.get("env"), "split": spec.get("split", "id"), "style": spec.get("style"),
                  "max_turns": spec.get("max_turns"), "verify_iter": spec.get("max_turns"),
                  "args": spec.get("env_args"), "env_args": spec.get("env_args"), "kwargs": spec.get("env_args")}
        for k, v in wanted.items():
            if k in names and v is not None and k not in env:
                env[k] = v
    cfg = load_config(RLConfig, base=data)
    resume = str(ctx.run_dir) if ctx.run_dir.exists() else None
    return train_rl(cfg, resume=resume)
