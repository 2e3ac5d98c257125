"""Objective `rasft` against hand computation and against `dft` (methods.md section 3)."""

import math

import pytest
import torch

from postlab.objectives import LossInputs, get_objective
from postlab.objectives.rasft import sequence_ratio

P = [0.5, 0.25, 0.8, 0.05]  # p_t of 4 trained tokens: 3 in sequence 0, 1 in sequence 1
SEQ = [0, 0, 0, 1]


def inputs(p=P, seq=SEQ, num_seqs=2, dtype=torch.float64, **kw) -> LossInputs:
    logp = torch.tensor([math.log(x) for x in p], dtype=dtype, requires_grad=True)
    return LossInputs(logp=logp, seq_idx=torch.tensor(seq), num_seqs=num_seqs, **kw)


def loss_and_grad(name, inp, **hp):
    loss, metrics = get_objective(name).fn(inp, **hp)
    loss.sum().backward()
    return loss.detach(), inp.logp.grad.clone(), metrics


def test_registered_with_reference():
    obj = get_objective("rasft")
    assert obj.needs_ref and not obj.needs_logits and obj.default_aggregation == "token_mean"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rho_one_and_unit_advantage_is_exactly_dft(dtype):
    torch.manual_seed(0)
    p = torch.rand(50, dtype=torch.float64).clamp(1e-4, 1).tolist()
    seq = sorted(torch.randint(0, 6, (50,)).tolist())
    for seq_weights in (None, torch.ones(6, dtype=dtype)):
        ref = inputs(p, seq, 6, dtype)
        want_loss, want_grad, _ = loss_and_grad("dft", ref)
        # reference == policy: mean log-ratio is exactly 0, so rho = exp(0) = 1
        inp = inputs(p, seq, 6, dtype, seq_weights=seq_weights)
        inp.ref_logp = inp.logp.detach().clone()
        loss, grad, m = loss_and_grad("rasft", inp)
        assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)
        assert m == {"rho_mean": 1.0, "rho_clipped_fraction": 0.0}


def test_rho_clipped_to_one_is_exactly_dft_whatever_the_reference():
    want_loss, want_grad, _ = loss_and_grad("dft", inputs())
    inp = inputs(ref_logp=torch.tensor([-3.0, 0.0, -1.0, -9.0], dtype=torch.float64))
    loss, grad, _ = loss_and_grad("rasft", inp, rho_min=1.0, rho_max=1.0)
    assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)


RAW_RHO = [1e-12, 0.1, 1.0, 5.0, 1e12]


def ratio_inputs():
    """Five 2-token sequences; the reference's log-probs are shifted by log(rho) on every token,
    so mean_t log pi_ref - mean_t log pi_theta = log(rho) for each sequence."""
    p = [0.5, 0.25] * 5
    seq = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    logp = torch.tensor([math.log(x) for x in p], dtype=torch.float64)
    shift = torch.tensor([math.log(r) for r in RAW_RHO], dtype=torch.float64)[torch.tensor(seq)]
    return inputs(p, seq, 5, ref_logp=logp + shift), p


def test_sequence_ratio_clamps_log_ratio_at_20():
    inp, _ = ratio_inputs()
    rho = sequence_ratio(inp.ref_logp, inp.logp, inp.seq_idx, inp.num_seqs)
    want = [math.exp(-20), 0.1, 1.0, 5.0, math.exp(20)]  # 1e-12 = e^-27.6 and 1e12 = e^27.6 hit the clamp
    assert rho.tolist() == pytest.approx(want, rel=1e-12)
    assert not rho.requires_grad


def test_rho_clip_bounds_weight_and_gradient():
    inp, p = ratio_inputs()
    loss, grad, m = loss_and_grad("rasft", inp)
    clipped = [0.4, 0.4, 1.0, 1.2, 1.2]  # clip(rho, 0.4, 1.2)
    w = [clipped[i // 2] * p[i] for i in range(10)]  # sg(rho~ * A * p_t), A = 1
    assert loss.tolist() == pytest.approx([-w[i] * math.log(p[i]) for i in range(10)], rel=1e-12)
    assert grad.tolist() == pytest.approx([-x for x in w], rel=1e-12)  # the weight is not differentiated
    assert m["rho_clipped_fraction"] == pytest.approx(4 / 5)
    assert m["rho_mean"] == pytest.approx((math.exp(-20) + 0.1 + 1 + 5 + math.exp(20)) / 5, rel=1e-12)


def test_advantage_from_seq_weights_multiplies_the_weight():
    inp = inputs(seq_weights=torch.tensor([0.278, 0.0087], dtype=torch.float64))
    inp.ref_logp = inp.logp.detach() + torch.tensor([math.log(2.0)] * 3 + [math.log(0.5)], dtype=torch.float64)
    loss, grad, _ = loss_and_grad("rasft", inp)
    w = [1.2 * 0.278 * P[0], 1.2 * 0.278 * P[1], 1.2 * 0.278 * P[2], 0.5 * 0.0087 * P[3]]
    assert loss.tolist() == pytest.approx([-w[i] * math.log(P[i]) for i in range(4)], rel=1e-12)
    assert grad.tolist() == pytest.approx([-x for x in w], rel=1e-12)


def test_ratio_uses_length_normalized_means():
    # sequence 0: token log-ratios +2, 0, -0.5 -> mean 0.5 -> rho = e^0.5 = 1.6487 -> clipped 1.2
    inp = inputs(ref_logp=None)
    inp.ref_logp = inp.logp.detach() + torch.tensor([2.0, 0.0, -0.5, -0.1], dtype=torch.float64)
    rho = sequence_ratio(inp.ref_logp, inp.logp, inp.seq_idx, inp.num_seqs)
    assert rho.tolist() == pytest.approx([math.exp(0.5), math.exp(-0.1)], rel=1e-12)


def test_missing_reference_is_an_actionable_error():
    with pytest.raises(ValueError, match="reference log-probs"):
        get_objective("rasft").fn(inputs())
