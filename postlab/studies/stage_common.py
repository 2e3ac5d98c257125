"""What every study stage kind shares: the `StageKind` record and its registry, the stage's
environment and data (base corpus, expert demonstrations), trainer config and result helpers, and
the validation helpers whose errors name the stage and key.

A `StageKind` pairs `run(ctx) -> result dict` with `validate(ctx)`, which builds and checks
everything the stage will use (trainer config, environment and splits, `data:` and `eval:`
keys) without training anything. The kinds themselves live in the `stages_*` modules;
`postlab.studies.kinds` imports them all, so importing it gives the full registry.

Seeds: every problem seed comes from `postlab.seeds` (expert demonstrations, the RL range,
corpus episodes, evaluation), whose named ranges are disjoint by construction.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from postlab.config import ConfigError, suggest
from postlab.naming import Registry
from postlab.seeds import corpus_generator_seed, expert_seed
from postlab.studies.compute import count_params, cumulative_tokens, flops


def write_json_atomic(path: Path, data) -> None:
    """Write JSON so a reader (or a resumed stage) sees the old file or the new one, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class StageKind:
    name: str
    run: Callable  # run(ctx) -> result dict
    validate: Callable  # validate(ctx) -> None; raises ConfigError naming the stage and key
    doc: str = ""
    # it reads its input's start model too (an evaluation measures drift from it): only then does a runner
    # rebuild that start when an archive left it out
    reads_start: bool = False


STAGE_KINDS: Registry = Registry("stage kind")


def register_stage_kind(kind: StageKind) -> StageKind:
    """Add a stage kind under its name; a name already taken (a built-in) is an error, not a replacement."""
    return STAGE_KINDS.add(kind.name, kind)


# ----------------------------------------------------------------------------- data and trainer helpers


def stage_env(spec: dict, split: str | None = None, max_turns: int | None = None):
    """The stage's environment (its `env`, `env_args`, `style` and `max_turns`) on `split`."""
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
    env = stage_env(spec)
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

    env = stage_env(spec, split=split)
    return [{"messages": expert_dialogue(env, expert_seed(seed, i), max_steps)} for i in range(n)]


def trainer_result(ctx, final: Path) -> dict:
    """A trainer stage's result: the final checkpoint, every saved point with its cumulative compute
    (eval stages with ``points: all`` evaluate them), and the checkpoint it started from."""
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


def trainer_config(ctx, cls, model_path: Path | None):
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


def resume_dir(ctx) -> str | None:
    """The stage's run directory when an interrupted attempt left a run there (resume it)."""
    from postlab.trainers.loop import holds_run

    return str(ctx.run_dir) if (ctx.run_dir / "config.yaml").exists() and holds_run(ctx.run_dir) else None


def check_keys(ctx, field: str, given: dict, valid) -> None:
    """Every key of the stage's `field` mapping must be one of `valid`."""
    for key in given or {}:
        if key not in valid:
            raise ConfigError(f"stages.{ctx.stage.name}.{field}.{key}: unknown key.{suggest(key, list(valid))} "
                              f"Valid for a {ctx.stage.kind} stage: {', '.join(valid)}")


def check_splits(ctx, splits: list[str]) -> None:
    """Each split must exist for the stage's environment (built once, as the stage would)."""
    for split in splits:
        try:
            stage_env(ctx.spec, split=split)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"stages.{ctx.stage.name}: {e}") from None


def stage_error(ctx, e: Exception) -> ConfigError:
    """A trainer config's error (which names the key) prefixed with the stage it belongs to."""
    return ConfigError(f"stages.{ctx.stage.name} ({ctx.stage.kind}): {e}")


def fill_stage_env(ctx, data: dict) -> dict:
    """Fill the stage's environment (env, split, style, env_args, max_turns) into the `env` section of
    trainer config mapping `data`, key by key where the config does not set its own, and return `data`.
    The trainer's own periodic eval runs on the training split: split names are per environment
    (biographies has no 'id'), and the study's eval stages do the ID/OOD evaluation."""
    spec = ctx.spec
    split = spec.get("split", "id")
    env = data.setdefault("env", {})
    wanted = {"name": spec.get("env"), "split": split, "style": spec.get("style"), "kwargs": spec.get("env_args"),
              "max_turns": spec.get("max_turns"), "eval_splits": [split]}
    for key, value in wanted.items():
        if value is not None:
            env.setdefault(key, value)
    return data
