"""Scores and measurements against values computed by hand or by brute force."""

import math

import pytest
import torch

from postlab.interventions.common import InterventionError, final_norm, projection
from postlab.interventions.diagnostics import effective_rank, perturbation_sharpness, top_hessian_eigenvalue
from postlab.interventions.scoring import (Unit, attribution_pass, dla_scores, dormancy_scores, dormant_ratio,
                                           select_units)


def test_dormancy_scores_match_hand_computation():
    # 2 samples x 2 tokens x 4 neurons: E|h| = [1.5, 0, 3, 0.5], layer mean 1.25
    h = torch.tensor([[[1.0, 0.0, -3.0, 0.5], [2.0, 0.0, 3.0, -0.5]],
                      [[-1.0, 0.0, 3.0, 0.5], [2.0, 0.0, -3.0, 0.5]]])
    scores = dormancy_scores(h)
    torch.testing.assert_close(scores, torch.tensor([1.2, 0.0, 2.4, 0.4]), rtol=0, atol=1e-6)
    assert dormant_ratio(scores, 0.0) == 0.25 and dormant_ratio(scores, 0.5) == 0.5
    assert torch.equal(dormancy_scores(torch.zeros(3, 5)), torch.zeros(5))  # silent layer: all dormant, no nan


def _residual_and_logits(model, batch, zero_neuron=None):
    """Residual entering the final norm; optionally with one last-layer MLP neuron's activation zeroed."""
    layer = len(model.model.layers) - 1
    seen = {}
    hooks = [final_norm(model).register_forward_pre_hook(lambda m, a: seen.__setitem__("r", a[0]))]
    if zero_neuron is not None:
        def zero(module, args):
            h = args[0].clone()
            h[..., zero_neuron] = 0.0
            return (h,)
        hooks.append(projection(model, layer, "down_proj").register_forward_pre_hook(zero))
    with torch.no_grad():
        model.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
    for h in hooks:
        h.remove()
    return seen["r"][0]


def test_dla_of_last_layer_down_column_equals_logit_change_under_frozen_norm(tiny_pair, toy_calibration):
    _, model = tiny_pair
    batch = toy_calibration.batches[0]
    chosen = torch.arange(batch.num_targets)
    layer = len(model.model.layers) - 1
    dla = attribution_pass(model, batch, chosen, want_rows=False).columns[(layer, "down_proj")]

    norm = final_norm(model)
    positions, tokens = batch.target_index, batch.targets
    residual = _residual_and_logits(model, batch)
    scale = torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)  # frozen: unmodified residual

    def chosen_logits(r):
        logits = model.lm_head(norm.weight * (r * scale))[positions]
        return logits.gather(-1, tokens[:, None]).squeeze(-1)

    with torch.no_grad():
        full = chosen_logits(residual)
        for neuron in (0, 9, 33, 63):
            change = full - chosen_logits(_residual_and_logits(model, batch, zero_neuron=neuron))
            torch.testing.assert_close(dla[:, neuron], change, rtol=0, atol=1e-5)


def test_dla_row_proxy_of_last_up_proj_equals_exact_down_column(tiny_pair, toy_calibration):
    # h_j = act(gate_j) * up_j is linear in up_j, so gradient x activation of up row j is exactly
    # the direct effect of neuron j: the two scores must agree.
    _, model = tiny_pair
    chosen = torch.tensor([0, 2, 3, 7, 8])
    scores = dla_scores(model, toy_calibration, chosen, "slices")
    torch.testing.assert_close(scores[(1, "up_proj")], scores[(1, "down_proj")], rtol=1e-4, atol=1e-7)
    neurons = dla_scores(model, toy_calibration, chosen, "neurons")
    assert torch.equal(neurons[(1, "mlp")], scores[(1, "down_proj")])
    assert set(scores) == {(layer, m) for layer in range(2) for m in
                           ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}


def test_select_units_per_layer_and_global():
    scores = {(0, "k_proj"): torch.tensor([0.1, 0.9, 0.3]), (0, "down_proj"): torch.tensor([0.5, 0.2]),
              (1, "k_proj"): torch.tensor([5.0, 4.0, 0.0]), (1, "down_proj"): torch.tensor([float("nan"), 3.0])}
    per_layer = select_units(scores, 0.4, "per_layer")  # round(0.4 * 5) = 2 per layer
    assert [u for u, _ in per_layer] == [Unit(0, "k_proj", 1), Unit(0, "down_proj", 0),
                                         Unit(1, "k_proj", 0), Unit(1, "k_proj", 1)]
    top = select_units(scores, 0.3, "global")  # round(0.3 * 10) = 3 over the model
    assert [u for u, _ in top] == [Unit(1, "k_proj", 0), Unit(1, "k_proj", 1), Unit(1, "down_proj", 1)]
    low = select_units(scores, 0.1, "global", high_first=False)
    assert [u for u, _ in low] == [Unit(1, "k_proj", 2)]
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(InterventionError, match=r"--fraction must be in \[0, 1\)"):
            select_units(scores, bad)
    assert select_units(scores, 0.0) == []  # fusion without a reset


def test_power_iteration_finds_top_eigenvalue_of_a_quadratic():
    eigenvalues = torch.tensor([4.0, 2.5, 1.0, 0.3, -0.7, 0.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    a = (q @ torch.diag(eigenvalues) @ q.T).float()
    x = torch.randn(6, requires_grad=True)

    def hvp(vector):  # Hessian-vector product of 0.5 x^T A x by double backward
        (grad,) = torch.autograd.grad(0.5 * x @ a @ x, [x], create_graph=True)
        return list(torch.autograd.grad((grad * vector[0]).sum(), [x]))

    result = top_hessian_eigenvalue(hvp, [x], n_iter=200, tol=1e-9, seed=0)
    assert abs(result["eigenvalue"] - 4.0) < 1e-3
    assert result["converged"] and result["iterations"] < 200


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert effective_rank(torch.outer(torch.arange(1.0, 5.0), torch.ones(3))) == pytest.approx(1.0)
    p = torch.tensor([3.0, 1.0]) / 4  # singular values 3 and 1
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(math.exp(-(p * p.log()).sum()))


def test_perturbation_sharpness_restores_weights_exactly(tiny_pair):
    _, model = tiny_pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(10, 200, (1, 16), generator=torch.Generator().manual_seed(1))

    def loss():
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    result = perturbation_sharpness(model, loss, eps=0.05, samples=3, seed=0)
    assert set(result) == {"base_loss", "mean_rise", "std_rise"} and math.isfinite(result["mean_rise"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
