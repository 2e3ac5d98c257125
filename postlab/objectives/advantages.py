"""Advantage estimators: pure functions from rewards to advantages (methods.md section 6).

Sequence-level estimators take `rewards` [N] laid out group-major (G samples of prompt 0,
then G of prompt 1, ...) and return [N]; the trainer broadcasts them to the sequence's
tokens. `gae` works on one episode's turn-level rewards and values.

Hand-checkable examples (also the unit tests):
    grpo_advantages([1, 0, 0, 1], G=2)            -> [ 0.7070, -0.7070, -0.7070, 0.7070]  (std 0.7071 + eps 1e-4)
    grpo_advantages([1, 0, 0, 1], G=2, std=False) -> [ 0.5, -0.5, -0.5, 0.5]
    rloo_advantages([1, 0, 0], G=3)               -> [ 1.0, -0.5, -0.5]
    reinforce_pp_advantages([1, 2, 3, 4])         -> [-1.1619, -0.3873, 0.3873, 1.1619]
    gae([0, 1], values=[0.5, 0.5], gamma=.9, lam=.95)
        delta = [0 + .9*.5 - .5, 1 + 0 - .5] = [-0.05, 0.5];  A = [-0.05 + .855*.5, 0.5] = [0.3775, 0.5]
"""

from __future__ import annotations

import torch

ADVANTAGE_ESTIMATORS = ("grpo", "grpo_no_std", "rloo", "reinforce_pp", "gae")


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


def grpo_advantages(rewards, group_size: int, std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i - mean_group R) / (std_group R + eps); Dr. GRPO: std=False (no division).

    std is the unbiased sample std (torch.std), as in TRL and DeepSeekMath's code.
    """
    g = _groups(rewards, group_size)
    adv = g - g.mean(-1, keepdim=True)
    if std:
        adv = adv / (g.std(-1, keepdim=True) + eps) if group_size > 1 else adv
    return adv.flatten()


def rloo_advantages(rewards, group_size: int) -> torch.Tensor:
    """A_i = R_i - mean_{j != i} R_j = G/(G-1) * (R_i - mean_group R)  (Ahmadian et al. 2024)."""
    if group_size < 2:
        raise ValueError("RLOO needs samples_per_prompt >= 2 (the baseline leaves one sample out)")
    g = _groups(rewards, group_size)
    return ((g.sum(-1, keepdim=True) - g) / (group_size - 1)).neg().add(g).flatten()


def reinforce_pp_advantages(rewards, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): A_i = (R_i - mean_batch R) / std_batch R over the whole global batch."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.numel() < 2:
        return r - r.mean()
    return (r - r.mean()) / (r.std() + eps)


def gae(rewards, values, gamma: float = 0.9, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over one episode's turns (Schulman et al. 2016).

    rewards[k], values[k] = V(s_k) for turns k = 0..K-1; the state after the last turn is
    terminal (value 0). delta_k = r_k + gamma V_{k+1} - V_k; A_k = sum_l (gamma lam)^l delta_{k+l}.
    Returns (advantages [K], returns [K] = A + V, the value targets).
    """
    r = torch.as_tensor(rewards, dtype=torch.float32)
    v = torch.as_tensor(values, dtype=torch.float32)
    adv = torch.zeros_like(r)
    running = 0.0
    for k in reversed(range(r.numel())):
        next_v = v[k + 1] if k + 1 < r.numel() else 0.0
        delta = r[k] + gamma * next_v - v[k]
        running = delta + gamma * lam * running
        adv[k] = running
    return adv, adv + v


def normalize_turn_advantages(advantages: list[torch.Tensor], eps: float = 1e-5) -> list[torch.Tensor]:
    """Whiten per-turn advantages over the whole batch: (A - mean) / (std + eps), every turn of
    every episode counted once; returns them split back per episode.

    Chu et al.'s PPO code (RL4VLM, built on ikostrikov's pytorch-a2c-ppo-acktr) normalizes
    advantages this way before each update. Without it, an untrained critic (V = 0) against
    mostly negative returns makes every advantage negative, and PPO pushes down every sampled
    token: entropy climbs and the policy collapses (measured: 0.55 -> 2.2 nats in 16 steps)."""
    flat = torch.cat([torch.as_tensor(a, dtype=torch.float32).reshape(-1) for a in advantages])
    if flat.numel() < 2:
        return [torch.as_tensor(a, dtype=torch.float32) - flat.mean() for a in advantages]
    mean, std = flat.mean(), flat.std()
    return [(torch.as_tensor(a, dtype=torch.float32) - mean) / (std + eps) for a in advantages]


def zero_std_groups(rewards, group_size: int) -> torch.Tensor:
    """[num_groups] True where every sample of the group got the same reward (no GRPO signal)."""
    g = _groups(rewards, group_size)
    return (g == g[:, :1]).all(-1)


def overlong_penalty(lengths, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO soft overlong punishment: 0 up to max_len - buffer, then linearly down to -1 at max_len."""
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    return ((max_len - buffer - lengths) / max(buffer, 1)).clamp(-1.0, 0.0)
