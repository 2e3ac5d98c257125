"""Supervised objectives: SFT and its variants (methods.md section 3, "baselines").

All return per-token losses; aggregation is the trainer's job (`registry.aggregate`).
"""

from __future__ import annotations

import torch

from postlab.objectives.registry import LossInputs, register_objective


def per_token_weights(inp: LossInputs) -> torch.Tensor:
    """Per-token weight: per-sample weight broadcast to tokens times per-token weight."""
    w = torch.ones_like(inp.logp)
    if inp.seq_weights is not None:
        w = w * inp.seq_weights[inp.seq_idx]
    if inp.token_weights is not None:
        w = w * inp.token_weights
    return w.detach()


def full_vocab_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_ref || pi_theta) over the full vocabulary: sum_v p_ref (log p_ref - log p_theta)."""
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


@register_objective("nll")
def nll(inp: LossInputs):
    """SFT: l_t = -log p_t (record weights, if any, are applied)."""
    return -inp.logp * per_token_weights(inp), {}


@register_objective("weighted_nll")
def weighted_nll(inp: LossInputs):
    """Weighted SFT: l_t = -w_i * w_t * log p_t with per-sample w_i and per-token w_t (DRIFT, RWR)."""
    return -inp.logp * per_token_weights(inp), {}


@register_objective("dft")
def dft(inp: LossInputs):
    """DFT (dynamic fine-tuning): l_t = -sg(p_t) * log p_t."""
    return -inp.logp.detach().exp() * per_token_weights(inp) * inp.logp, {}


@register_objective("sft_kl", needs_ref=True, needs_logits=True)
def sft_kl(inp: LossInputs, kl_coef: float = 0.1):
    """SFT + lambda * KL(pi_ref || pi_theta) over the full vocabulary per token (lambda 0.1)."""
    kl = full_vocab_kl(inp.ref_logits, inp.logits)
    return -inp.logp * per_token_weights(inp) + kl_coef * kl, {"kl": kl.detach().mean().item()}


@register_objective("asft", needs_ref=True, needs_logits=True)
def asft(inp: LossInputs, kl_coef: float = 0.1):
    """Anchored SFT: DFT + lambda * KL(pi_ref || pi_theta) (lambda 0.1)."""
    kl = full_vocab_kl(inp.ref_logits, inp.logits)
    loss = -inp.logp.detach().exp() * per_token_weights(inp) * inp.logp + kl_coef * kl
    return loss, {"kl": kl.detach().mean().item()}


@register_objective("profit")
def profit(inp: LossInputs, prob_threshold: float = 0.1):
    """ProFit: SFT only on tokens the model already gives probability > threshold (sg(p_t) > 0.1)."""
    keep = (inp.logp.detach().exp() > prob_threshold).to(inp.logp.dtype)
    return -inp.logp * per_token_weights(inp) * keep, {"kept_fraction": keep.mean().item()}


@register_objective("drift_normalized", default_aggregation="seq_mean_token_mean")
def drift_normalized(inp: LossInputs, weight_mean: float):
    """DRIFT, weight-normalized reduction (the authors' BATCH_WEIGHT_NORMAL): L = sum_i w_i l_i / sum_i w_i.

    With aggregation seq_mean_token_mean, l_t = -w_i log p_t / weight_mean gives
    (1/B) sum_i w_i l_i / weight_mean = sum_i w_i l_i / sum_i w_i, where weight_mean =
    (sum_i w_i) / B over the WHOLE optimizer step (all micro-batches and ranks, B = Normalizer.seqs);
    the trainer passes it every step. The default reduction (1/B) sum_i w_i l_i is `weighted_nll`
    with seq_mean_token_mean."""
    if not weight_mean > 0:
        raise ValueError(f"drift_normalized: weight_mean must be > 0 (the step's mean sample weight), "
                         f"got {weight_mean}")
    return -inp.logp * per_token_weights(inp) / weight_mean, {}
