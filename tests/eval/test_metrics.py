import math
import random

import numpy as np
import pytest

from postlab.eval.metrics import bootstrap_ci, mean_ci, paired_difference_ci, pass_at_k, pass_at_k_per_problem


def test_pass_at_k_exact_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k
    assert pass_at_k(1, 1, 1) == 1.0
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 40)
        c, k = rng.randint(0, n), rng.randint(1, n)
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    assert pass_at_k_per_problem([[True, False], [False, False]], 1) == [0.5, 0.0]
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_bootstrap_ci_exact_on_tiny_arrays():
    # two values: resampled means are 0, .5, 1 with probability 1/4, 1/2, 1/4 -> percentiles 0 and 1
    assert bootstrap_ci([0, 1], n_boot=4000, seed=1) == (0.0, 1.0)
    assert bootstrap_ci([0.3] * 7) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([0, 1, 1, 0, 1], seed=3) == bootstrap_ci([0, 1, 1, 0, 1], seed=3)  # seeded


def _binom_quantile(n: int, p: float, q: float) -> int:
    acc = 0.0
    for k in range(n + 1):
        acc += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        if acc >= q:
            return k
    return n


def test_bootstrap_ci_matches_binomial_distribution():
    # for 0/1 outcomes with c successes of n, the bootstrap mean is exactly Binomial(n, c/n) / n,
    # so the percentile interval must sit on the binomial quantiles (up to one grid step)
    n, c = 40, 12
    x = np.array([1] * c + [0] * (n - c))
    lo, hi = bootstrap_ci(x, n_boot=20000, seed=0)
    exp_lo, exp_hi = _binom_quantile(n, c / n, 0.025) / n, _binom_quantile(n, c / n, 0.975) / n
    assert abs(lo - exp_lo) <= 1 / n + 1e-9
    assert abs(hi - exp_hi) <= 1 / n + 1e-9
    # and close to the normal-approximation interval
    se = math.sqrt(0.3 * 0.7 / n)
    assert lo == pytest.approx(0.3 - 1.96 * se, abs=0.03)
    assert hi == pytest.approx(0.3 + 1.96 * se, abs=0.03)
    m = mean_ci(x)
    assert m["mean"] == pytest.approx(0.3) and m["n"] == n


def test_paired_difference_ci_uses_the_pairing():
    # model b solves exactly the problems a solves plus 4 more of 40: every paired difference is
    # 0 or -1, so the paired CI is that of 4/40 ones (strictly below 0) ...
    a = [1.0] * 10 + [0.0] * 30
    b = [1.0] * 14 + [0.0] * 26
    d = paired_difference_ci(a, b, n_boot=4000, seed=0)
    assert d["mean"] == pytest.approx(-0.1) and d["n"] == 40
    assert d["ci_high"] < 0 and (d["ci_low"], d["ci_high"]) == pytest.approx(
        tuple(-x for x in reversed(bootstrap_ci([1.0] * 4 + [0.0] * 36, n_boot=4000, seed=0))))
    # ... while the two marginal CIs overlap (an unpaired comparison would call it noise)
    assert bootstrap_ci(a, seed=0)[1] > bootstrap_ci(b, seed=0)[0]
    # identical models: a degenerate CI at 0
    assert paired_difference_ci(a, a) == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 40}
    with pytest.raises(ValueError, match="same problems"):
        paired_difference_ci(a, b[:-1])


def test_first_attempt_diagnostics_counts_categories_per_problem():
    from postlab.eval.evaluate import first_attempt_diagnostics
    from postlab.rollout.episodes import Episode, Turn

    def ep(*cats):
        return Episode(seed=0, messages=[], input_ids=[], loss_mask=[], logprobs=[],
                       turns=[Turn(0, [], [], "", "stop", info={"face_rule": c}) for c in cats])

    # 3 problems x 2 samples; only first attempts count; None (no face card) is left out
    by_problem = [[ep("stated", "other"), ep("other")], [ep("stated"), ep("stated")], [ep(None), ep(None)]]
    d = first_attempt_diagnostics(by_problem, ("face_rule",))
    assert d["diagnostics"] == {"face_rule": {"other": 0.25, "stated": 0.75}}
    assert d["diagnostics_per_problem"]["face_rule"] == [["stated", "other"], ["stated", "stated"], [None, None]]
    assert first_attempt_diagnostics(by_problem, ()) == {}
