"""Scores that decide which units Rejuvenation resets.

Two unit granularities (`Unit.module` tells which):

- **slices** (the paper's units, as a third-party reading reports them): each output row of
  q/k/v/gate/up_proj (with its bias entry) and each input column of o/down_proj is a unit of
  its own, so a reset can land on, say, 3 rows of layer 11's k_proj and nothing else.
- **neurons** (postlab's [recon] for ReDo): MLP neuron i of a layer = row i of gate_proj and
  up_proj and column i of down_proj together; it is what ReDo re-initializes and what the
  dormancy and saturation scores measure (h_i = act_fn(gate_i x) * up_i x, the down_proj input).

Scorers (raw scores; `RESETS_HIGH_SCORES` says whether high or low scores are reset first):

- `dla` (paper as reported): attribution of each unit to the chosen-token logits at the top-N
  entropy-gap positions P, with the final RMSNorm's per-position scale s_t = 1/rms(r_t) frozen so
  logits are linear in the residual r. For a column j of o/down_proj (exact direct effect):
  DLA_j(t) = s_t * x_j(t) * (W_U[y_t] * g) . W[:, j]; score = |sum_{t in P} DLA_j(t)| / |P|.
  For a row j of q/k/v/up/gate (gradient x activation proxy of zeroing the row's output a_j):
  score = |sum_t (d L_P / d a_j(t)) * a_j(t)| / |P| over all tokens t, L_P = sum_{t in P} logit_{y_t}(t).
- `dormancy` (ReDo, Sokar et al. 2023): s_i = E|h_i| / (mean_k E|h_k| + 1e-9) per layer, over
  every calibration token; low scores are reset first.
- `drift`: ||theta_row - theta_0,row|| / ||theta_0,row|| of the model being reset (rows, columns,
  or the three slices of a neuron together).
- `saturation` [recon]: the fraction of calibration tokens at which a neuron's gate
  pre-activation sits in the flat negative tail of its activation, gate_i x <= -4 by default
  (there |silu| <= 0.072 and |silu'| <= 0.053: the neuron neither outputs nor learns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from postlab.data.batching import PackedBatch
from postlab.interventions.common import (COLUMN_PROJECTIONS, MLP_NEURON, PROJECTIONS, ROW_PROJECTIONS, Calibration,
                                          InterventionError, decoder_layers, final_norm, model_device, norm_epsilon,
                                          projection)

SCORERS = ("dla", "dormancy", "drift", "saturation")
UNIT_KINDS = ("slices", "neurons")
NEURON_ONLY_SCORERS = ("dormancy", "saturation")  # they measure MLP activations, which only neurons have
RESETS_HIGH_SCORES = {"dla": True, "drift": True, "saturation": True, "dormancy": False}
SATURATION_THRESHOLD = -4.0
REDO_EPS = 1e-9  # ReDo's reference code adds it to the layer mean so an all-silent layer scores 0, not nan


@dataclasses.dataclass(frozen=True, order=True)
class Unit:
    layer: int
    module: str  # one of PROJECTIONS (a slice) or MLP_NEURON
    index: int


Scores = dict[tuple[int, str], torch.Tensor]  # (layer, module) -> [units of that module] raw scores


# ----------------------------------------------------------------------------- dormancy and saturation


def redo_scores_from_mean_abs(mean_abs: torch.Tensor) -> torch.Tensor:
    """ReDo score s_i = E|h_i| / mean_k E|h_k| of one layer's neurons."""
    return mean_abs / (mean_abs.mean() + REDO_EPS)


def dormancy_scores(activations: torch.Tensor) -> torch.Tensor:
    """ReDo scores from activations [..., units] of one layer (all leading dims are samples)."""
    flat = activations.reshape(-1, activations.shape[-1]).float()
    return redo_scores_from_mean_abs(flat.abs().mean(0))


def dormant_ratio(scores: torch.Tensor, tau: float) -> float:
    """Fraction of tau-dormant neurons (s_i <= tau)."""
    return float((scores <= tau).float().mean())


@dataclasses.dataclass
class MlpActivationStats:
    mean_abs: list[torch.Tensor]  # per layer [I]: E|h_i| over calibration tokens, h = act_fn(gate) * up
    saturated: list[torch.Tensor]  # per layer [I]: fraction of tokens with gate pre-activation <= threshold
    tokens: int

    def redo_scores(self) -> list[torch.Tensor]:
        return [redo_scores_from_mean_abs(m) for m in self.mean_abs]


@torch.no_grad()
def mlp_activation_stats(model, batches: Sequence[PackedBatch],
                         saturation_threshold: float = SATURATION_THRESHOLD) -> MlpActivationStats:
    """Streams every calibration token through the model and accumulates, per MLP neuron,
    sum |h_i| (down_proj's input) and how often its gate pre-activation is saturated."""
    n_layers = len(decoder_layers(model))
    abs_sums: list[torch.Tensor | float] = [0.0] * n_layers
    saturated: list[torch.Tensor | float] = [0.0] * n_layers
    hooks = []

    def on_down_input(layer):
        def hook(module, args):
            h = args[0].reshape(-1, args[0].shape[-1]).float()
            abs_sums[layer] = abs_sums[layer] + h.abs().sum(0)
        return hook

    def on_gate_output(layer):
        def hook(module, args, output):
            g = output.reshape(-1, output.shape[-1])
            saturated[layer] = saturated[layer] + (g <= saturation_threshold).sum(0).float()
        return hook

    for layer in range(n_layers):
        hooks.append(projection(model, layer, "down_proj").register_forward_pre_hook(on_down_input(layer)))
        hooks.append(projection(model, layer, "gate_proj").register_forward_hook(on_gate_output(layer)))
    tokens = 0
    device = model_device(model)
    try:
        for batch in batches:
            batch = batch.to(device)
            model.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
            tokens += batch.num_tokens
    finally:
        for h in hooks:
            h.remove()
    if tokens == 0:
        raise InterventionError("activation statistics need at least one calibration token")
    return MlpActivationStats([(s / tokens).cpu() for s in abs_sums], [(s / tokens).cpu() for s in saturated], tokens)


# ----------------------------------------------------------------------------- direct-logit attribution


def frozen_rms_scale(residual: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms(r) per position ([..., 1]), detached: the final norm's scale held fixed."""
    r = residual.float()
    return torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps).detach()


def chosen_token_directions(model, tokens: torch.Tensor) -> torch.Tensor:
    """[P, H] (W_U[y] * g): the residual direction each chosen token's logit reads, before 1/rms."""
    norm = final_norm(model)
    return model.lm_head.weight[tokens].float() * norm.weight.float()


def column_dla(inputs: torch.Tensor, weight: torch.Tensor, directions: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Direct logit attribution [P, in] of each input column j of a Linear writing into the
    residual stream: x_j(t) * W[:, j] adds s_t * x_j(t) * (directions_t . W[:, j]) to the logit."""
    return inputs.float() * scale.float() * (directions.float() @ weight.float())


@dataclasses.dataclass
class AttributionPass:
    columns: dict[tuple[int, str], torch.Tensor]  # (layer, o_proj|down_proj) -> [P, in] per-position DLA
    rows: dict[tuple[int, str], torch.Tensor]  # (layer, q/k/v/gate/up) -> [out] sum_t grad * activation


def attribution_pass(model, batch: PackedBatch, chosen: torch.Tensor, want_rows: bool = True) -> AttributionPass:
    """One forward (and one backward when `want_rows`) of a packed batch under a frozen final
    norm; `chosen` indexes the batch's targets whose chosen-token logits are attributed."""
    norm = final_norm(model)
    eps = norm_epsilon(norm)
    n_layers = len(decoder_layers(model))
    column_inputs: dict[tuple[int, str], torch.Tensor] = {}
    row_outputs: dict[tuple[int, str], torch.Tensor] = {}
    captured: dict[str, torch.Tensor] = {}
    hooks = []

    def keep_input(key):
        def hook(module, args):
            column_inputs[key] = args[0]
        return hook

    def keep_output(key):
        def hook(module, args, output):
            row_outputs[key] = output
        return hook

    def freeze_norm(module, args, output):
        # Same arithmetic as Qwen2/Llama RMSNorm, but with 1/rms detached: logits become linear in r.
        residual = args[0]
        captured["scale"] = frozen_rms_scale(residual, eps)
        return module.weight * (residual.float() * captured["scale"]).to(residual.dtype)

    for layer in range(n_layers):
        for module in COLUMN_PROJECTIONS:
            hooks.append(projection(model, layer, module).register_forward_pre_hook(keep_input((layer, module))))
        if want_rows:
            for module in ROW_PROJECTIONS:
                hooks.append(projection(model, layer, module).register_forward_hook(keep_output((layer, module))))
    hooks.append(norm.register_forward_hook(freeze_norm))
    try:
        with torch.enable_grad() if want_rows else torch.no_grad():
            # Gradients w.r.t. activations need a graph even when the weights are frozen.
            embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(want_rows)
            hidden = model.model(inputs_embeds=embeds, position_ids=batch.position_ids, use_cache=False).last_hidden_state
            positions = batch.target_index[chosen]
            tokens = batch.targets[chosen]
            directions = chosen_token_directions(model, tokens)
            scale = captured["scale"][0, positions]
            columns = {key: column_dla(x[0, positions], projection(model, key[0], key[1]).weight, directions, scale).detach()
                       for key, x in column_inputs.items()}
            rows = {}
            if want_rows:
                chosen_logits = (hidden[0, positions].float() * model.lm_head.weight[tokens].float()).sum()
                keys = list(row_outputs)
                grads = torch.autograd.grad(chosen_logits, [row_outputs[k] for k in keys])
                rows = {k: (g.float() * row_outputs[k].float()).reshape(-1, g.shape[-1]).sum(0).detach()
                        for k, g in zip(keys, grads)}
    finally:
        for h in hooks:
            h.remove()
    return AttributionPass(columns, rows)


def split_by_batch(chosen: torch.Tensor, calibration: Calibration) -> list[torch.Tensor]:
    """Global target indices -> per micro-batch local target indices."""
    out = []
    for offset, batch in zip(calibration.batch_offsets(), calibration.batches):
        inside = (chosen >= offset) & (chosen < offset + batch.num_targets)
        out.append(chosen[inside] - offset)
    return out


def dla_scores(model, calibration: Calibration, chosen: torch.Tensor, unit_kind: str = "slices") -> Scores:
    """|summed attribution| / |P| per unit (see the module docstring)."""
    if chosen.numel() == 0:
        raise InterventionError("DLA scoring needs at least one chosen position (--top-positions >= 1)")
    device = model_device(model)
    totals: dict[tuple[int, str], torch.Tensor] = {}
    for batch, local in zip(calibration.batches, split_by_batch(chosen, calibration)):
        if local.numel() == 0:
            continue
        result = attribution_pass(model, batch.to(device), local.to(device), want_rows=unit_kind == "slices")
        for key, dla in result.columns.items():
            totals[key] = totals.get(key, 0) + dla.sum(0).cpu()
        for key, contribution in result.rows.items():
            totals[key] = totals.get(key, 0) + contribution.cpu()
    scores = {key: value.abs() / chosen.numel() for key, value in totals.items()}
    if unit_kind == "neurons":  # a neuron's direct effect is exactly its down_proj column's
        return {(layer, MLP_NEURON): s for (layer, module), s in scores.items() if module == "down_proj"}
    return scores


# ----------------------------------------------------------------------------- drift


def _slice_sq_norms(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Squared norm of each row (axis 0) or column (axis 1)."""
    return weight.float().pow(2).sum(dim=1 - axis)


def _slice_drift_terms(model, base, layer: int, module: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(||delta||^2, ||theta_0||^2) per unit of one slice module, bias entries included for rows."""
    axis = 0 if module in ROW_PROJECTIONS else 1
    current, anchor = projection(model, layer, module), projection(base, layer, module)
    delta = _slice_sq_norms(current.weight.detach() - anchor.weight.detach(), axis)
    reference = _slice_sq_norms(anchor.weight.detach(), axis)
    if axis == 0 and current.bias is not None:
        delta = delta + (current.bias.detach().float() - anchor.bias.detach().float()).pow(2)
        reference = reference + anchor.bias.detach().float().pow(2)
    return delta, reference


@torch.no_grad()
def drift_scores(model, base, unit_kind: str = "slices") -> Scores:
    scores: Scores = {}
    for layer in range(len(decoder_layers(model))):
        if unit_kind == "slices":
            for module in PROJECTIONS:
                delta, reference = _slice_drift_terms(model, base, layer, module)
                scores[(layer, module)] = (delta.sqrt() / reference.sqrt().clamp_min(1e-12)).cpu()
        else:
            terms = [_slice_drift_terms(model, base, layer, m) for m in ("gate_proj", "up_proj", "down_proj")]
            delta = sum(t[0] for t in terms)
            reference = sum(t[1] for t in terms)
            scores[(layer, MLP_NEURON)] = (delta.sqrt() / reference.sqrt().clamp_min(1e-12)).cpu()
    return scores


# ----------------------------------------------------------------------------- dispatch and selection


def score_units(scorer: str, unit_kind: str, model, *, base=None, calibration: Calibration | None = None,
                chosen: torch.Tensor | None = None, saturation_threshold: float = SATURATION_THRESHOLD) -> Scores:
    """Raw scores of every unit of `model` (the model that will be reset)."""
    if scorer not in SCORERS:
        raise InterventionError(f"--scorer: unknown scorer {scorer!r}; valid: {', '.join(SCORERS)}")
    if scorer in NEURON_ONLY_SCORERS and unit_kind != "neurons":
        raise InterventionError(f"--scorer {scorer} scores MLP neurons only; use --units neurons (the default for it)")
    if scorer == "drift":
        if base is None:
            raise InterventionError("the drift scorer needs the base model")
        return drift_scores(model, base, unit_kind)
    if calibration is None:
        raise InterventionError(f"--scorer {scorer} needs calibration prompts: pass --env (and --split, --n)")
    if scorer == "dla":
        return dla_scores(model, calibration, chosen if chosen is not None else torch.arange(0), unit_kind)
    stats = mlp_activation_stats(model, calibration.batches, saturation_threshold)
    per_layer = stats.redo_scores() if scorer == "dormancy" else stats.saturated
    return {(layer, MLP_NEURON): s for layer, s in enumerate(per_layer)}


def units_to_reset(count: int, fraction: float) -> int:
    """round(fraction * count), at least 1 (as ReDo's reference `leastk_mask`)."""
    return max(1, min(count, round(fraction * count)))


def select_units(scores: Scores, fraction: float, scope: str = "per_layer",
                 high_first: bool = True) -> list[tuple[Unit, float]]:
    """The top `fraction` of units, per decoder layer or over the whole model, with their scores.

    Units are ranked by score (highest first, or lowest when `high_first` is False); ties keep
    the fixed order layer, module (q, k, v, o, gate, up, down), index; non-finite scores go last.
    """
    if not 0.0 <= fraction < 1.0:
        raise InterventionError(f"--fraction must be in [0, 1), got {fraction}")
    if scope not in ("per_layer", "global"):
        raise InterventionError(f"--scope: unknown scope {scope!r}; valid: per_layer, global")
    if fraction == 0:  # fusion alone (the paper's no-reset ablation)
        return []
    order = {m: i for i, m in enumerate(PROJECTIONS + (MLP_NEURON,))}
    keys = sorted(scores, key=lambda k: (k[0], order[k[1]]))
    groups = [[k for k in keys if k[0] == layer] for layer in sorted({k[0] for k in keys})] \
        if scope == "per_layer" else [keys]
    chosen: list[tuple[Unit, float]] = []
    for group in groups:
        units = [Unit(layer, module, i) for layer, module in group for i in range(scores[(layer, module)].numel())]
        values = torch.cat([scores[k].flatten().double() for k in group])
        priority = values if high_first else -values
        priority = torch.where(torch.isfinite(priority), priority, torch.full_like(priority, -float("inf")))
        top = torch.argsort(priority, descending=True, stable=True)[: units_to_reset(len(units), fraction)]
        chosen += [(units[i], float(values[i])) for i in top.tolist()]
    return chosen
