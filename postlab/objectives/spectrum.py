"""The SFT-RL spectrum beyond the seeds: LUFFY, CHORD, UFT and on-policy distillation (methods.md
section 7; sources and the paper-vs-code choices in docs/objectives.md "The SFT-RL spectrum").

Pure functions, as every objective: per-token losses over the trained tokens of a micro-batch, and
the schedules the trainers evaluate per step. Notation as in `objectives.rl`: p = pi_theta(y_t),
r = exp(logp - old_logp), A the (group) advantage broadcast to tokens. `LossInputs.off_policy`
marks the tokens the policy did not sample: LUFFY's expert trace in a mixed group, CHORD's expert
samples, UFT's hint tokens.

Where a method normalizes two terms separately (CHORD: the RL term a mean over on-policy tokens, the
SFT term a mean over expert tokens; UFT: the hint CE a mean over hint tokens), the objective takes
`off_policy_share`, the fraction of the optimizer step's trained tokens that are off-policy, counted
over the whole step as `Normalizer` counts are: with the `token_mean` aggregation the two parts then
come out as their own token means, whatever the micro-batching. None treats one micro-batch as the
whole step (the hand checks).
"""

from __future__ import annotations

import math
import random

import torch

from postlab.objectives.registry import LossInputs, register_objective
from postlab.objectives.rl import add_kl, behaviour_logp, clipped_surrogate, need_advantages

# ----------------------------------------------------------------------------- LUFFY (arXiv 2504.14945)

LUFFY_GAMMA = 0.1  # f(p) = p / (p + gamma): `off_policy_reshape="p_div_p_0.1"` in the published run


def policy_shaping(p: torch.Tensor, gamma: float = LUFFY_GAMMA) -> torch.Tensor:
    """LUFFY's regularized importance weight of an expert token, f(p) = p / (p + gamma) (pi_off taken as 1).
    d f / d log p = gamma p / (p + gamma)^2: small where p -> 0 or p -> 1, largest at p = gamma, so rare
    expert tokens are learned without the plain ratio's vanishing gradient."""
    return p / (p + gamma)


def _off_mask(inp: LossInputs, name: str) -> torch.Tensor:
    if inp.off_policy is None:
        return torch.zeros_like(inp.logp, dtype=torch.bool)
    if inp.off_policy.shape != inp.logp.shape:
        raise ValueError(f"objective {name!r}: off_policy has shape {tuple(inp.off_policy.shape)}, the trained tokens "
                         f"{tuple(inp.logp.shape)}")
    return inp.off_policy.bool()


@register_objective("luffy", needs_old_logp=True, default_aggregation="constant")
def luffy(inp: LossInputs, gamma: float = LUFFY_GAMMA, clip: bool = False, epsilon: float = 0.2, beta: float = 0.0):
    """LUFFY: on-policy tokens l = -A r (the published run removes the clip: `loss_remove_clip=True`;
    clip=True: PPO's clipped surrogate, eps 0.2), expert tokens l = -A f(p), f(p) = p/(p+gamma), never
    clipped. A is the group advantage over the mixed group (7 samples + 1 expert trace). Aggregation: the
    published run sums over tokens and divides by the padded response length (`constant`)."""
    adv = need_advantages(inp, "luffy")
    off = _off_mask(inp, "luffy")
    ratio = torch.exp(inp.logp - behaviour_logp(inp))
    if clip:
        on_loss, metrics = clipped_surrogate(ratio, adv, epsilon, epsilon)
    else:
        on_loss, metrics = -adv * ratio, {}
    if (~off).any():  # the ratio of the policy's own tokens (an expert token has no behaviour probability)
        metrics["ratio"] = ratio.detach()[~off].mean().item()
    shaped = policy_shaping(inp.logp.exp(), gamma)
    loss = torch.where(off, -adv * shaped, on_loss)
    if off.any():
        metrics["off_policy_prob"] = inp.logp.detach()[off].exp().mean().item()
        metrics["off_policy_shaped"] = shaped.detach()[off].mean().item()
    return add_kl(loss, inp, beta, metrics), metrics


# ----------------------------------------------------------------------------- CHORD (arXiv 2508.11408)


def chord_mu(step: int, warmup: int = 0, decay: int = 200, peak: float = 0.9, valley: float = 0.05) -> float:
    """CHORD's global SFT weight mu_t (Trinity-RFT `mu_schedule_function`): linear warm-up to `peak` over
    `warmup` steps, a cosine from `peak` to `valley` over `decay` steps, then `valley`. Defaults: CHORD-mu
    (0 / 200 / 0.9 / 0.05); CHORD-phi is warmup=decay=0, peak=valley=0.1."""
    if step < warmup:
        return step / warmup * peak
    if step >= warmup + decay:
        return valley
    return valley + (peak - valley) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay))


def _two_part_scales(off: torch.Tensor, share: float | None) -> tuple[float, float]:
    """Per-token multipliers that make a `token_mean` over all tokens the sum of the on-policy part's and
    the off-policy part's own token means (share: off-policy tokens / all tokens of the step)."""
    if share is None:
        n, n_off = off.numel(), int(off.sum())
        share = n_off / n if n else 0.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"off_policy_share must be in [0, 1], got {share}")
    return (1.0 / (1.0 - share) if share < 1 else 0.0), (1.0 / share if share > 0 else 0.0)


def _policy_term(inp: LossInputs, epsilon: float, beta: float) -> tuple[torch.Tensor, dict]:
    """The RL term of CHORD and UFT: PPO's clipped surrogate (+ beta k3), with advantage 0 where a batch
    carries none (an expert-only batch trains the SFT term alone)."""
    ratio = torch.exp(inp.logp - behaviour_logp(inp))
    adv = inp.advantages if inp.advantages is not None else torch.zeros_like(inp.logp)
    loss, metrics = clipped_surrogate(ratio, adv, epsilon, epsilon)
    return add_kl(loss, inp, beta, metrics), metrics


@register_objective("chord", needs_old_logp=True, default_aggregation="token_mean")
def chord(inp: LossInputs, mu: float = 0.9, phi: bool = False, epsilon: float = 0.2, beta: float = 0.0,
          off_policy_share: float | None = None):
    """CHORD: L = (1 - mu) L_GRPO + mu L_SFT. L_GRPO: PPO's clipped surrogate (eps 0.2) as a token mean over
    the on-policy samples; L_SFT: -log p as a token mean over the expert samples, weighted per token by
    sg(p (1 - p)) with phi=True (CHORD-phi). mu: `chord_mu(step)`, set by the trainer each step."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"chord: mu must be in [0, 1], got {mu}")
    off = _off_mask(inp, "chord")
    on_scale, off_scale = _two_part_scales(off, off_policy_share)
    rl_loss, metrics = _policy_term(inp, epsilon, beta)
    sft = -inp.logp
    if phi:
        p = inp.logp.detach().exp()
        sft = sft * (p * (1 - p))
    loss = torch.where(off, mu * off_scale * sft, (1 - mu) * on_scale * rl_loss)
    metrics["mu"] = mu
    if off.any():
        metrics["sft_nll"] = -inp.logp.detach()[off].mean().item()
    return loss, metrics


# ----------------------------------------------------------------------------- UFT (arXiv 2505.16984)

UFT_MAX_CHUNKS = 5  # `num = min(5, len(hint))` in the authors' rl_dataset.py


def uft_hint_probability(step: int, hint_steps: int = 300, p_low: float = 0.05, p_high: float = 0.95) -> float:
    """p_t = p_low + (p_high - p_low)/2 (1 + cos(pi t / T_hint)) for t <= T_hint (the authors' code; the
    paper writes (t + 1)), and 0 after: no hint once the hint phase is over."""
    if step > hint_steps:
        return 0.0
    return p_low + 0.5 * (p_high - p_low) * (1 + math.cos(math.pi * step / hint_steps))


def hint_boundaries(n_segments: int, max_chunks: int = UFT_MAX_CHUNKS) -> list[int]:
    """Where the solution's segments are cut into at most `max_chunks` chunks: sep_i = round(i/num * len),
    i = 0..num, the last one the whole solution. A hint of k chunks is segments[:sep[k]]."""
    num = min(max_chunks, n_segments)
    if num == 0:
        return [0]
    sep = [round(i / num * n_segments) for i in range(num + 1)]
    sep[-1] = n_segments
    return sep


def sample_hint_chunks(p: float, num: int, rng: random.Random) -> int:
    """k ~ Binomial(num, p): how many of the solution's chunks the prompt carries (resampled per load)."""
    return sum(rng.random() < p for _ in range(num))


def staged_hint_chunks(step: int, hint_steps: int, num: int) -> int:
    """The staged variant: k = clip(num - t // (T_hint // (num + 1)), 0, num)."""
    stage = max(1, hint_steps // (num + 1))
    return max(0, min(num, num - step // stage))


@register_objective("uft", needs_old_logp=True, default_aggregation="token_mean")
def uft(inp: LossInputs, epsilon: float = 0.2, sft_coef: float = 0.001, beta: float = 0.0,
        off_policy_share: float | None = None):
    """UFT: PPO's clipped surrogate (GRPO advantage) on the continuation the policy sampled, plus
    sft_coef x the hint's cross-entropy (a token mean over the hint tokens, `off_policy`). The authors'
    run also adds a 0.001 low-variance KL to the reference (`beta`, k3) and an entropy bonus."""
    off = _off_mask(inp, "uft")
    _, off_scale = _two_part_scales(off, off_policy_share)
    rl_loss, metrics = _policy_term(inp, epsilon, beta)
    # the continuation's tokens keep the plain token mean over the step; the hint CE its own mean
    loss = torch.where(off, sft_coef * off_scale * -inp.logp, rl_loss)
    if off.any():
        metrics["hint_nll"] = -inp.logp.detach()[off].mean().item()
    return loss, metrics


# ----------------------------------------------------------------------------- on-policy distillation


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """GKD's per-token divergence over the full vocabulary (Agarwal et al. 2024, TRL's gkd_trainer):
    JSD_beta = beta KL(T || M) + (1 - beta) KL(S || M), M = beta T + (1 - beta) S; beta = 0 is the forward
    KL(T || S) and beta = 1 the reverse KL(S || T) (the limits TRL uses, as the formula is 0 there)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # half precision logits: in float32
    s = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    if beta == 0.0:
        return (t.exp() * (t - s)).sum(-1)
    if beta == 1.0:
        return (s.exp() * (s - t)).sum(-1)
    m = torch.logsumexp(torch.stack([s + math.log(1 - beta), t + math.log(beta)]), dim=0)
    return beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)


@register_objective("gkd", needs_logits=True, default_aggregation="token_mean")
def gkd(inp: LossInputs, jsd_beta: float = 0.5, temperature: float = 1.0, beta: float = 0.0):
    """GKD: the generalized JSD_jsd_beta between student and teacher at every trained position,
    differentiated through the student (exact over the vocabulary, not a policy gradient); TRL's defaults
    jsd_beta 0.5, temperature 1 (TRL calls jsd_beta `beta`; here `beta` is the RL trainer's KL to the
    reference, as in every RL objective)."""
    if inp.teacher_logits is None:
        raise ValueError("objective 'gkd' needs the teacher's logits at the trained positions (teacher_logits)")
    div = generalized_jsd(inp.logits, inp.teacher_logits, jsd_beta, temperature)
    metrics = {"jsd": div.detach().mean().item()}
    return add_kl(div, inp, beta, metrics), metrics


def reverse_kl_advantages(sample_logp: torch.Tensor, teacher_logp: torch.Tensor, coef: float = 1.0) -> torch.Tensor:
    """On-policy distillation's per-token advantage (tinker-cookbook, discount 0): A_t = -coef (log pi_sample(y_t)
    - log pi_teacher(y_t)), the negative single-sample reverse-KL estimate at the sampled token."""
    return -coef * (sample_logp - teacher_logp)


@register_objective("opd", needs_old_logp=True, default_aggregation="token_mean")
def opd(inp: LossInputs, kl_coef: float = 1.0, beta: float = 0.0):
    """On-policy distillation, reverse-KL policy-gradient form: l_t = -A_t r_t with A_t =
    `reverse_kl_advantages(old_logp, teacher_logp)` (the student's own samples, scored token by token by
    the teacher); importance-sampling loss, no clip. Its expectation over the student's samples is the
    reverse KL(student || teacher) per token."""
    if inp.teacher_logp is None:
        raise ValueError("objective 'opd' needs the teacher's log-probs of the sampled tokens (teacher_logp)")
    old = behaviour_logp(inp)
    adv = reverse_kl_advantages(old, inp.teacher_logp, kl_coef)
    ratio = torch.exp(inp.logp - old)
    metrics = {"reverse_kl": (-adv / kl_coef).mean().item() if kl_coef else 0.0}
    return add_kl(-adv * ratio, inp, beta, metrics), metrics


__all__ = ["LUFFY_GAMMA", "UFT_MAX_CHUNKS", "chord", "chord_mu", "generalized_jsd", "gkd", "hint_boundaries", "luffy",
           "opd", "policy_shaping", "reverse_kl_advantages", "sample_hint_chunks", "staged_hint_chunks", "uft",
           "uft_hint_probability"]
