"""Multi-turn metrics with verifier feedback (DRIFT's evaluation, methods.md section 4).

From each episode's per-turn verdicts (True correct / False wrong / None unparsable):

- ``turn_accuracy[k]``: among episodes that made a k-th attempt, the fraction whose k-th
  answer is correct (how good the model is at its k-th try, after k-1 "Incorrect" feedbacks);
- ``cumulative_accuracy[k]``: fraction of ALL episodes solved within k attempts, k = 1..k_max;
- ``multi@k``: the same number as ``cumulative_accuracy[k]``, reported at k = k_max (the
  headline multi@5 of DRIFT);
- ``correction_rate``: among episodes not solved at attempt 1, the fraction solved later
  (within k_max attempts);
- ``mean_attempts``: attempts made per episode, counting at most k_max.

Each metric is a `mean_ci` dict (mean with a percentile-bootstrap 95% CI over episodes, and n).

k counts ATTEMPTS (evaluated answers) by default, as DRIFT's return and the unary-feedback
env's budget do: an unparsable turn uses no attempt, so multi@max_attempts equals the success
rate. `by="turn"` counts every model turn instead (an unparsable turn then uses one of the k).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from postlab.eval.metrics import mean_ci


def verdicts_of(item) -> list[bool | None]:
    """Per-turn verdicts of an `Episode`, a trajectory dict (its "verdicts") or a verdict list."""
    if hasattr(item, "turns"):
        from postlab.data.trajectories import episode_verdicts

        return episode_verdicts(item)
    if isinstance(item, dict):
        if "verdicts" not in item:
            raise ValueError(f"a trajectory dict needs a 'verdicts' list; keys: {sorted(item)}")
        item = item["verdicts"]
    verdicts = list(item)
    if any(v is not None and not isinstance(v, bool) for v in verdicts):
        raise ValueError(f"verdicts must be True / False / None, got {verdicts!r}")
    return verdicts


def attempt_outcomes(verdicts: Sequence[bool | None], by: Literal["attempt", "turn"] = "attempt") -> list[bool]:
    """Outcome of each attempt (by="attempt": None turns dropped) or of each turn (None = wrong)."""
    if by == "attempt":
        return [bool(v) for v in verdicts if v is not None]
    if by == "turn":
        return [v is True for v in verdicts]
    raise ValueError(f"by must be 'attempt' or 'turn', got {by!r}")


def solved_at(outcomes: Sequence[bool]) -> int | None:
    """1-based attempt of the first correct answer, None if never correct."""
    return next((k + 1 for k, ok in enumerate(outcomes) if ok), None)


def multiturn_report(episodes: Sequence, k_max: int = 5, by: Literal["attempt", "turn"] = "attempt",
                     n_boot: int = 2000, seed: int = 0) -> dict:
    """Per-turn and cumulative accuracy, multi@k_max and correction rate, each with a bootstrap CI.

    `episodes`: `Episode` objects, trajectory dicts or verdict lists (see `verdicts_of`).
    Attempts after k_max are ignored (an episode solved at attempt k_max + 1 counts as unsolved)."""
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    outcomes = [attempt_outcomes(verdicts_of(e), by) for e in episodes]
    first = [solved_at(o) for o in outcomes]

    def ci(values):
        return mean_ci(values, n_boot=n_boot, seed=seed)

    turn_acc = [ci([float(o[k]) for o in outcomes if len(o) > k]) for k in range(k_max)]
    cumulative = [ci([float(f is not None and f <= k) for f in first]) for k in range(1, k_max + 1)]
    wrong_first = [f for f in first if f != 1]
    return {
        "n_episodes": len(outcomes),
        "k_max": k_max,
        "by": by,
        "turn_accuracy": turn_acc,
        "cumulative_accuracy": cumulative,
        f"multi@{k_max}": cumulative[-1],
        "correction_rate": ci([float(f is not None and f <= k_max) for f in wrong_first]),
        "mean_attempts": sum(min(len(o), k_max) for o in outcomes) / max(len(outcomes), 1),
    }


__all__ = ["attempt_outcomes", "multiturn_report", "solved_at", "verdicts_of"]
