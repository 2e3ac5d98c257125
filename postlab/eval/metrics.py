"""Pure statistics used by evaluation and reports: pass@k and bootstrap confidence intervals.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): with n samples
per problem of which c are correct, the unbiased estimator of the probability that at least
one of k samples is correct is

    pass@k = 1 - C(n - c, k) / C(n, k)        (1 when n - c < k)

averaged over problems. It is computed as a product to stay exact and stable for large n.

Bootstrap CI: percentile bootstrap over episodes (Efron): resample the per-episode values with
replacement B times with a seeded generator, take the mean of each resample, report the
alpha/2 and 1 - alpha/2 percentiles of those means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples, c of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_per_problem(successes: Sequence[Sequence[bool]], k: int) -> list[float]:
    """pass@k of each problem from its list of sample outcomes."""
    return [pass_at_k(len(s), int(sum(bool(x) for x in s)), k) for s in successes]


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) CI of the mean of `values` (empty -> (nan, nan))."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


def mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """{"mean", "ci_low", "ci_high", "n"} with a bootstrap 95% CI."""
    x = [float(v) for v in values]
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return {"mean": float(np.mean(x)) if x else math.nan, "ci_low": lo, "ci_high": hi, "n": len(x)}


def paired_difference_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over paired problems with a bootstrap 95% CI (resampling problems).

    Two models evaluated on the same problems: resampling the per-problem differences keeps
    the pairing, so problems both models solve (or both fail) add no noise; this is tighter
    than comparing the two marginal CIs and is what a report should decide directions on."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference_ci: {len(a)} vs {len(b)} problems; a paired CI needs the same problems")
    return mean_ci([float(x) - float(y) for x, y in zip(a, b)], n_boot=n_boot, seed=seed)
