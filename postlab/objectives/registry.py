"""The objective registry and the one function that defines loss aggregation.

An objective is a pure function ``fn(inputs: LossInputs, **hparams) -> (per_token_loss, metrics)``
over the trained tokens of a packed micro-batch. It never generates text and never touches
the optimizer. The trainer turns per-token losses into a scalar with `aggregate`, using
counts over the WHOLE optimizer step (all micro-batches, all data-parallel ranks), so the
gradient does not depend on micro-batch size, accumulation steps or world size.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import torch

from postlab.naming import Registry

AggregationMode = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"]
AGGREGATION_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")


@dataclasses.dataclass
class LossInputs:
    """Everything an objective may read, per trained token ([n]) or per sequence ([B])."""

    logp: torch.Tensor  # [n] log pi_theta(y_t), with grad
    seq_idx: torch.Tensor  # [n] sequence of each token, in 0..num_seqs-1
    num_seqs: int
    seq_weights: torch.Tensor | None = None  # [B] per-sample weights (DRIFT, RASFT, RWR)
    token_weights: torch.Tensor | None = None  # [n]
    advantages: torch.Tensor | None = None  # [n] (sequence advantages broadcast to tokens)
    old_logp: torch.Tensor | None = None  # [n] behaviour policy log-probs (no grad)
    ref_logp: torch.Tensor | None = None  # [n] frozen reference log-probs (no grad)
    logits: torch.Tensor | None = None  # [n, V] policy logits, for full-vocabulary KL
    ref_logits: torch.Tensor | None = None  # [n, V]
    values: torch.Tensor | None = None  # [n] value-head predictions (PPO)
    returns: torch.Tensor | None = None  # [n] value targets (PPO)
    old_values: torch.Tensor | None = None  # [n] (PPO value clipping)
    # [n] True where the policy did not sample the token: LUFFY's expert trace, CHORD's expert samples,
    # UFT's hint (postlab.objectives.spectrum)
    off_policy: torch.Tensor | None = None
    teacher_logp: torch.Tensor | None = None  # [n] a teacher's log-probs of the trained tokens (distillation)
    teacher_logits: torch.Tensor | None = None  # [n, V] (GKD's full-vocabulary divergence)


@dataclasses.dataclass
class Normalizer:
    """Counts over one optimizer step; see `aggregate`."""

    tokens: float  # trained tokens in the step
    seqs: float  # sequences in the step
    constant: float = 1.0  # the constant normalizer (e.g. max completion length, Dr. GRPO)
    entropy_tokens: float = 0.0  # the tokens an entropy bonus averages over (all trained ones but UFT's hints)


def aggregate(loss: torch.Tensor, seq_idx: torch.Tensor, num_seqs: int, mode: str, norm: Normalizer) -> torch.Tensor:
    """Reduce per-token losses of one micro-batch to its share of the step's scalar loss.

    Summing the returned values over all micro-batches (and ranks) of a step gives:

    - ``token_mean``:          sum_{i,t} l_it / T                      (T = trained tokens in the step)
    - ``seq_mean_token_mean``: (1/B) sum_i (1/|o_i|) sum_t l_it        (B = sequences in the step)
    - ``seq_mean_token_sum``:  (1/B) sum_i sum_t l_it
    - ``constant``:            sum_{i,t} l_it / (B * C)               (Dr. GRPO; C = norm.constant)
    """
    if mode == "token_mean":
        return loss.sum() / max(norm.tokens, 1.0)
    if mode == "constant":
        return loss.sum() / (max(norm.seqs, 1.0) * norm.constant)
    per_seq = torch.zeros(num_seqs, dtype=loss.dtype, device=loss.device).index_add(0, seq_idx, loss)
    if mode == "seq_mean_token_sum":
        return per_seq.sum() / max(norm.seqs, 1.0)
    if mode == "seq_mean_token_mean":
        counts = torch.bincount(seq_idx, minlength=num_seqs).clamp(min=1).to(loss.dtype)
        return (per_seq / counts).sum() / max(norm.seqs, 1.0)
    raise ValueError(f"unknown aggregation mode {mode!r}; valid: {', '.join(AGGREGATION_MODES)}")


def per_sequence_mean(x: torch.Tensor, seq_idx: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """[n] per-token values -> [B] mean over each sequence's tokens."""
    sums = torch.zeros(num_seqs, dtype=x.dtype, device=x.device).index_add(0, seq_idx, x)
    counts = torch.bincount(seq_idx, minlength=num_seqs).clamp(min=1).to(x.dtype)
    return sums / counts


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    fn: Callable
    needs_ref: bool = False  # reads ref_logp / ref_logits: the trainer keeps a frozen reference model
    needs_logits: bool = False  # reads logits (and ref_logits when needs_ref)
    needs_old_logp: bool = False
    default_aggregation: str = "token_mean"
    doc: str = ""


OBJECTIVES: Registry = Registry("objective")


def register_objective(name: str, **meta):
    """Decorator: register `fn` as objective `name`; a name registered twice is an error."""

    def wrap(fn):
        owner = OBJECTIVES[name].fn.__module__ if name in OBJECTIVES else ""
        OBJECTIVES.add(name, Objective(name=name, fn=fn, doc=(fn.__doc__ or "").strip(), **meta), owner)
        return fn

    return wrap


def get_objective(name: str) -> Objective:
    # The registry is complete here: importing this module ran postlab.objectives's __init__ first,
    # which imports (and so registers) every objective.
    return OBJECTIVES.lookup(name)
