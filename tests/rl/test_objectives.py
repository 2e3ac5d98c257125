"""Advantages by hand, and RL losses/gradients against TRL's own GRPOTrainer._compute_loss."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from postlab.objectives import LossInputs, Normalizer, aggregate, get_objective
from postlab.objectives.advantages import (gae, grpo_advantages, overlong_penalty, reinforce_pp_advantages,
                                           rloo_advantages, zero_std_groups)
from postlab.objectives.rl import k3_kl


# ----------------------------------------------------------------------------- advantages by hand
def test_grpo_advantages_by_hand():
    # group [1, 0]: mean .5, sample std sqrt(.5) = .70711 -> +-.5 / (.70711 + 1e-4)
    a = grpo_advantages([1.0, 0.0, 0.0, 1.0], 2)
    assert torch.allclose(a, torch.tensor([1, -1, -1, 1]) * 0.5 / (math.sqrt(0.5) + 1e-4))
    # group [3, 1, 2]: mean 2, std 1 -> [1, -1, 0] / 1.0001
    assert torch.allclose(grpo_advantages([3.0, 1.0, 2.0], 3), torch.tensor([1.0, -1.0, 0.0]) / 1.0001)
    # Dr. GRPO: no std
    assert grpo_advantages([3.0, 1.0, 2.0], 3, std=False).tolist() == [1.0, -1.0, 0.0]
    # all-same group: zero advantage, flagged for dynamic sampling
    assert grpo_advantages([5.0, 5.0], 2).tolist() == [0.0, 0.0]
    assert zero_std_groups([5.0, 5.0, 1.0, 0.0], 2).tolist() == [True, False]


def test_rloo_advantages_by_hand():
    # [1, 0, 0]: 1 - (0+0)/2 = 1; 0 - (1+0)/2 = -.5; 0 - (1+0)/2 = -.5
    assert torch.allclose(rloo_advantages([1.0, 0.0, 0.0], 3), torch.tensor([1.0, -0.5, -0.5]))
    # [4, 2 | 1, 1]: 4 - 2 = 2, 2 - 4 = -2 | 0, 0
    assert rloo_advantages([4.0, 2.0, 1.0, 1.0], 2).tolist() == [2.0, -2.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        rloo_advantages([1.0], 1)


def test_reinforce_pp_advantages_by_hand():
    # [1, 2, 3, 4]: mean 2.5, sample std sqrt(5/3) = 1.29099 -> [-1.5, -.5, .5, 1.5] / 1.29099
    a = reinforce_pp_advantages([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(a, torch.tensor([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3), atol=1e-6)


def test_turn_advantages_are_whitened_over_every_turn_of_the_batch():
    from postlab.objectives.advantages import normalize_turn_advantages

    # turns [-10, -8] and [-6]: mean -8, sample std 2 -> [-1, 0] and [1]
    out = normalize_turn_advantages([torch.tensor([-10.0, -8.0]), torch.tensor([-6.0])], eps=0.0)
    assert [t.tolist() for t in out] == [[-1.0, 0.0], [1.0]]
    # a single turn cannot be scaled: only centred
    assert normalize_turn_advantages([torch.tensor([3.0])])[0].tolist() == [0.0]


def test_gae_by_hand():
    # two turns, rewards [0, 1], V = [.5, .5], gamma .9, lambda .95
    # delta_1 = 1 - .5 = .5; delta_0 = 0 + .9 * .5 - .5 = -.05; A_0 = -.05 + .9 * .95 * .5 = .3775
    adv, ret = gae([0.0, 1.0], [0.5, 0.5], gamma=0.9, lam=0.95)
    assert torch.allclose(adv, torch.tensor([0.3775, 0.5])) and torch.allclose(ret, torch.tensor([0.8775, 1.0]))
    # one turn, V = 0: A = r, return = r
    adv, ret = gae([5.0], [0.0])
    assert adv.tolist() == [5.0] and ret.tolist() == [5.0]
    # three turns, lambda 1, gamma 1, V = 0: A_k = sum of future rewards
    assert gae([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 1.0, 1.0)[0].tolist() == [6.0, 5.0, 3.0]


def test_overlong_penalty():
    # max 10, buffer 4: lengths <= 6 -> 0, 8 -> -.5, 10 -> -1
    assert overlong_penalty([3, 6, 8, 10], 10, 4).tolist() == [0.0, 0.0, -0.5, -1.0]


# ----------------------------------------------------------------------------- objectives by hand
def test_clipped_surrogate_by_hand():
    obj = get_objective("grpo")
    logp = torch.log(torch.tensor([1.5, 0.5])).requires_grad_()
    inp = LossInputs(logp=logp, seq_idx=torch.tensor([0, 1]), num_seqs=2, advantages=torch.tensor([1.0, 1.0]),
                     old_logp=torch.zeros(2))
    loss, m = obj.fn(inp, epsilon=0.2)
    assert torch.allclose(loss, torch.tensor([-1.2, -0.5]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([0.0, -0.5]))  # clipped token gets no gradient
    assert m["clip_high"] == 0.5 and m["clip_low"] == 0.0


def test_k3_and_ppo_value_loss_by_hand():
    assert k3_kl(torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0
    assert abs(k3_kl(torch.tensor([0.0]), torch.tensor([1.0])).item() - (math.e - 2)) < 1e-6
    inp = LossInputs(logp=torch.zeros(1), seq_idx=torch.zeros(1, dtype=torch.long), num_seqs=1,
                     advantages=torch.zeros(1), old_logp=torch.zeros(1), values=torch.ones(1), returns=torch.zeros(1),
                     old_values=torch.zeros(1))
    loss, m = get_objective("ppo").fn(inp, value_clip=0.1, vf_coef=1.0)
    assert abs(loss.item() - 0.5) < 1e-7 and abs(m["value_loss"] - 0.5) < 1e-7


def test_gspo_ratio_is_sequence_level():
    logp = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    inp = LossInputs(logp=logp, seq_idx=torch.tensor([0, 0, 1]), num_seqs=2, advantages=torch.tensor([1.0, 1.0, -1.0]),
                     old_logp=torch.tensor([-1.0, -2.2, -3.0]))
    loss, m = get_objective("gspo").fn(inp, epsilon_low=0.5, epsilon_high=0.5)
    s0 = math.exp(0.1)  # exp(mean(0, .2))
    assert torch.allclose(loss, torch.tensor([-s0, -s0, 1.0]))


# ----------------------------------------------------------------------------- against TRL
def _trl_loss(loss_type, per_token_logps, inputs, beta, eps_low, eps_high, max_completion_length, level="token"):
    """TRL's GRPOTrainer._compute_loss on a minimal stand-in trainer (its own code path).

    Only the model forward is stubbed: `_get_per_token_logps_and_entropies` returns our
    log-probs, so TRL's ratio, clipping, KL, masking and aggregation code runs unchanged.
    """
    from trl import GRPOTrainer

    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (per_token_logps, torch.zeros_like(per_token_logps), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=level, beta=beta, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high,
        use_vllm=False, vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=max_completion_length,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        accelerator=SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                                    reduce=lambda x, reduction="sum": x, sync_gradients=True),
        _entropy_bonus_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
        get_off_policy_mask=GRPOTrainer.get_off_policy_mask)
    return GRPOTrainer._compute_loss(stub, None, inputs)


def _case(seed=0, B=4, T=6):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T)
    for i, n in enumerate([6, 3, 5, 1][:B]):
        mask[i, n:] = 0
    logp = (-torch.rand(B, T, generator=g) * 2)
    old = logp + torch.randn(B, T, generator=g) * 0.3  # ratios on both sides of the clip range
    ref = logp + torch.randn(B, T, generator=g) * 0.2
    adv = torch.randn(B, generator=g)
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("algo,loss_type,agg,beta,eps", [
    ("grpo", "grpo", "seq_mean_token_mean", 0.0, (0.2, 0.2)),
    ("grpo", "grpo", "seq_mean_token_mean", 0.04, (0.2, 0.2)),
    ("dr_grpo", "dr_grpo", "constant", 0.0, (0.2, 0.2)),
    ("dr_grpo", "dr_grpo", "constant", 0.1, (0.2, 0.2)),
    ("dapo", "dapo", "token_mean", 0.0, (0.2, 0.28)),
    ("dapo", "dapo", "token_mean", 0.05, (0.2, 0.28)),
])
def test_loss_and_gradients_equal_trl(algo, loss_type, agg, beta, eps):
    """Same log-probs, old log-probs, reference log-probs, advantages and masks -> same loss and d loss/d logp."""
    pytest.importorskip("trl")
    logp, old, ref, adv, mask = _case()
    B, T = logp.shape
    Tmax = 8  # max_completion_length (Dr. GRPO's constant)
    theirs_logp = logp.clone().requires_grad_()
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    theirs = _trl_loss(loss_type, theirs_logp, inputs, beta, eps[0], eps[1], Tmax)
    theirs.backward()

    keep = mask.bool()
    ours_logp = logp[keep].clone().requires_grad_()  # packed: trained tokens only
    seq_idx = torch.arange(B)[:, None].expand(B, T)[keep]
    inp = LossInputs(logp=ours_logp, seq_idx=seq_idx, num_seqs=B, advantages=adv[seq_idx], old_logp=old[keep],
                     ref_logp=ref[keep])
    obj = get_objective(algo)
    kw = {"epsilon_low": eps[0], "epsilon_high": eps[1]} if algo == "dapo" else {"epsilon": eps[0]}
    per_token, m = obj.fn(inp, beta=beta, **kw)
    assert obj.default_aggregation == agg
    ours = aggregate(per_token, seq_idx, B, agg, Normalizer(tokens=float(keep.sum()), seqs=float(B), constant=Tmax))
    ours.backward()
    print(f"{algo} beta={beta}: ours {ours.item():.8f} TRL {theirs.item():.8f}")
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert torch.allclose(ours_logp.grad, theirs_logp.grad[keep], atol=1e-6, rtol=0)
    assert (theirs_logp.grad[~keep] == 0).all()


def test_gspo_equals_trl_sequence_level():
    pytest.importorskip("trl")
    logp, old, ref, adv, mask = _case(1)
    B, T = logp.shape
    theirs_logp = logp.clone().requires_grad_()
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "num_items_in_batch": mask.sum()}
    theirs = _trl_loss("grpo", theirs_logp, inputs, 0.0, 3e-4, 4e-4, T, level="sequence")
    theirs.backward()
    keep = mask.bool()
    ours_logp = logp[keep].clone().requires_grad_()
    seq_idx = torch.arange(B)[:, None].expand(B, T)[keep]
    inp = LossInputs(logp=ours_logp, seq_idx=seq_idx, num_seqs=B, advantages=adv[seq_idx], old_logp=old[keep])
    per_token, _ = get_objective("gspo").fn(inp)
    ours = aggregate(per_token, seq_idx, B, "seq_mean_token_mean", Normalizer(tokens=float(keep.sum()), seqs=float(B)))
    ours.backward()
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert torch.allclose(ours_logp.grad, theirs_logp.grad[keep], atol=1e-6, rtol=0)
