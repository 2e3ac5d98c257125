"""PPO's critic: its own learning rate and its own gradient clipping inside the shared optimizer."""

import pytest
import torch

from postlab.config import OptimConfig
from postlab.trainers.common import clip_gradients, make_optimizer, optimizer_step, set_lr


def _policy_and_critic():
    policy, critic = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        policy.weight.zero_()
        critic.weight.zero_()
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    opt.add_param_group({"params": list(critic.parameters()), "lr": 1.0, "fixed_lr": True})
    return policy, critic, opt


def test_set_lr_schedules_the_policy_only():
    policy, critic, _ = _policy_and_critic()
    opt = make_optimizer(policy, OptimConfig(lr=1e-3))
    opt.add_param_group({"params": list(critic.parameters()), "lr": 0.5, "weight_decay": 0.0, "fixed_lr": True})
    set_lr(opt, 1e-5)
    assert [g["lr"] for g in opt.param_groups if g["params"]] == [1e-5, 0.5]


def test_a_large_critic_gradient_does_not_shrink_the_policy_step():
    policy, critic, opt = _policy_and_critic()
    policy.weight.grad = torch.full((2, 2), 0.25)  # norm 0.5: under the clip, kept as is
    critic.weight.grad = torch.tensor([[30.0, 40.0]])  # norm 50: clipped to 1 on its own
    assert clip_gradients(critic, 1.0) == pytest.approx(50.0)
    assert optimizer_step(policy, opt, 1.0) == pytest.approx(0.5)
    assert torch.allclose(policy.weight, torch.full((2, 2), -0.025))  # lr 0.1 x the unclipped gradient
    assert torch.allclose(critic.weight, torch.tensor([[-0.6, -0.8]]), atol=1e-5)  # lr 1 x unit-norm gradient


def test_non_finite_gradient_is_refused_and_cleared():
    policy, _, opt = _policy_and_critic()
    policy.weight.grad = torch.full((2, 2), float("nan"))
    from postlab.trainers.common import TrainingError

    with pytest.raises(TrainingError, match="non-finite"):
        optimizer_step(policy, opt, 1.0)
    assert policy.weight.grad is None and torch.all(policy.weight == 0)
