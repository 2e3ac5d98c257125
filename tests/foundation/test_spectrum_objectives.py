"""LUFFY, CHORD, UFT and on-policy distillation against hand computation (methods.md section 7's
checks L1-L3, C1-C3, U1-U3, G1-G2, D1-D3) and the equivalences the issue asks for: LUFFY without
an expert trace is GRPO, CHORD at mu = 0 / 1 is GRPO / SFT, UFT without a hint is GRPO,
distillation from a teacher equal to the student has zero loss and zero gradient."""

import math
import random

import pytest
import torch

from postlab.objectives import LossInputs, Normalizer, aggregate, get_objective
from postlab.objectives.advantages import grpo_advantages
from postlab.objectives.spectrum import (chord_mu, generalized_jsd, hint_boundaries, policy_shaping,
                                         reverse_kl_advantages, sample_hint_chunks, staged_hint_chunks,
                                         uft_hint_probability)

F64 = torch.float64


def tokens(probs, old=None, adv=None, off=None, seq=None, **kw) -> LossInputs:
    logp = torch.tensor([math.log(p) for p in probs], dtype=F64, requires_grad=True)
    seq = torch.tensor(seq if seq is not None else [0] * len(probs))
    return LossInputs(logp=logp, seq_idx=seq, num_seqs=int(seq.max()) + 1,
                      old_logp=None if old is None else torch.tensor([math.log(p) for p in old], dtype=F64),
                      advantages=None if adv is None else torch.tensor(adv, dtype=F64),
                      off_policy=None if off is None else torch.tensor(off), **kw)


def loss_of(name, inp, **hp):
    loss, _ = get_objective(name).fn(inp, **hp)
    return loss


# ----------------------------------------------------------------------------- LUFFY


def test_L1_mixed_group_advantages():
    rewards = [1, 0, 0, 0, 0, 0, 0, 1]  # 7 on-policy samples, then the expert trace (reward 1)
    plain = grpo_advantages(rewards, 8, std=False)  # the published run: grpo_use_std=False
    assert plain[0].item() == pytest.approx(0.75) and plain[1].item() == pytest.approx(-0.25)
    with_std = grpo_advantages(rewards, 8, std=True, eps=1e-6)  # the paper's form (unbiased std)
    assert with_std[0].item() == pytest.approx(1.62018, abs=1e-5)
    assert with_std[1].item() == pytest.approx(-0.54006, abs=1e-5)


@pytest.mark.parametrize("p, f, grad", [(0.01, 0.0909, 0.0826), (0.1, 0.5, 0.25), (0.5, 0.8333, 0.1389),
                                        (0.9, 0.9, 0.09), (1.0, 0.9091, None)])
def test_L2_policy_shaping_value_and_gradient(p, f, grad):
    logp = torch.tensor(math.log(p), dtype=F64, requires_grad=True)
    value = policy_shaping(logp.exp())
    assert value.item() == pytest.approx(f, abs=1e-4)
    value.backward()
    expected = grad if grad is not None else 0.1 * p / (p + 0.1) ** 2
    assert logp.grad.item() == pytest.approx(expected, abs=1e-4)  # gamma p / (p + gamma)^2


def test_L3_off_policy_and_unclipped_on_policy_tokens():
    # token 0: expert (off-policy), A = 0.75, p = 0.1; token 1: on-policy, A = -0.25, ratio 3
    inp = tokens([0.1, 0.3], old=[0.5, 0.1], adv=[0.75, -0.25], off=[True, False])
    loss = loss_of("luffy", inp)
    assert loss.tolist() == pytest.approx([-0.375, 0.75])
    # clipping on (loss_remove_clip=False): A = -0.25 at ratio 3 keeps 0.75; A = +0.25 at ratio 3 -> -0.30
    inp = tokens([0.3, 0.3], old=[0.1, 0.1], adv=[-0.25, 0.25], off=[False, False])
    assert loss_of("luffy", inp, clip=True).tolist() == pytest.approx([0.75, -0.30])


def test_luffy_without_an_expert_trace_is_grpo():
    probs, old, adv = [0.5, 0.25, 0.8, 0.05], [0.4, 0.3, 0.5, 0.05], [1.0, 1.0, -0.5, -0.5]
    a = tokens(probs, old, adv, seq=[0, 0, 1, 1])
    b = tokens(probs, old, adv, seq=[0, 0, 1, 1])
    assert torch.equal(loss_of("luffy", a, clip=True), loss_of("grpo", b))
    # the published run's unclipped form: -A r, the plain importance-sampled policy gradient
    c = tokens(probs, old, adv, off=[False] * 4, seq=[0, 0, 1, 1])
    ratio = torch.tensor([p / o for p, o in zip(probs, old)], dtype=F64)
    assert loss_of("luffy", c).detach() == pytest.approx((-torch.tensor(adv, dtype=F64) * ratio).tolist())


# ----------------------------------------------------------------------------- CHORD


def test_C1_mu_zero_is_grpo_and_mu_one_is_sft():
    probs, old, adv = [0.5, 0.25, 0.8], [0.4, 0.3, 0.8], [1.0, -1.0, 0.5]
    g = loss_of("grpo", tokens(probs, old, adv))
    c = loss_of("chord", tokens(probs, old, adv, off=[False] * 3), mu=0.0)
    assert torch.allclose(c, g)
    sft = loss_of("chord", tokens([0.5, 0.25], off=[True, True]), mu=1.0)
    assert sft.mean().item() == pytest.approx((math.log(2) + math.log(4)) / 2) == pytest.approx(1.0397, abs=1e-4)
    nll = loss_of("nll", tokens([0.5, 0.25]))
    assert torch.allclose(sft, nll)


def test_C2_phi_weights_and_their_stopped_gradient():
    inp = tokens([0.5, 0.1, 0.9, 1.0], off=[True] * 4)
    loss = loss_of("chord", inp, mu=1.0, phi=True)
    assert loss[0].item() == pytest.approx(0.25 * math.log(2))  # 0.1733
    loss.sum().backward()
    assert inp.logp.grad.tolist() == pytest.approx([-0.25, -0.09, -0.09, 0.0])  # d/dlogp = -phi (phi detached)


@pytest.mark.parametrize("schedule, step, mu", [((0, 200, 0.9, 0.05), 0, 0.9), ((0, 200, 0.9, 0.05), 50, 0.7755),
                                                ((0, 200, 0.9, 0.05), 100, 0.475), ((0, 200, 0.9, 0.05), 200, 0.05),
                                                ((0, 200, 0.9, 0.05), 999, 0.05), ((200, 400, 0.5, 0.02), 100, 0.25),
                                                ((200, 400, 0.5, 0.02), 200, 0.5), ((200, 400, 0.5, 0.02), 400, 0.26),
                                                ((200, 400, 0.5, 0.02), 600, 0.02), ((0, 0, 0.1, 0.1), 7, 0.1)])
def test_C3_mu_schedule(schedule, step, mu):
    warmup, decay, peak, valley = schedule
    assert chord_mu(step, warmup, decay, peak, valley) == pytest.approx(mu, abs=1e-4)


def test_chord_terms_are_their_own_token_means_however_the_step_is_cut():
    """(1 - mu) x mean over on-policy tokens + mu x mean over expert tokens, from one micro-batch or from
    two with the step's off-policy share."""
    probs, old, adv = [0.5, 0.25, 0.8, 0.05, 0.6], [0.5, 0.25, 0.8, 0.05, 0.6], [1.0, 1.0, 1.0, 0.0, 0.0]
    off = [False, False, False, True, True]
    mu = 0.3
    expected = (1 - mu) * -1.0 + mu * (math.log(1 / 0.05) + math.log(1 / 0.6)) / 2  # ratio 1: -A per on token
    whole = loss_of("chord", tokens(probs, old, adv, off=off), mu=mu)
    norm = Normalizer(tokens=5, seqs=1)
    seq = torch.zeros(5, dtype=torch.long)
    assert aggregate(whole, seq, 1, "token_mean", norm).item() == pytest.approx(expected)
    total = 0.0
    for part in (slice(0, 2), slice(2, 5)):
        inp = tokens(probs[part], old[part], adv[part], off=off[part])
        loss = loss_of("chord", inp, mu=mu, off_policy_share=2 / 5)
        total += aggregate(loss, torch.zeros(len(loss), dtype=torch.long), 1, "token_mean", norm).item()
    assert total == pytest.approx(expected)


# ----------------------------------------------------------------------------- UFT


@pytest.mark.parametrize("step, p", [(0, 0.95), (75, 0.8182), (150, 0.5), (225, 0.1818), (300, 0.05), (301, 0.0)])
def test_U1_hint_probability(step, p):
    assert uft_hint_probability(step) == pytest.approx(p, abs=1e-4)


def test_U2_hint_chunks():
    assert hint_boundaries(10) == [0, 2, 4, 6, 8, 10]
    segments = [f"s{i}" for i in range(10)]
    assert len(segments[:hint_boundaries(10)[3]]) == 6  # k = 3 chunks
    assert hint_boundaries(3) == [0, 1, 2, 3] and hint_boundaries(0) == [0]
    rng = random.Random(0)
    draws = [sample_hint_chunks(0.5, 5, rng) for _ in range(20000)]
    assert sum(draws) / len(draws) == pytest.approx(2.5, abs=0.05) and set(draws) == set(range(6))
    assert [staged_hint_chunks(t, 300, 5) for t in (0, 49, 50, 99, 100, 250, 299, 400)] == [5, 5, 4, 4, 3, 0, 0, 0]


def test_U3_hint_cross_entropy_and_no_hint_is_grpo():
    hint = loss_of("uft", tokens([0.5, 0.25], off=[True, True]))
    assert hint.mean().item() == pytest.approx(0.001 * 1.0397, abs=1e-7)
    probs, old, adv = [0.5, 0.25, 0.8], [0.4, 0.3, 0.8], [1.0, -1.0, 0.5]
    assert torch.allclose(loss_of("uft", tokens(probs, old, adv, off=[False] * 3)),
                          loss_of("grpo", tokens(probs, old, adv)))


# ----------------------------------------------------------------------------- distillation

T_LOGITS = torch.log(torch.tensor([[0.5, 0.5]], dtype=F64))
S_LOGITS = torch.log(torch.tensor([[0.9, 0.1]], dtype=F64))


@pytest.mark.parametrize("beta, value", [(0.0, 0.51083), (1.0, 0.36806), (0.5, 0.10175), (0.1, 0.04307),
                                         (0.9, 0.03360)])
def test_G1_G2_generalized_jsd(beta, value):
    assert generalized_jsd(S_LOGITS, T_LOGITS, beta).item() == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_distillation_from_itself_has_zero_loss_and_gradient(beta):
    logits = torch.randn(4, 7, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    logp = torch.log_softmax(logits, -1)[:, 0]
    inp = LossInputs(logp=logp, seq_idx=torch.zeros(4, dtype=torch.long), num_seqs=1, logits=logits,
                     teacher_logits=logits.detach().clone())
    loss = loss_of("gkd", inp, jsd_beta=beta)
    assert loss.abs().max().item() < 1e-12
    loss.sum().backward()
    assert logits.grad.abs().max().item() < 1e-12
    # the reverse-KL policy-gradient form: the teacher scores every sampled token as the student does
    lp = torch.tensor([-0.5, -2.0, -0.1], dtype=F64, requires_grad=True)
    inp = LossInputs(logp=lp, seq_idx=torch.zeros(3, dtype=torch.long), num_seqs=1, old_logp=lp.detach(),
                     teacher_logp=lp.detach().clone())
    loss = loss_of("opd", inp)
    loss.sum().backward()
    assert loss.abs().max().item() == 0.0 and lp.grad.abs().max().item() == 0.0


def test_D1_reverse_kl_advantage_and_its_gradient():
    assert reverse_kl_advantages(torch.tensor([-0.5]), torch.tensor([-2.0])).item() == pytest.approx(-1.5)
    lp = torch.tensor([-0.5], dtype=F64, requires_grad=True)
    inp = LossInputs(logp=lp, seq_idx=torch.zeros(1, dtype=torch.long), num_seqs=1, old_logp=lp.detach(),
                     teacher_logp=torch.tensor([-2.0], dtype=F64))
    loss = loss_of("opd", inp)
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert lp.grad.item() == pytest.approx(1.5)  # gradient descent lowers the over-confident token's log-prob


def test_D3_the_per_token_estimate_averages_to_the_reverse_kl():
    student, teacher = torch.tensor([0.9, 0.1]), torch.tensor([0.5, 0.5])
    y = torch.multinomial(student, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    rkl = -reverse_kl_advantages(student.log()[y], teacher.log()[y])
    assert rkl.mean().item() == pytest.approx(0.36806, abs=0.005)


def test_objectives_say_what_they_miss():
    with pytest.raises(ValueError, match="teacher_logp"):
        loss_of("opd", tokens([0.5], old=[0.5]))
    with pytest.raises(ValueError, match="needs advantages"):
        loss_of("luffy", tokens([0.5], old=[0.5]))
    with pytest.raises(ValueError, match="mu must be in"):
        loss_of("chord", tokens([0.5], old=[0.5], adv=[1.0]), mu=1.5)
    with pytest.raises(ValueError, match="off_policy has shape"):
        loss_of("luffy", tokens([0.5, 0.4], old=[0.5, 0.5], adv=[1.0, 1.0], off=[True]))
