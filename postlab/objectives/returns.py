"""DRIFT's trajectory return and importance weights: pure functions (methods.md section 4).

DRIFT (Mu et al., arXiv 2605.31455) fits pi_theta to the KL-regularized optimum
pi*(tau|x) = pi_ref(tau|x) exp(R(tau)/beta) / Z(x) by weighted SFT on trajectories sampled
ONCE from the fixed reference. Per trajectory (checked in the authors' code):

    R(tau) = sum_t gamma^(t-1) r_t            r_t = 1 if the t-th evaluated answer is correct
             + format_penalty * n_unparsable   -0.1 per turn without a parsable <answer>
             - coef * (1 - U/N)                N evaluated answers, U distinct non-empty ones

    w_i = exp(R_i/beta) / mean_{j in prompt(i)} exp(R_j/beta)     (max-shifted; mean 1 per prompt)

t counts ATTEMPTS, not turns: an unparsable turn uses no attempt (the unary-feedback env gives
it only the format penalty), so verdicts [None, False, True] earn gamma^1, not gamma^2.

Defaults are the published run script's (gamma 0.9, beta 0.1); the authors' code itself
defaults to gamma 0.7, beta 0.2.

Hand-checkable examples (also the unit tests):
    discounted_correctness([False, None, True], gamma=0.9)   -> 0.9     (2nd attempt)
    repetition_penalty(["3", "3", None])                       -> -0.25   (N 2, U 1)
    trajectory_return([None, True])                            -> 1 - 0.1 = 0.9
    drift_weights([1, 0], [0, 0], beta=1.0)                    -> [2e/(e+1), 2/(e+1)] = [1.462, 0.538]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal, NamedTuple

import numpy as np

DEFAULT_GAMMA = 0.9  # published run script (the code's own default: 0.7)
DEFAULT_BETA = 0.1  # published run script (the code's own default: 0.2)
DEFAULT_FORMAT_PENALTY = -0.1
DEFAULT_REPETITION_COEF = 0.5


def discounted_correctness(turn_correct: Sequence[bool | None], gamma: float = DEFAULT_GAMMA) -> float:
    """sum_t gamma^(t-1) r_t over the evaluated answers (True/False); None (unparsable) turns
    are skipped and do not advance t, because they use no attempt."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    total, attempt = 0.0, 0
    for verdict in turn_correct:
        if verdict is None:
            continue
        total += gamma ** attempt if verdict else 0.0
        attempt += 1
    return total


def format_penalty(n_unparsable: int, penalty: float = DEFAULT_FORMAT_PENALTY) -> float:
    """`penalty` per turn without a parsable <answer>...</answer> (it accrues per turn)."""
    if n_unparsable < 0:
        raise ValueError(f"n_unparsable must be >= 0, got {n_unparsable}")
    return penalty * n_unparsable


def repetition_penalty(answers: Sequence[str | None], coef: float = DEFAULT_REPETITION_COEF) -> float:
    """-coef * (1 - U/N): N answers that were evaluated (None = unparsable, not counted), U the
    distinct non-empty ones among them; 0 when N = 0. Repeating a rejected answer costs."""
    given = [a for a in answers if a is not None]
    if not given:
        return 0.0
    distinct = {a for a in given if a.strip()}
    return -coef * (1.0 - len(distinct) / len(given))


def trajectory_return(turn_correct: Sequence[bool | None], answers: Sequence[str | None] | None = None,
                      gamma: float = DEFAULT_GAMMA, format_penalty_value: float = DEFAULT_FORMAT_PENALTY,
                      repetition_coef: float = DEFAULT_REPETITION_COEF) -> float:
    """DRIFT's R(tau): discounted correctness + format penalties + repetition penalty.

    `turn_correct`: one verdict per model turn (True / False / None for unparsable).
    `answers`: the parsed answer of each turn (None where unparsable); None = no repetition
    term (an env that does not report answers)."""
    if answers is not None and len(answers) != len(turn_correct):
        raise ValueError(f"{len(turn_correct)} verdicts but {len(answers)} answers; give one per model turn")
    n_unparsable = sum(v is None for v in turn_correct)
    rep = repetition_penalty(answers, repetition_coef) if answers is not None else 0.0
    return discounted_correctness(turn_correct, gamma) + format_penalty(n_unparsable, format_penalty_value) + rep


def episode_return(episode, gamma: float = DEFAULT_GAMMA, format_penalty_value: float = DEFAULT_FORMAT_PENALTY,
                   repetition_coef: float = DEFAULT_REPETITION_COEF) -> float:
    """R(tau) of a played `postlab.rollout.episodes.Episode`: the multi-turn RL reward that DRIFT is
    compared with (methods.md section 4: multi-turn RL over whole unary-feedback episodes with the
    same feedback, reward decay gamma and repetition penalty 0.5). The verdicts and answers are the
    unary-feedback env's (`turn_correct`, `answers`), so online RL and DRIFT's offline data score an
    episode with the same formula. Use it as `RLConfig.reward_fn` (e.g.
    `postlab.objectives.returns:episode_return`; other gamma / penalties: a one-line wrapper)."""
    from postlab.data.trajectories import episode_answers, episode_verdicts  # data -> objectives, not back

    return trajectory_return(episode_verdicts(episode), episode_answers(episode), gamma, format_penalty_value,
                             repetition_coef)


class DriftWeights(NamedTuple):
    weights: np.ndarray  # [N] float64; 0 where dropped
    keep: np.ndarray  # [N] bool; False for trajectories of dropped (all-fail) groups


def drift_weights(returns: Sequence[float], group_ids: Sequence[Hashable], beta: float = DEFAULT_BETA,
                  drop_all_fail: bool = False, normalization: Literal["prompt", "global"] = "prompt",
                  clip: float | None = None, success: Sequence[bool] | None = None) -> DriftWeights:
    """Self-normalized importance weights exp(R/beta), mean 1 per normalization unit.

    - normalization "prompt" (the paper): the unit is a prompt's group (`group_ids`, any order);
      "global": one unit over every kept trajectory, so a prompt whose samples all fail gets
      small weights instead of ~1 (an option for the weakness in methods.md section 4).
    - drop_all_fail: groups where no trajectory succeeded (`success`, required then) get weight 0
      and keep=False; otherwise all their weights are ~1 and the model imitates failures.
    - clip (the paper: none): cap each weight at `clip` (>= 1) while keeping the unit's mean at 1,
      i.e. w' = min(s w, clip) with the one s >= 1 that restores mean 1 ("water-filling"); a plain
      clip-then-renormalize would push capped weights over `clip` again.
    exp is max-shifted per unit (exp((R - max R)/beta)), which cancels in the ratio and cannot
    overflow at beta 0.1."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or len(group_ids) != r.size:
        raise ValueError(f"{r.size} returns but {len(group_ids)} group ids; give one group id per trajectory")
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise ValueError(f"returns[{bad[0]}] is {r[bad[0]]}; every return must be finite")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if normalization not in ("prompt", "global"):
        raise ValueError(f"normalization must be 'prompt' or 'global', got {normalization!r}")
    if clip is not None and not clip >= 1:
        raise ValueError(f"clip must be >= 1 (weights average 1, so a smaller cap cannot hold), got {clip}")
    groups: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    keep = np.ones(r.size, dtype=bool)
    if drop_all_fail:
        if success is None or len(success) != r.size:
            raise ValueError("drop_all_fail needs `success`, one flag per trajectory (a return alone cannot tell: "
                             "penalties can push a solved trajectory below 0)")
        for idx in groups.values():
            if not any(success[i] for i in idx):
                keep[idx] = False
    units = list(groups.values()) if normalization == "prompt" else [list(range(r.size))]
    w = np.zeros(r.size, dtype=np.float64)
    for unit in units:
        idx = np.asarray([i for i in unit if keep[i]], dtype=np.int64)
        if idx.size == 0:
            continue
        e = np.exp((r[idx] - r[idx].max()) / beta)
        unit_w = e / e.mean()
        w[idx] = _cap_keeping_mean_one(unit_w, clip) if clip is not None else unit_w
    return DriftWeights(w, keep)


def _cap_keeping_mean_one(w: np.ndarray, cap: float) -> np.ndarray:
    """min(s * w, cap) with s >= 1 such that the mean stays 1 (w has mean 1, cap >= 1)."""
    if w.max() <= cap:
        return w
    n = w.size
    order = np.argsort(-w)
    ws = w[order]
    # cap the k largest; the rest scale by s = (n - k cap) / sum(rest); the right k keeps the
    # largest uncapped weight at or under the cap (k < n, since cap >= 1 = mean)
    for k in range(1, n):
        s = (n - k * cap) / ws[k:].sum()
        if s * ws[k] <= cap * (1 + 1e-12):
            out = np.empty_like(w)
            out[order[:k]] = cap
            out[order[k:]] = s * ws[k:]
            return out
    return np.full_like(w, 1.0)  # cap == 1 exactly: every weight is 1


def effective_sample_size(weights: Sequence[float]) -> float:
    """Kish ESS (sum w)^2 / sum w^2: how many equally weighted samples the weights are worth."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


__all__ = ["DEFAULT_BETA", "DEFAULT_FORMAT_PENALTY", "DEFAULT_GAMMA", "DEFAULT_REPETITION_COEF", "DriftWeights",
           "discounted_correctness", "drift_weights", "effective_sample_size", "episode_return", "format_penalty",
           "repetition_penalty", "trajectory_return"]
