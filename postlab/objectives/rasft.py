"""RASFT's loss: DFT weighted per sequence by a clipped reference ratio and a group advantage.

Rollout-Adaptive SFT (Miao et al., arXiv 2606.07006; methods.md section 3, loss [code]).
For sample i (an expert response or one of the policy's own verified-correct rollouts)
with weight A_i and response tokens t:

    g_ref  = mean_t log pi_ref(y_t)         g_th = mean_t log pi_theta(y_t)      (no grad)
    rho_i  = exp(clamp(g_ref - g_th, -20, 20))      sequence-level, length-normalized
    w_t    = sg(clip(rho_i, 0.4, 1.2) * A_i * p_t)  the p_t factor is DFT's
    l_t    = -w_t * log p_t

pi_ref is the initial checkpoint, frozen; the clipped ratio damps sequences the policy has
already drifted towards (rho < 1) and caps the boost of those it has drifted away from.
A_i arrives as the record's per-sample weight (`seq_weights`): 1 for plain expert items,
the group weights of `postlab.trainers.rasft_groups.group_weights` otherwise. The token
mean over the step (`token_mean`, the authors' choice) is `registry.aggregate`'s job.
With rho = 1 and A = 1 the loss and its gradient are exactly `dft`'s.
"""

from __future__ import annotations

import torch

from postlab.objectives.registry import LossInputs, per_sequence_mean, register_objective
from postlab.objectives.sft import per_token_weights


def sequence_ratio(ref_logp: torch.Tensor, logp: torch.Tensor, seq_idx: torch.Tensor, num_seqs: int,
                   log_clamp: float = 20.0) -> torch.Tensor:
    """[B] rho_i = exp(clamp(mean_t ref_logp - mean_t logp, -log_clamp, log_clamp)), without gradient.

    The clamp keeps exp() finite for sequences whose mean log-ratio is extreme (a long
    response the policy now finds far likelier or unlikelier than the reference did).
    """
    with torch.no_grad():
        log_rho = per_sequence_mean(ref_logp.to(logp.dtype), seq_idx, num_seqs) - per_sequence_mean(
            logp.detach(), seq_idx, num_seqs)
        return torch.exp(log_rho.clamp(-log_clamp, log_clamp))


@register_objective("rasft", needs_ref=True)
def rasft(inp: LossInputs, rho_min: float = 0.4, rho_max: float = 1.2, log_ratio_clamp: float = 20.0):
    """RASFT: l_t = -sg(clip(rho_i, 0.4, 1.2) * A_i * p_t) * log p_t, rho_i the sequence's reference ratio.

    Metrics over the micro-batch's sequences: `rho_mean`, the mean of rho_i before the clip
    (after the +-20 log clamp), and `rho_clipped_fraction`, the share of sequences whose rho_i
    lies outside [rho_min, rho_max].
    """
    if inp.ref_logp is None:
        raise ValueError("objective 'rasft' needs reference log-probs (ref_logp); the trainer loads the initial "
                         "checkpoint as a frozen reference when the objective has needs_ref=True")
    rho = sequence_ratio(inp.ref_logp, inp.logp, inp.seq_idx, inp.num_seqs, log_ratio_clamp)
    rho_clipped = rho.clamp(rho_min, rho_max)
    # Same product order as `dft` with one more factor: with rho = 1 and A = 1 every extra
    # factor is an exact 1.0, so the result equals dft bit for bit.
    loss = -inp.logp.detach().exp() * per_token_weights(inp) * rho_clipped[inp.seq_idx] * inp.logp
    metrics = {"rho_mean": rho.mean().item(),
               "rho_clipped_fraction": ((rho < rho_min) | (rho > rho_max)).to(rho.dtype).mean().item()}
    return loss, metrics
