"""Multi-turn metrics (per-turn / cumulative accuracy, multi@k, correction rate) on hand-made verdicts."""

import pytest

from postlab.eval.multiturn import multiturn_report, verdicts_of
from postlab.rollout.episodes import Episode, Turn

VERDICTS = [
    [True],  # solved at attempt 1
    [False, True],  # corrected at attempt 2
    [None, False, False, True],  # unparsable first (no attempt), corrected at attempt 3 (model turn 4)
    [False] * 5,  # never
]


def means(rows):
    return [r["mean"] for r in rows]


def test_report_by_attempt():
    rep = multiturn_report(VERDICTS, k_max=5)
    assert rep["n_episodes"] == 4
    assert means(rep["cumulative_accuracy"]) == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75])
    assert rep["multi@5"]["mean"] == pytest.approx(0.75)
    # k-th attempt accuracy among episodes that made a k-th attempt: 1/4, 1/3, 1/2, 0/1, 0/1
    assert means(rep["turn_accuracy"]) == pytest.approx([0.25, 1 / 3, 0.5, 0.0, 0.0])
    assert [r["n"] for r in rep["turn_accuracy"]] == [4, 3, 2, 1, 1]
    assert rep["correction_rate"]["mean"] == pytest.approx(2 / 3) and rep["correction_rate"]["n"] == 3
    for row in rep["cumulative_accuracy"] + [rep["correction_rate"]]:
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]


def test_report_by_turn_and_short_horizon():
    rep = multiturn_report(VERDICTS, k_max=3, by="turn")  # the unparsable turn now uses one of the k
    assert means(rep["cumulative_accuracy"]) == pytest.approx([0.25, 0.5, 0.5])
    assert rep["multi@3"]["mean"] == pytest.approx(0.5)
    assert rep["correction_rate"]["mean"] == pytest.approx(1 / 3)


def test_report_from_episodes_and_trajectory_dicts():
    def episode(verdicts):
        turns = [Turn(0, [1], [0.0], "x", "stop", success=v is True,
                      info={"turn_correct": list(verdicts[:k + 1])}) for k, v in enumerate(verdicts)]
        return Episode(seed=0, messages=[], input_ids=[], loss_mask=[], logprobs=[], turns=turns,
                       success=True in verdicts)

    eps = [episode(v) for v in VERDICTS]
    assert [verdicts_of(e) for e in eps] == VERDICTS
    assert multiturn_report(eps) == multiturn_report(VERDICTS) == multiturn_report([{"verdicts": v} for v in VERDICTS])
    with pytest.raises(ValueError, match="k_max"):
        multiturn_report(VERDICTS, k_max=0)
    with pytest.raises(ValueError, match="verdicts"):
        multiturn_report([[1, 0]])
