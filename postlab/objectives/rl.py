"""RL objectives: policy-gradient losses over the trained (model-generated) tokens.

Each returns per-token losses l_t; the trainer reduces them with `registry.aggregate` in
the objective's aggregation mode (the paper's choice, overridable in the config). Notation:
r_t = exp(logp_t - old_logp_t) the importance ratio to the policy that sampled the tokens
(1 on the first update of a rollout batch), A the advantage (per sequence, broadcast to its
tokens, or per turn for PPO), k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1 the KL
estimator to a frozen reference (Schulman 2020), used when beta > 0.

Clipped surrogate (PPO, Schulman 2017), shared by every entry below except GSPO's ratio:
    l_t = -min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A) + beta * k3_t
Hand check: r = 1.5, A = 1, eps = .2 -> -min(1.5, 1.2) = -1.2 (clipped, no gradient);
            r = 0.5, A = 1          -> -min(0.5, 0.8) = -0.5 (gradient -A r = -0.5 wrt logp).

| objective | paper | default aggregation | advantages (trainer) |
|---|---|---|---|
| grpo | DeepSeekMath (Shao 2024) | seq_mean_token_mean | group (R - mean)/std |
| dr_grpo | Understanding R1-Zero (Liu 2025) | constant (B * max_new_tokens) | group R - mean |
| dapo | DAPO (Yu 2025), eps .2/.28 | token_mean | group (R - mean)/std |
| gspo | GSPO (Zheng 2025), eps 3e-4/4e-4 | seq_mean_token_mean | group (R - mean)/std |
| rloo | Ahmadian 2024 | seq_mean_token_mean | leave-one-out |
| reinforce_pp | REINFORCE++ (Hu 2025) | token_mean | global-batch normalized |
| ppo | Schulman 2017; Chu 2025 (GAE .9/.95) | token_mean | GAE over turns + value loss |
"""

from __future__ import annotations

import torch

from postlab.objectives.registry import LossInputs, per_sequence_mean, register_objective


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate: exp(ref - logp) - (ref - logp) - 1 (>= 0; 0 when equal)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def behaviour_logp(inp: LossInputs) -> torch.Tensor:
    return inp.logp.detach() if inp.old_logp is None else inp.old_logp


def need_advantages(inp: LossInputs, name: str) -> torch.Tensor:
    if inp.advantages is None:
        raise ValueError(f"objective {name!r} needs advantages (batch.extras['advantages'])")
    return inp.advantages


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float):
    """(-min(r A, clip(r, 1-eps_low, 1+eps_high) A), metrics with low/high clip fractions)."""
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    with torch.no_grad():
        low = ((ratio < 1 - eps_low) & (adv < 0)).float().mean().item()
        high = ((ratio > 1 + eps_high) & (adv > 0)).float().mean().item()
    return loss, {"clip_low": low, "clip_high": high, "ratio": ratio.detach().mean().item()}


def add_kl(loss: torch.Tensor, inp: LossInputs, beta: float, metrics: dict) -> torch.Tensor:
    if beta == 0.0:
        return loss
    if inp.ref_logp is None:
        raise ValueError("beta > 0 needs reference log-probs (batch.extras['ref_logp']); the trainer loads a "
                         "reference model only when beta > 0")
    kl = k3_kl(inp.logp, inp.ref_logp)
    metrics["kl"] = kl.detach().mean().item()
    return loss + beta * kl


def _ppo_clip(inp: LossInputs, name: str, eps_low: float, eps_high: float, beta: float):
    ratio = torch.exp(inp.logp - behaviour_logp(inp))
    loss, m = clipped_surrogate(ratio, need_advantages(inp, name), eps_low, eps_high)
    return add_kl(loss, inp, beta, m), m


@register_objective("grpo", needs_old_logp=True, default_aggregation="seq_mean_token_mean")
def grpo(inp: LossInputs, epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.0):
    """GRPO: l_t = -min(r_t A_i, clip(r_t, 1-eps, 1+eps_high) A_i) + beta * k3_t; eps_high defaults to eps."""
    return _ppo_clip(inp, "grpo", epsilon, epsilon if epsilon_high is None else epsilon_high, beta)


@register_objective("dr_grpo", needs_old_logp=True, default_aggregation="constant")
def dr_grpo(inp: LossInputs, epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.0):
    """Dr. GRPO: GRPO's per-token loss; advantages without /std, aggregation sum / (B * max_new_tokens)."""
    return _ppo_clip(inp, "dr_grpo", epsilon, epsilon if epsilon_high is None else epsilon_high, beta)


@register_objective("dapo", needs_old_logp=True, default_aggregation="token_mean")
def dapo(inp: LossInputs, epsilon_low: float = 0.2, epsilon_high: float = 0.28, beta: float = 0.0):
    """DAPO: clip-higher -min(r A, clip(r, 1-.2, 1+.28) A), token-level mean (dynamic sampling and
    overlong shaping are done by the trainer on rewards)."""
    return _ppo_clip(inp, "dapo", epsilon_low, epsilon_high, beta)


@register_objective("gspo", needs_old_logp=True, default_aggregation="seq_mean_token_mean")
def gspo(inp: LossInputs, epsilon_low: float = 3e-4, epsilon_high: float = 4e-4, beta: float = 0.0):
    """GSPO: sequence ratio s_i = exp(mean_t (logp_t - old_t)), l_t = -min(s_i A_i, clip(s_i) A_i) for
    every token of sequence i (so with seq_mean_token_mean the loss is per sequence)."""
    log_s = per_sequence_mean(inp.logp - behaviour_logp(inp), inp.seq_idx, inp.num_seqs)[inp.seq_idx]
    loss, m = clipped_surrogate(torch.exp(log_s), need_advantages(inp, "gspo"), epsilon_low, epsilon_high)
    return add_kl(loss, inp, beta, m), m


@register_objective("rloo", needs_old_logp=True, default_aggregation="seq_mean_token_mean")
def rloo(inp: LossInputs, epsilon: float = 0.2, beta: float = 0.0):
    """RLOO: clipped surrogate with leave-one-out advantages A_i = R_i - mean_{j != i} R_j."""
    return _ppo_clip(inp, "rloo", epsilon, epsilon, beta)


@register_objective("reinforce_pp", needs_old_logp=True, default_aggregation="token_mean")
def reinforce_pp(inp: LossInputs, epsilon: float = 0.2, beta: float = 0.0):
    """REINFORCE++: clipped surrogate, no critic, advantages normalized over the global batch."""
    return _ppo_clip(inp, "reinforce_pp", epsilon, epsilon, beta)


@register_objective("ppo", needs_old_logp=True, default_aggregation="token_mean")
def ppo(inp: LossInputs, epsilon: float = 0.1, value_clip: float = 0.1, vf_coef: float = 0.5, beta: float = 0.0):
    """PPO: clipped surrogate + vf_coef * 0.5 * max((V - G)^2, (clip(V, V_old +- c) - G)^2).

    V is the value head's prediction for the turn a token belongs to, G its GAE return.
    Chu et al. (2025) use clip 0.1 for both. Hand check: V=1, V_old=0, G=0, c=.1:
    max(1, .01) * .5 = 0.5.
    """
    loss, m = _ppo_clip(inp, "ppo", epsilon, epsilon, beta)
    if inp.values is None or inp.returns is None:
        raise ValueError("objective 'ppo' needs value predictions and returns (the trainer's value head)")
    old_v = inp.values.detach() if inp.old_values is None else inp.old_values
    v_clipped = old_v + (inp.values - old_v).clamp(-value_clip, value_clip)
    v_loss = 0.5 * torch.max((inp.values - inp.returns) ** 2, (v_clipped - inp.returns) ** 2)
    m["value_loss"] = v_loss.detach().mean().item()
    return loss + vf_coef * v_loss, m
