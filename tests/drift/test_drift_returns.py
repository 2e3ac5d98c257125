"""DRIFT's return and importance weights against the formula (methods.md section 4), by hand."""

import math

import numpy as np
import pytest

from postlab.objectives.returns import (discounted_correctness, drift_weights, effective_sample_size, format_penalty,
                                        repetition_penalty, trajectory_return)


def test_discounted_correctness_counts_attempts_not_turns():
    assert discounted_correctness([True]) == 1.0
    assert discounted_correctness([False, True]) == pytest.approx(0.9)
    assert discounted_correctness([None, False, True]) == pytest.approx(0.9)  # unparsable turn uses no attempt
    assert discounted_correctness([False, None, None, False, True], gamma=0.7) == pytest.approx(0.49)
    assert discounted_correctness([False] * 5) == 0.0 and discounted_correctness([]) == 0.0
    with pytest.raises(ValueError, match="gamma"):
        discounted_correctness([True], gamma=1.5)


def test_format_and_repetition_penalties():
    assert format_penalty(3) == pytest.approx(-0.3) and format_penalty(0) == 0.0
    assert repetition_penalty(["3", "3", None]) == pytest.approx(-0.25)  # N 2 executed, U 1
    assert repetition_penalty(["1", "2", "3"]) == 0.0
    assert repetition_penalty([]) == 0.0 and repetition_penalty([None, None]) == 0.0  # N = 0
    assert repetition_penalty(["  ", "x"]) == pytest.approx(-0.25)  # empty answers are not distinct ones
    assert repetition_penalty(["4"] * 5, coef=1.0) == pytest.approx(-0.8)


def test_trajectory_return_combines_the_terms():
    assert trajectory_return([None, True], [None, "5"]) == pytest.approx(0.9)  # 1 - 0.1
    # wrong "7" twice, unparsable once, then right at attempt 3: 0.81 - 0.1 - 0.5 (1 - 2/3)
    r = trajectory_return([False, False, None, True], ["7", "7", None, "9"])
    assert r == pytest.approx(0.81 - 0.1 - 0.5 / 3)
    assert trajectory_return([False], None) == 0.0
    with pytest.raises(ValueError, match="answers"):
        trajectory_return([False, True], ["1"])


def expected_weights(returns, groups, beta):
    """The formula as written, without the max shift."""
    r, g = np.asarray(returns, float), np.asarray(groups)
    w = np.empty_like(r)
    for k in set(groups):
        e = np.exp(r[g == k] / beta)
        w[g == k] = e / e.mean()
    return w


# hand-made groups of 4 trajectories each: (verdicts, answers)
ALL_FAIL = [([False] * 5, ["1", "2", "3", "4", "5"])] * 4
ALL_CORRECT = [([True], ["6"])] * 4
FORMAT = [([None, True], [None, "6"]), ([True], ["6"]), ([None, None, False, True], [None, None, "1", "6"]),
          ([None] * 10, [None] * 10)]
REPEAT = [([False] * 5, ["1"] * 5), ([False] * 5, ["1", "2", "1", "2", "3"]), ([False, True], ["1", "6"]),
          ([False, False, False, True], ["1", "1", "2", "6"])]


@pytest.mark.parametrize("beta", (0.1, 0.2, 1.0))
def test_weights_match_the_formula_and_average_one_per_prompt(beta):
    trajs = ALL_FAIL + ALL_CORRECT + FORMAT + REPEAT
    returns = [trajectory_return(v, a) for v, a in trajs]
    groups = [i // 4 for i in range(len(trajs))]
    # interleave the order: groups need not be contiguous
    order = [3, 9, 0, 15, 1, 4, 14, 2, 5, 8, 6, 12, 7, 10, 13, 11]
    r, g = [returns[i] for i in order], [groups[i] for i in order]
    w, keep = drift_weights(r, g, beta=beta)
    assert np.abs(w - expected_weights(r, g, beta)).max() < 1e-6 and keep.all()
    for k in range(4):
        assert abs(w[np.asarray(g) == k].mean() - 1.0) < 1e-12
    by_group = dict(zip(order, w))
    assert all(abs(by_group[i] - 1.0) < 1e-12 for i in range(8))  # all-fail and all-correct groups: all 1
    assert by_group[9] > by_group[8] > by_group[10] > by_group[11]  # format penalties order the FORMAT group
    assert by_group[12] < by_group[13] < by_group[15] < by_group[14]  # repeated wrong answers weigh least


def test_max_shift_keeps_large_returns_finite():
    w, _ = drift_weights([100.0, 99.0, 0.0, 0.0], [0, 0, 1, 1], beta=0.1)  # exp(1000) overflows unshifted
    assert np.isfinite(w).all()
    assert w[0] == pytest.approx(2 / (1 + math.exp(-10)))
    assert w[1] == pytest.approx(2 * math.exp(-10) / (1 + math.exp(-10)))
    assert list(w[2:]) == [1.0, 1.0]


def test_drop_all_fail_groups():
    returns = [0.0, -0.25, 1.0, 0.0, 0.9, 0.9]
    groups = ["a", "a", "b", "b", "c", "c"]
    success = [False, False, True, False, True, True]
    w, keep = drift_weights(returns, groups, drop_all_fail=True, success=success)
    assert list(keep) == [False, False, True, True, True, True] and list(w[:2]) == [0.0, 0.0]
    assert np.abs(w[2:] - expected_weights(returns[2:], groups[2:], 0.1)).max() < 1e-6
    with pytest.raises(ValueError, match="success"):
        drift_weights(returns, groups, drop_all_fail=True)


def test_global_normalization():
    returns, groups = [0.0, 0.0, 1.0, 0.0], [0, 0, 1, 1]
    w, _ = drift_weights(returns, groups, beta=0.5, normalization="global")
    e = np.exp(np.asarray(returns) / 0.5)
    assert np.abs(w - e / e.mean()).max() < 1e-9 and abs(w.mean() - 1) < 1e-12
    assert w[0] < 1  # an all-fail prompt no longer weighs ~1
    w, keep = drift_weights(returns, groups, beta=0.5, normalization="global", drop_all_fail=True,
                            success=[False, False, True, False])
    assert list(w[:2]) == [0, 0] and abs(w[keep].mean() - 1) < 1e-12


def test_clip_caps_weights_and_keeps_mean_one():
    returns, groups = [1.0, 0.0, 0.0, 0.0, 0.5, 0.4, 0.0, 0.0], [0] * 4 + [1] * 4
    free, _ = drift_weights(returns, groups, beta=0.2)
    w, _ = drift_weights(returns, groups, beta=0.2, clip=2.0)
    assert free.max() > 2.0 and w.max() <= 2.0 + 1e-12
    for k in (0, 1):
        assert abs(w[np.asarray(groups) == k].mean() - 1) < 1e-12
    assert np.all(np.argsort(-w[:4], kind="stable") == np.argsort(-free[:4], kind="stable"))  # order kept
    assert np.allclose(drift_weights(returns, groups, beta=0.2, clip=1e6)[0], free)  # a loose cap changes nothing
    with pytest.raises(ValueError, match="clip"):
        drift_weights(returns, groups, clip=0.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"returns\[1\]"):
        drift_weights([0.0, float("nan")], [0, 0])
    with pytest.raises(ValueError, match="group id"):
        drift_weights([0.0, 1.0], [0])
    with pytest.raises(ValueError, match="beta"):
        drift_weights([0.0], [0], beta=0.0)


def test_module_doc_example():
    w, keep = drift_weights([1.0, 0.0], [0, 0], beta=1.0)
    assert w == pytest.approx([2 * math.e / (math.e + 1), 2 / (math.e + 1)])
    assert w == pytest.approx([1.462, 0.538], abs=1e-3) and keep.all()


def test_effective_sample_size():
    assert effective_sample_size([1, 1, 1, 1]) == pytest.approx(4)
    assert effective_sample_size([4, 0, 0, 0]) == pytest.approx(1)
