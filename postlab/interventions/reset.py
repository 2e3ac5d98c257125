"""Resetting chosen units in place: anchored to the base model, or ReDo re-initialization.

Which weights a unit owns (`unit_slices`):

- a row unit of q/k/v/gate/up_proj: that output row of the weight, and its bias entry if any;
- a column unit of o/down_proj: that input column of the weight (a bias is per output, not per
  column, so it stays);
- an MLP neuron i: row i of gate_proj and up_proj and column i of down_proj, always together,
  so that a neuron is reset consistently (its inputs and its output).

Anchored (the paper's rule as a third-party reading reports it; omega is not given there, postlab's
default is 1.0 = full anchor): theta <- omega * theta_base + (1 - omega) * theta on the unit's
weights. omega = 1 copies the base values bit for bit.

ReDo (Sokar et al., 2023): re-initialize the neuron's incoming weights (gate and up rows) from
N(0, initializer_range^2), as transformers initializes Linear layers, and zero its outgoing
weights (the down_proj column). The new neuron contributes nothing, so the network computes the
same function as with the old neuron removed: the same function as before for the dormant
neurons ReDo targets, whose old output was (near) zero.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from postlab.interventions.common import MLP_NEURON, PROJECTIONS, ROW_PROJECTIONS, InterventionError, projection
from postlab.interventions.scoring import Unit


def unit_slices(unit: Unit) -> list[tuple[str, int]]:
    """(module, axis) pairs a unit owns: axis 0 = an output row, axis 1 = an input column."""
    if unit.module == MLP_NEURON:
        return [("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)]
    if unit.module not in PROJECTIONS:
        raise InterventionError(f"unit {unit}: unknown module {unit.module!r}; valid: {', '.join(PROJECTIONS)}, "
                                f"{MLP_NEURON}")
    return [(unit.module, 0 if unit.module in ROW_PROJECTIONS else 1)]


def _blend_slice(param: torch.Tensor, anchor: torch.Tensor, axis: int, index: int, omega: float) -> None:
    current = param.select(axis, index)
    target = anchor.select(axis, index).to(param.device)
    if omega == 1.0:
        current.copy_(target)  # exactly the base's values
    elif omega != 0.0:
        current.copy_((omega * target.float() + (1.0 - omega) * current.float()).to(param.dtype))


@torch.no_grad()
def anchor_units(model, base, units: Iterable[Unit], omega: float = 1.0) -> None:
    """theta <- omega * theta_base + (1 - omega) * theta on each unit's weights (in place)."""
    if not 0.0 <= omega <= 1.0:
        raise InterventionError(f"--omega must be in [0, 1], got {omega}")
    for unit in units:
        for module, axis in unit_slices(unit):
            target, anchor = projection(model, unit.layer, module), projection(base, unit.layer, module)
            _blend_slice(target.weight, anchor.weight, axis, unit.index, omega)
            if axis == 0 and target.bias is not None:
                _blend_slice(target.bias, anchor.bias, 0, unit.index, omega)


def init_std(model) -> float:
    """The std transformers draws Linear weights from (`initializer_range`, 0.02 by default)."""
    return float(getattr(model.config, "initializer_range", 0.02))


@torch.no_grad()
def redo_reset(model, units: Iterable[Unit], std: float | None = None, seed: int = 0) -> None:
    """ReDo on MLP neurons (in place): fresh incoming rows, zero outgoing column."""
    units = sorted(units)  # a fixed draw order makes the new weights depend on the seed only
    bad = [u for u in units if u.module != MLP_NEURON]
    if bad:
        raise InterventionError(f"--mode redo resets whole MLP neurons; got a {bad[0].module} unit. "
                                "Use --units neurons (the default for --mode redo)")
    std = init_std(model) if std is None else std
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for unit in units:
        for module in ("gate_proj", "up_proj"):
            linear = projection(model, unit.layer, module)
            row = torch.randn(linear.weight.shape[1], generator=generator, dtype=torch.float32) * std
            linear.weight[unit.index].copy_(row.to(linear.weight))
            if linear.bias is not None:
                linear.bias[unit.index] = 0.0
        projection(model, unit.layer, "down_proj").weight[:, unit.index] = 0.0
