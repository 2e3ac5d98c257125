"""Rejuvenation (Liu et al., "When RL Fails after SFT", arXiv 2606.09932): base-anchored fusion
followed by a targeted reset of a few units, before RL.

    theta_F = alpha * theta_SFT + (1 - alpha) * theta_base                 (fusion.py, all parameters)
    P       = top-N positions by |H_SFT(t) - H_base(t)| on calibration prompts (teacher-forced)
    scores  = DLA of each unit to the chosen-token logits at P             (scoring.py; or dormancy,
                                                                            drift, saturation [recon])
    reset   = top `fraction` of units per layer (or globally):             (reset.py)
              anchored: theta <- omega * theta_base + (1 - omega) * theta_F on those rows/columns
              redo:     fresh incoming weights, zero outgoing weights [recon]

Calibration prompts come from the SFT-expert seed range (`postlab.seeds.expert_seed`): the
task's training problems, never the evaluation problems a study later scores.

`rejuvenate(base, sft, out, ...)` loads both checkpoints, validates everything before it writes
anything, and saves a plain Hugging Face checkpoint (the SFT tokenizer) with
rejuvenation_report.json and rejuvenation_report.md inside. `rejuvenate_models` is the same on
models in memory.

Caveat (reported with the paper): a rejuvenated model starts RL from a lower pre-RL score than
the over-trained one, so compare pre-RL and post-RL accuracy, not only the RL gain.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from postlab.interventions.common import (InterventionError, build_calibration, calibration_records, describe_positions,
                                          entropy_gap, env_splits, load_checkpoint, teacher_forced, top_indices)
from postlab.interventions.diagnostics import parameter_drift
from postlab.interventions.fusion import check_unit_interval, effective_alphas, fuse
from postlab.interventions.reset import anchor_units, init_std, redo_reset
from postlab.interventions.scoring import (NEURON_ONLY_SCORERS, RESETS_HIGH_SCORES, SATURATION_THRESHOLD, SCORERS,
                                           UNIT_KINDS, score_units, select_units)

MODES = ("anchored", "redo")
SCOPES = ("per_layer", "global")
REPORT_FILE = "rejuvenation_report.json"
REPORT_MARKDOWN = "rejuvenation_report.md"
CAVEAT = ("A rejuvenated model starts RL from a lower pre-RL score than the over-trained SFT model: report pre-RL and "
          "post-RL accuracy, not only the RL gain.")


@dataclasses.dataclass
class RejuvenationConfig:
    """Every choice of one Rejuvenation; validated on construction."""

    alpha: float = 0.5  # fusion weight of the SFT model (paper as reported: 0.5, swept 0.40-0.60)
    module_alphas: dict[str, float] = dataclasses.field(default_factory=dict)  # name substring -> alpha [postlab]
    scorer: str = "dla"  # dla (paper as reported) | dormancy | drift | saturation [recon]
    fraction: float = 0.01  # share of scored units reset (paper as reported: 0.5-4%, default 1%); 0: fusion only
    scope: str = "per_layer"  # the fraction applies per decoder layer, or over the whole model
    mode: str = "anchored"  # anchored (paper as reported) | redo [recon]
    omega: float = 1.0  # anchor strength on reset units (not given in the paper; 1 = the base's weights)
    units: str | None = None  # slices | neurons; default: neurons for redo/dormancy/saturation, else slices
    env: str | None = None  # calibration environment (required by dla, dormancy, saturation)
    splits: list[str] | None = None  # calibration splits (default: the env's first split)
    n: int = 32  # calibration prompts per split
    top_positions: int = 64  # N, the entropy-gap positions DLA attributes ([recon] value; N is not reported)
    style: str = "compact"  # prompt style of the env
    env_args: dict = dataclasses.field(default_factory=dict)
    calibration_seed: int = 0  # run seed of the SFT-expert seed range the calibration prompts come from
    micro_batch: int = 8  # calibration sequences per forward pass
    saturation_threshold: float = SATURATION_THRESHOLD
    seed: int = 0  # RNG of ReDo's re-initialization

    def __post_init__(self):
        check_unit_interval("--alpha", self.alpha)
        for key, value in self.module_alphas.items():
            check_unit_interval(f"--alpha-module {key}", value)
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0.0 <= self.fraction < 1.0:
            raise InterventionError(f"--fraction must be in [0, 1) (e.g. 0.01 = 1% of units; 0 = fusion without a "
                                    f"reset), got {self.fraction!r}")
        check_unit_interval("--omega", self.omega)
        for name, value, valid in (("--scorer", self.scorer, SCORERS), ("--scope", self.scope, SCOPES),
                                   ("--mode", self.mode, MODES)):
            if value not in valid:
                raise InterventionError(f"{name}: unknown value {value!r}; valid: {', '.join(valid)}")
        if self.units is not None and self.units not in UNIT_KINDS:
            raise InterventionError(f"--units: unknown value {self.units!r}; valid: {', '.join(UNIT_KINDS)}")
        if self.units == "slices" and (self.mode == "redo" or self.scorer in NEURON_ONLY_SCORERS):
            why = "--mode redo resets whole MLP neurons" if self.mode == "redo" else \
                f"--scorer {self.scorer} scores MLP neurons"
            raise InterventionError(f"--units slices does not fit: {why}; use --units neurons")
        if self.env is None and self.scorer != "drift" and self.fraction > 0:
            raise InterventionError(f"--scorer {self.scorer} needs calibration prompts: pass --env NAME "
                                    "(and optionally --split, --n)")
        if self.n < 1:
            raise InterventionError(f"--n must be >= 1, got {self.n}")
        if self.top_positions < 1:
            raise InterventionError(f"--top-positions must be >= 1, got {self.top_positions}")
        if self.micro_batch < 1:
            raise InterventionError(f"micro_batch must be >= 1, got {self.micro_batch}")

    @property
    def unit_kind(self) -> str:
        if self.units is not None:
            return self.units
        return "neurons" if self.mode == "redo" or self.scorer in NEURON_ONLY_SCORERS else "slices"


def make_config(**options) -> RejuvenationConfig:
    """RejuvenationConfig from keyword options, naming an unknown key and the valid ones."""
    valid = [f.name for f in dataclasses.fields(RejuvenationConfig)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InterventionError(f"rejuvenate: unknown option {unknown[0]!r}; valid: {', '.join(valid)}.{hint}")
    return RejuvenationConfig(**options)


# ----------------------------------------------------------------------------- in memory


def _entropy_summary(stats, positions: torch.Tensor, target_split: list[str]) -> dict:
    per_split: dict[str, list[float]] = {}
    for split, h in zip(target_split, stats.entropy.tolist()):
        per_split.setdefault(split, []).append(h)
    return {"mean": float(stats.entropy.mean()), "max_prob_mean": float(stats.max_prob.mean()),
            "top_positions_mean": float(stats.entropy[positions].mean()),
            "per_split": {s: sum(v) / len(v) for s, v in per_split.items()}}


def _counts(units) -> tuple[dict, dict]:
    per_layer: dict[str, dict[str, int]] = {}
    per_module: dict[str, int] = {}
    for unit in units:
        row = per_layer.setdefault(str(unit.layer), {})
        row[unit.module] = row.get(unit.module, 0) + 1
        per_module[unit.module] = per_module.get(unit.module, 0) + 1
    return per_layer, per_module


def _drift_summary(model, base) -> dict:
    drift = parameter_drift(model, base)
    return {"total": drift["total"], "per_module": drift["per_module"], "per_layer": drift["per_layer"]}


def rejuvenate_models(base, sft, tokenizer, config: RejuvenationConfig) -> tuple[torch.nn.Module, dict]:
    """(rejuvenated model, report). `base` and `sft` are left unchanged."""
    base.eval()
    sft.eval()
    model = fuse(base, sft, config.alpha, config.module_alphas).eval()  # checks shapes and alphas first
    report: dict = {"config": dataclasses.asdict(config), "units": config.unit_kind,
                    "fusion": {"alpha": config.alpha, "module_alphas": config.module_alphas,
                               "overridden": {k: a for k, a in effective_alphas(model, config.alpha,
                                                                                config.module_alphas).items()
                                              if a != config.alpha}}}
    calibration, positions, stats = None, None, {}
    if config.env is not None:
        from postlab.seeds import expert_seed

        splits = env_splits(config.env, config.splits)
        records = calibration_records(config.env, splits, config.n, lambda i: expert_seed(config.calibration_seed, i),
                                      config.style, config.env_args)
        calibration = build_calibration(tokenizer, records, config.micro_batch)
        stats = {who: teacher_forced(m, calibration) for who, m in (("base", base), ("sft", sft), ("fused", model))}
        gap = entropy_gap(stats["sft"].entropy, stats["base"].entropy)
        positions = top_indices(gap, config.top_positions)
        report["calibration"] = {
            "env": config.env, "splits": splits, "n": config.n, "n_positions": calibration.num_targets,
            "prompt_seeds": f"postlab.seeds.expert_seed({config.calibration_seed}, 0..{config.n - 1})",
            "gap_mean": float(gap.mean()),
            "top_positions": describe_positions(calibration, tokenizer, positions,
                                                {"gap": gap, "h_sft": stats["sft"].entropy,
                                                 "h_base": stats["base"].entropy})}
    drift_before = {"sft": _drift_summary(sft, base), "fused": _drift_summary(model, base)}

    # fraction 0: fusion without a reset (an ablation of the paper), so nothing to score
    scores = {} if config.fraction == 0 else score_units(
        config.scorer, config.unit_kind, model, base=base, calibration=calibration, chosen=positions,
        saturation_threshold=config.saturation_threshold)
    chosen = select_units(scores, config.fraction, config.scope, high_first=RESETS_HIGH_SCORES[config.scorer])
    units = [u for u, _ in chosen]
    if config.mode == "anchored":
        anchor_units(model, base, units, config.omega)
    else:
        redo_reset(model, units, init_std(model), config.seed)

    per_layer, per_module = _counts(units)
    report["reset"] = {"mode": config.mode, "scorer": config.scorer, "scope": config.scope,
                       "fraction": config.fraction, "omega": config.omega if config.mode == "anchored" else None,
                       "scored_units": sum(s.numel() for s in scores.values()), "reset_units": len(units),
                       "per_layer": per_layer, "per_module": per_module,
                       "units": [[u.layer, u.module, u.index, round(score, 8)] for u, score in chosen]}
    report["drift"] = {**drift_before, "rejuvenated": _drift_summary(model, base)}
    if calibration is not None:
        stats["rejuvenated"] = teacher_forced(model, calibration)
        report["entropy"] = {who: _entropy_summary(s, positions, calibration.target_split) for who, s in stats.items()}
    else:
        report["entropy"] = None
    report["caveat"] = CAVEAT
    return model, report


# ----------------------------------------------------------------------------- on disk


def check_not_an_input(out: Path, inputs: dict[str, str | Path]) -> None:
    """Refuse an output that is one of the inputs, lies inside one or holds one: writing it (even with
    --force) would replace the checkpoint being read."""
    target = Path(out).resolve()
    for flag, path in inputs.items():
        source = Path(path).resolve()
        if target == source or source in target.parents or target in source.parents:
            relation = "is" if target == source else "lies inside" if source in target.parents else "holds"
            raise InterventionError(f"--out {out} {relation} the input {flag} {path}; writing there would replace the "
                                    "checkpoint being read (with or without --force). Pick another --out")


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to replace a checkpoint (unless force) or a directory holding anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InterventionError(f"--out {out}: exists and is not a directory; pick another path")
    entries = list(out.iterdir())
    if not entries:
        return
    is_checkpoint = (out / "config.json").exists() or any(out.glob("*.safetensors"))
    if not is_checkpoint:
        raise InterventionError(f"--out {out}: not empty and not a checkpoint; writing would replace it. Pick a new "
                                "or empty directory")
    if not force:
        raise InterventionError(f"--out {out}: already holds a checkpoint; pass --force to replace it, or pick "
                                "another directory")


def rejuvenate(base: str | Path, sft: str | Path, out: str | Path, *, force: bool = False, device: str = "auto",
               dtype: str = "float32", config: RejuvenationConfig | None = None, **options) -> dict:
    """Rejuvenate checkpoint `sft` against `base` and save the result to `out`.

    Options are RejuvenationConfig fields (alpha, module_alphas, scorer, fraction, scope, mode,
    omega, units, env, splits, n, top_positions, ...), or pass a ready `config`. Returns the
    report (also written as out/rejuvenation_report.json), with "checkpoint": str(out).
    """
    from postlab.models.io import load_tokenizer, pick_device, save_pretrained_atomic

    if config is not None and options:
        raise InterventionError("rejuvenate: pass either config= or keyword options, not both")
    config = config or make_config(**options)
    out = Path(out)
    check_not_an_input(out, {"--base": base, "--sft": sft})
    check_output_dir(out, force)
    torch_device = pick_device(device)
    base_model = load_checkpoint(base, "--base", dtype, torch_device)
    sft_model = load_checkpoint(sft, "--sft", dtype, torch_device)
    tokenizer = load_tokenizer(str(sft))
    model, report = rejuvenate_models(base_model, sft_model, tokenizer, config)
    report = {"base": str(base), "sft": str(sft), "checkpoint": str(out), **report}
    save_pretrained_atomic(model, tokenizer, out, extra_files={
        REPORT_FILE: json.dumps(report, indent=2).encode(), REPORT_MARKDOWN: report_markdown(report).encode()})
    return report


def report_markdown(report: dict) -> str:
    """A short human summary of the report."""
    cfg, reset = report["config"], report["reset"]
    lines = [f"# Rejuvenation of `{report.get('sft', '?')}`", "",
             f"Base `{report.get('base', '?')}`; fusion alpha {cfg['alpha']}"
             + (f" (overrides {cfg['module_alphas']})" if cfg["module_alphas"] else "") + "; "
             f"reset {reset['reset_units']} of {reset['scored_units']} {report['units']} "
             f"({cfg['fraction']:.2%} {cfg['scope']}) scored by {cfg['scorer']}, mode {cfg['mode']}"
             + (f" (omega {cfg['omega']})" if cfg["mode"] == "anchored" else "") + ".", "",
             "| module | units reset |", "|---|---:|"]
    lines += [f"| {m} | {c} |" for m, c in sorted(reset["per_module"].items())]
    lines += ["", "| | drift from base | entropy (calibration) | entropy (top-gap positions) |", "|---|---:|---:|---:|"]
    for who in ("base", "sft", "fused", "rejuvenated"):
        drift = 0.0 if who == "base" else report["drift"][who]["total"]
        entropy = (report.get("entropy") or {}).get(who)
        h = f"{entropy['mean']:.4f}" if entropy else "-"
        top = f"{entropy['top_positions_mean']:.4f}" if entropy else "-"
        lines.append(f"| {who} | {'-' if drift is None else f'{drift:.4f}'} | {h} | {top} |")
    per_layer = ", ".join(f"L{layer}: " + " ".join(f"{m}={c}" for m, c in sorted(mods.items()))
                          for layer, mods in sorted(reset["per_layer"].items(), key=lambda kv: int(kv[0])))
    lines += ["", f"Per layer: {per_layer}.", "", f"Caveat: {report['caveat']}", ""]
    return "\n".join(lines)
