"""Plasticity diagnostics and Rejuvenation (postlab.interventions, docs/interventions.md) as study
stage kinds: diagnose and rejuvenate.

Both take two inputs, `after: [MODEL, BASE]`: the checkpoint to diagnose or rejuvenate and the
base model it was trained from (at lab scale the `pretrain` stage). Their options are the stage's
`config` mapping: diagnose's keyword options (n, tau, hessian_iters, ...) or RejuvenationConfig's
fields (alpha, fraction, scorer, mode, omega, ...). The environment and splits are the stage's own
(`env`, `splits` or `split`, `style`, `env_args`).
"""

from __future__ import annotations

import inspect
import os
import re

from postlab.config import ConfigError
from postlab.studies.compute import count_params
from postlab.studies.stage_common import StageKind, check_keys, check_splits, register_stage_kind

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
    check_keys(ctx, "config", opts, [p for p in inspect.signature(diagnose).parameters if p not in DIAGNOSE_OWNED])
    opts.setdefault("style", ctx.spec.get("style", "compact"))
    if ctx.spec.get("env_args"):
        opts.setdefault("env_args", ctx.spec["env_args"])
    opts.setdefault("seed", ctx.seed)
    return opts


def run_diagnose(ctx) -> dict:
    """Plasticity diagnostics of input 0 against input 1 (the base); the checkpoint passes through."""
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
    from postlab.interventions.diagnostics import diagnose, validate_diagnosis_options

    _check_two_inputs(ctx)
    opts = diagnose_options(ctx)
    check_splits(ctx, _stage_splits(ctx) or [None])
    defaults = {p.name: p.default for p in inspect.signature(diagnose).parameters.values()}
    checked = {k: opts.get(k, defaults[k]) for k in inspect.signature(validate_diagnosis_options).parameters}
    try:
        validate_diagnosis_options(**checked)
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
    check_splits(ctx, _stage_splits(ctx) or [None])
    rejuvenation_config(ctx)


register_stage_kind(StageKind("diagnose", run_diagnose, validate_diagnose,
                              "plasticity diagnostics of a checkpoint vs its base (after: [MODEL, BASE])"))
register_stage_kind(StageKind("rejuvenate", run_rejuvenate, validate_rejuvenate,
                              "Rejuvenation: base-anchored fusion + unit reset (after: [SFT, BASE])"))
