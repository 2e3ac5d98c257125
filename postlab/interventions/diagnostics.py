"""Plasticity diagnostics: why RL gains little after too much SFT (Liu et al., arXiv 2606.09932).

`diagnose(ckpt, base, env, splits, n)` compares an SFT checkpoint with its base model on an
environment's evaluation prompts (seeds `postlab.seeds.eval_seed(i)`), teacher-forced on the
expert's first answer, and measures at the expert response positions:

- token entropy H_t = -sum_v p_t(v) log p_t(v) and max probability max_v p_t(v) (over-confidence);
- parameter drift ||theta - theta_0|| / ||theta_0|| (Frobenius), in total, per decoder layer, per
  module type and per layer x module (groups: sqrt(sum ||delta||^2) / sqrt(sum ||theta_0||^2));
- dormant-neuron ratio: ReDo scores s_i = E|h_i| / mean_k E|h_k| of the MLP activations
  h = act_fn(gate) * up over every calibration token; dormant if s_i <= tau (default 0.025, see
  DORMANT_TAU);
- sharpness [recon]: the top Hessian eigenvalue of the SFT loss (token-mean NLL on the expert
  responses) by power iteration on Hessian-vector products (double backward; fixed seed, at most
  `hessian_iters` iterations, stop when the Rayleigh quotient changes by <= tol relative), and
  the mean loss rise under random weight perturbations: each parameter tensor theta_k gets
  Gaussian noise rescaled to norm eps * ||theta_k||, averaged over `perturb_samples` draws;
- effective rank [recon] of the final hidden features (after the final norm, the lm_head's
  input) at the response positions: exp(-sum_k p_k log p_k), p_k = sigma_k / sum_j sigma_j over
  the singular values (Roy & Vetterli, 2007);
- the per-position entropy gap |H_ckpt(t) - H_base(t)|: its mean and the top-N positions.

Sharpness needs double backward, which PyTorch's fused attention kernels lack, so diagnose loads
both models with eager attention.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from postlab.data.batching import PackedBatch, pack, split_micro_batches
from postlab.interventions.common import (Calibration, InterventionError, TeacherForced, build_calibration,
                                          calibration_records, describe_positions, entropy_gap, env_splits, layer_of,
                                          load_checkpoint, model_device, module_type, teacher_forced, top_indices)
from postlab.interventions.fusion import check_compatible
from postlab.interventions.scoring import dormant_ratio, mlp_activation_stats

# ReDo (Sokar et al., ICML 2023) defines tau-dormant neurons by s_i <= tau. Its analyses count
# tau = 0 (strictly inactive ReLU units; also the reference code's default threshold) and its
# recycling runs use tau = 0.025 (0.1 in some settings), as the hyper-parameter table is reported
# by public reimplementations. SwiGLU neurons are almost never exactly 0, so tau = 0 would
# report ~0% here; postlab uses 0.025: a neuron whose mean |activation| is under 2.5% of its
# layer's average.
DORMANT_TAU = 0.025
# Relative size of the random weight perturbation. 1e-3 moves the loss by less than float32
# resolves on tiny models; 1e-2 gives a measurable, still local, rise.
PERTURB_EPS = 1e-2

MODEL_KEYS = ("entropy_mean", "max_prob_mean", "sft_loss", "dormant_ratio", "dormant_ratio_per_layer",
              "effective_rank", "hessian_top_eigenvalue", "hessian_iterations", "hessian_converged",
              "perturbation_loss_rise", "perturbation_loss_rise_std")
SPLIT_KEYS = ("n_prompts", "n_positions", "checkpoint", "base", "entropy_gap")
GAP_KEYS = ("mean", "max", "top")
DRIFT_KEYS = ("total", "per_layer", "per_module", "per_layer_module", "per_parameter")
RESULT_KEYS = ("checkpoint", "base", "env", "splits", "n", "settings", "drift", "per_split", "files")


# ----------------------------------------------------------------------------- parameter drift


def _relative(delta_sq: float, base_sq: float) -> float | None:
    """sqrt(delta_sq / base_sq); None where the base tensor is zero (e.g. zero-initialized biases)."""
    if base_sq > 0:
        return math.sqrt(delta_sq / base_sq)
    return 0.0 if delta_sq == 0 else None


@torch.no_grad()
def parameter_drift(model, base) -> dict:
    """Relative Frobenius drift ||theta - theta_0|| / ||theta_0|| of `model` from `base`."""
    base_params = dict(base.named_parameters())
    groups: dict[str, dict[str, list[float]]] = {"per_layer": {}, "per_module": {}, "per_layer_module": {}}
    per_parameter: dict[str, float | None] = {}
    total = [0.0, 0.0]
    for name, param in model.named_parameters():
        anchor = base_params[name].to(param.device)
        delta_sq = float((param.float() - anchor.float()).pow(2).sum())
        base_sq = float(anchor.float().pow(2).sum())
        per_parameter[name] = _relative(delta_sq, base_sq)
        layer = layer_of(name)
        layer_key = "other" if layer is None else str(layer)
        for group, key in (("per_layer", layer_key), ("per_module", module_type(name)),
                           ("per_layer_module", f"{layer_key}.{module_type(name)}")):
            acc = groups[group].setdefault(key, [0.0, 0.0])
            acc[0] += delta_sq
            acc[1] += base_sq
        total[0] += delta_sq
        total[1] += base_sq
    nested: dict[str, dict[str, float | None]] = {}
    for key, (d, b) in groups["per_layer_module"].items():
        layer_key, module = key.split(".", 1)
        nested.setdefault(layer_key, {})[module] = _relative(d, b)
    return {"total": _relative(*total),
            "per_layer": {k: _relative(d, b) for k, (d, b) in groups["per_layer"].items()},
            "per_module": {k: _relative(d, b) for k, (d, b) in groups["per_module"].items()},
            "per_layer_module": nested, "per_parameter": per_parameter}


# ----------------------------------------------------------------------------- sharpness


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def top_hessian_eigenvalue(hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]], like: Sequence[torch.Tensor],
                           n_iter: int = 20, tol: float = 1e-3, seed: int = 0) -> dict:
    """Power iteration: v <- Hv / ||Hv||, eigenvalue = Rayleigh quotient v.Hv.

    Converges to the eigenvalue of largest magnitude (its sign kept): the top curvature at a
    minimum, where the Hessian is close to positive semi-definite. Stops when the estimate moves
    by <= tol * |estimate| between iterations, or after n_iter Hessian-vector products.
    """
    if n_iter < 1 or tol <= 0:
        raise InterventionError(f"power iteration needs n_iter >= 1 and tol > 0 (got {n_iter}, {tol})")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = [torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t) for t in like]
    norm = math.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    estimate, converged, iteration = 0.0, False, 0
    for iteration in range(1, n_iter + 1):
        hv = hvp(v)
        new = _dot(v, hv)
        hv_norm = math.sqrt(_dot(hv, hv))
        if hv_norm == 0.0:  # v lies in the null space: every direction we can reach has zero curvature
            estimate, converged = 0.0, True
            break
        v = [x / hv_norm for x in hv]
        converged = iteration > 1 and abs(new - estimate) <= tol * max(abs(new), 1e-12)
        estimate = new
        if converged:
            break
    return {"eigenvalue": estimate, "iterations": iteration, "converged": converged}


def _nll_sum(model, batch: PackedBatch) -> torch.Tensor:
    hidden = model.model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                         use_cache=False).last_hidden_state[0, batch.target_index]
    logits = model.lm_head(hidden).float()
    return torch.nn.functional.cross_entropy(logits, batch.targets, reduction="sum")


def sft_loss(model, batches: Sequence[PackedBatch]) -> float:
    """Token-mean negative log-likelihood of the targets."""
    device = model_device(model)
    with torch.no_grad():
        total = sum(float(_nll_sum(model, b.to(device))) for b in batches)
    return total / max(1, sum(b.num_targets for b in batches))


def sft_loss_hvp(model, batches: Sequence[PackedBatch]) -> tuple[list[torch.Tensor], Callable]:
    """(parameters, v -> H v) for the token-mean SFT loss over `batches`, one micro-batch at a
    time (double backward), so memory stays that of one micro-batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InterventionError("sharpness needs parameters with requires_grad=True")
    n_targets = sum(b.num_targets for b in batches)
    device = model_device(model)

    def hvp(vector: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.zeros_like(p) for p in params]
        for batch in batches:
            loss = _nll_sum(model, batch.to(device)) / n_targets
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            inner = sum((g * v).sum() for g, v in zip(grads, vector) if g is not None)
            for acc, h in zip(out, torch.autograd.grad(inner, params, allow_unused=True)):
                if h is not None:
                    acc += h.detach()
        return out

    return params, hvp


@torch.no_grad()
def perturbation_sharpness(model, loss_fn: Callable[[], float], eps: float = PERTURB_EPS, samples: int = 8,
                           seed: int = 0) -> dict:
    """Mean and std of loss(theta + d) - loss(theta) with d_k ~ N(0, I) rescaled to eps * ||theta_k||
    per parameter tensor (zero tensors stay zero). The weights are restored exactly afterwards."""
    if eps <= 0 or samples < 1:
        raise InterventionError(f"perturbation sharpness needs eps > 0 and samples >= 1 (got {eps}, {samples})")
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    base_loss = loss_fn()
    rises = []
    try:
        for _ in range(samples):
            for p, original in zip(params, originals):
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device)
                scale = eps * float(original.float().norm()) / max(float(noise.norm()), 1e-12)
                p.copy_((original.float() + noise * scale).to(p.dtype))
            rises.append(loss_fn() - base_loss)
    finally:
        for p, original in zip(params, originals):
            p.copy_(original)
    mean = sum(rises) / len(rises)
    std = math.sqrt(sum((r - mean) ** 2 for r in rises) / len(rises))
    return {"base_loss": base_loss, "mean_rise": mean, "std_rise": std}


# ----------------------------------------------------------------------------- representation


def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy of the normalized singular values) of a [samples, dims] matrix (Roy & Vetterli)."""
    sigma = torch.linalg.svdvals(features.double())
    total = float(sigma.sum())
    if total == 0.0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# ----------------------------------------------------------------------------- one model on one split


def model_diagnostics(model, calibration: Calibration, sharp_batches: Sequence[PackedBatch], *, tau: float,
                      hessian_iters: int, hessian_tol: float, perturb_eps: float, perturb_samples: int,
                      seed: int) -> tuple[dict, TeacherForced]:
    """Every per-model number of one split (see MODEL_KEYS) and the per-position statistics."""
    stats = teacher_forced(model, calibration, want_features=True)
    redo = mlp_activation_stats(model, calibration.batches).redo_scores()
    result = {"entropy_mean": float(stats.entropy.mean()), "max_prob_mean": float(stats.max_prob.mean()),
              "sft_loss": float(-stats.logp.mean()),
              "dormant_ratio": dormant_ratio(torch.cat(redo), tau),
              "dormant_ratio_per_layer": [dormant_ratio(s, tau) for s in redo],
              "effective_rank": effective_rank(stats.features)}
    result.update(hessian_top_eigenvalue=None, hessian_iterations=0, hessian_converged=None,
                  perturbation_loss_rise=None, perturbation_loss_rise_std=None)
    if hessian_iters > 0:
        params, hvp = sft_loss_hvp(model, sharp_batches)
        top = top_hessian_eigenvalue(hvp, params, hessian_iters, hessian_tol, seed)
        result.update(hessian_top_eigenvalue=top["eigenvalue"], hessian_iterations=top["iterations"],
                      hessian_converged=top["converged"])
    if perturb_samples > 0:
        rise = perturbation_sharpness(model, lambda: sft_loss(model, sharp_batches), perturb_eps, perturb_samples, seed)
        result.update(perturbation_loss_rise=rise["mean_rise"], perturbation_loss_rise_std=rise["std_rise"])
    return result, stats


def gap_summary(calibration: Calibration, tokenizer, ckpt: TeacherForced, base: TeacherForced, top_n: int) -> dict:
    gap = entropy_gap(ckpt.entropy, base.entropy)
    top = top_indices(gap, top_n)
    rows = describe_positions(calibration, tokenizer, top, {"gap": gap, "h_checkpoint": ckpt.entropy,
                                                            "h_base": base.entropy})
    return {"mean": float(gap.mean()), "max": float(gap.max()), "top": rows}


# ----------------------------------------------------------------------------- the whole diagnosis


def validate_diagnosis_options(n: int, tau: float, top_positions: int, hessian_iters: int, hessian_tol: float,
                               perturb_eps: float, perturb_samples: int, micro_batch: int) -> None:
    checks = [(n >= 1, f"--n must be >= 1, got {n}"), (tau >= 0, f"--tau must be >= 0, got {tau}"),
              (top_positions >= 1, f"--top-positions must be >= 1, got {top_positions}"),
              (hessian_iters >= 0, f"--hessian-iters must be >= 0 (0 skips it), got {hessian_iters}"),
              (hessian_tol > 0, f"--hessian-tol must be > 0, got {hessian_tol}"),
              (perturb_eps > 0, f"--perturb-eps must be > 0, got {perturb_eps}"),
              (perturb_samples >= 0, f"--perturb-samples must be >= 0 (0 skips it), got {perturb_samples}"),
              (micro_batch >= 1, f"--micro-batch must be >= 1, got {micro_batch}")]
    for ok, message in checks:
        if not ok:
            raise InterventionError(message)


def diagnose(ckpt: str | Path, base: str | Path, env: str, splits: Sequence[str] | None = None, n: int = 32, *,
             out: str | Path | None = None, style: str = "compact", env_args: dict | None = None,
             device: str = "auto", dtype: str = "float32", micro_batch: int = 8, tau: float = DORMANT_TAU,
             top_positions: int = 20, hessian_iters: int = 20, hessian_tol: float = 1e-3, hessian_sequences: int = 16,
             perturb_eps: float = PERTURB_EPS, perturb_samples: int = 8, seed: int = 0, plots: bool = True) -> dict:
    """Diagnose checkpoint `ckpt` against its base model on `n` evaluation prompts per split.

    Returns the result (see RESULT_KEYS); with `out`, also writes out/diagnostics.json and the
    plots (drift.png, entropy.png, entropy_gap.png, dormancy.png).
    """
    from postlab.models.io import load_tokenizer, pick_device
    from postlab.progress import StepProgress
    from postlab.seeds import eval_seed

    validate_diagnosis_options(n, tau, top_positions, hessian_iters, hessian_tol, perturb_eps, perturb_samples,
                               micro_batch)
    splits = env_splits(env, splits)
    torch_device = pick_device(device)
    model = load_checkpoint(ckpt, "checkpoint", dtype, torch_device, attn_implementation="eager").eval()
    base_model = load_checkpoint(base, "--base", dtype, torch_device, attn_implementation="eager").eval()
    tokenizer = load_tokenizer(str(ckpt))
    check_compatible(base_model, model)
    settings = {"style": style, "env_args": env_args or {}, "dtype": dtype, "micro_batch": micro_batch, "tau": tau,
                "top_positions": top_positions, "hessian_iters": hessian_iters, "hessian_tol": hessian_tol,
                "hessian_sequences": hessian_sequences, "perturb_eps": perturb_eps,
                "perturb_samples": perturb_samples, "seed": seed, "prompt_seeds": "postlab.seeds.eval_seed(0..n-1)"}
    result = {"checkpoint": str(ckpt), "base": str(base), "env": env, "splits": splits, "n": n, "settings": settings,
              "drift": parameter_drift(model, base_model), "per_split": {}, "files": []}
    per_position = {}
    with StepProgress(2 * len(splits), "diagnose") as progress:
        for split in splits:
            records = calibration_records(env, [split], n, eval_seed, style, env_args)
            calibration = build_calibration(tokenizer, records, micro_batch)
            sharp = [pack(c) for c in split_micro_batches(calibration.encoded[:max(1, hessian_sequences)], micro_batch)]
            options = dict(tau=tau, hessian_iters=hessian_iters, hessian_tol=hessian_tol, perturb_eps=perturb_eps,
                           perturb_samples=perturb_samples, seed=seed)
            tokens = sum(b.num_tokens for b in calibration.batches)
            ckpt_result, ckpt_stats = model_diagnostics(model, calibration, sharp, **options)
            progress.advance(tokens=tokens)
            base_result, base_stats = model_diagnostics(base_model, calibration, sharp, **options)
            progress.advance(tokens=tokens)
            result["per_split"][split] = {
                "n_prompts": len(records), "n_positions": calibration.num_targets, "checkpoint": ckpt_result,
                "base": base_result, "entropy_gap": gap_summary(calibration, tokenizer, ckpt_stats, base_stats,
                                                                top_positions)}
            per_position[split] = (ckpt_stats.entropy, base_stats.entropy)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            result["files"] = write_plots(result, per_position, out)
        (out / "diagnostics.json").write_text(json.dumps(result, indent=2))
        result["files"] = result["files"] + ["diagnostics.json"]
    return result


# ----------------------------------------------------------------------------- reporting


def diagnostics_table(result: dict):
    """A rich Table: one row per metric, one column per (split, model)."""
    from rich.table import Table

    table = Table(title=f"diagnose {result['checkpoint']} vs base {result['base']} ({result['env']})")
    table.add_column("metric", style="bold")
    for split in result["per_split"]:
        table.add_column(f"{split} ckpt", justify="right")
        table.add_column(f"{split} base", justify="right")

    def fmt(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    for key in ("entropy_mean", "max_prob_mean", "sft_loss", "dormant_ratio", "effective_rank",
                "hessian_top_eigenvalue", "perturbation_loss_rise"):
        cells = []
        for split_result in result["per_split"].values():
            cells += [fmt(split_result["checkpoint"][key]), fmt(split_result["base"][key])]
        table.add_row(key, *cells)
    gaps = []
    for split_result in result["per_split"].values():
        gaps += [fmt(split_result["entropy_gap"]["mean"]), ""]
    table.add_row("entropy gap mean", *gaps)
    drift = result["drift"]["total"]
    table.add_row("drift ||θ-θ0||/||θ0||", fmt(drift), *[""] * (2 * len(result["per_split"]) - 1))
    return table


def write_plots(result: dict, per_position: dict, out: Path) -> list[str]:
    """drift.png, entropy.png, entropy_gap.png, dormancy.png (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    drift = result["drift"]["per_layer_module"]
    layers = sorted((k for k in drift if k != "other"), key=int)
    fig, ax = plt.subplots(figsize=(7, 4))
    modules = sorted({m for k in layers for m in drift[k]})
    for module in modules:
        values = [drift[k].get(module) for k in layers]
        ax.plot([int(k) for k in layers], [float("nan") if v is None else v for v in values], marker="o", label=module)
    ax.set(xlabel="decoder layer", ylabel="||θ-θ0|| / ||θ0||", title="parameter drift from the base")
    ax.set_xticks([int(k) for k in layers])
    ax.legend(fontsize=7, ncol=2)
    files.append(_save(fig, out / "drift.png"))

    splits = list(per_position)
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.5), squeeze=False)
    for ax, split in zip(axes[0], splits):
        h_ckpt, h_base = per_position[split]
        ax.hist([h_ckpt.numpy(), h_base.numpy()], bins=30, label=["checkpoint", "base"])
        ax.set(xlabel="token entropy (nats)", ylabel="positions", title=f"{split}")
        ax.legend()
    files.append(_save(fig, out / "entropy.png"))

    fig, axes = plt.subplots(len(splits), 1, figsize=(8, 2.8 * len(splits)), squeeze=False)
    for ax, split in zip(axes[:, 0], splits):
        h_ckpt, h_base = per_position[split]
        gap = (h_ckpt - h_base).abs().numpy()
        ax.plot(gap, lw=0.8)
        top = [row["target"] for row in result["per_split"][split]["entropy_gap"]["top"]]
        ax.scatter(top, gap[top], color="red", s=10, label="top positions")
        ax.set(xlabel="response position (teacher-forced)", ylabel="|H_ckpt - H_base|", title=split)
        ax.legend(fontsize=7)
    files.append(_save(fig, out / "entropy_gap.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for split in splits:
        for who, style in (("checkpoint", "-"), ("base", "--")):
            ratios = result["per_split"][split][who]["dormant_ratio_per_layer"]
            ax.plot(range(len(ratios)), ratios, style, marker="o", label=f"{split} {who}")
            ax.set_xticks(range(len(ratios)))
    ax.set(xlabel="decoder layer", ylabel=f"dormant ratio (s <= {result['settings']['tau']})",
           title="dormant MLP neurons")
    ax.legend(fontsize=7)
    files.append(_save(fig, out / "dormancy.png"))
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name
