"""RASFT routing, filtering and group weights against hand computation (methods.md section 3)."""

import json
import math
import random

import pytest
import torch

from postlab.config import ConfigError
from postlab.trainers.rasft_groups import (dedupe, degenerate_reason, filter_group, group_weights, jaccard,
                                           reasoning_words, word_trigrams)
from postlab.trainers.rasft_routing import (EXPERT_ROUTES, ROUTES, RASFTRoutingConfig, Router, Window, calibrate,
                                            calibration_sample, route, window_at)

EVEN = [float(d) for d in range(101)]  # difficulties 0, 1, ..., 100: the q-quantile is 100 * q


# ----------------------------------------------------------------------------- group weights

def test_worked_example_of_the_spec():
    # K = 3 kept samples, k = 1 correct, two kept negatives: rewards [7/3, 1, 0, 0]
    w = group_weights(1, 3)
    assert w.fallback is None
    assert float(f"{w.expert:.3g}") == 0.278
    assert float(f"{w.correct_rollout:.3g}") == 0.00869  # ~0.0087
    # by hand: mean 5/6, population std sqrt(11/12)
    std = math.sqrt(11 / 12)
    assert w.expert == pytest.approx(math.tanh(0.4 * 1.5 / (std + 1e-6)) / 2, rel=1e-12)
    assert w.correct_rollout == pytest.approx(0.25 * math.tanh(0.4 * (1 / 6) / (std + 1e-6)) / 2, rel=1e-12)


@pytest.mark.parametrize("k,K,reason", [(0, 0, "all_filtered"), (0, 3, "no_correct"), (0, 1, "no_correct"),
                                        (3, 3, "zero_variance"), (1, 1, "zero_variance")])
def test_fallbacks_are_expert_only_with_unit_weight(k, K, reason):
    assert tuple(group_weights(k, K)) == (1.0, None, reason)


def test_negatives_beyond_max_are_left_out_of_the_statistics():
    # K = 6, k = 1: d_hat = 5/6, r_E = 8/3; only 3 of the 5 negatives count
    rewards = [8 / 3, 1, 0, 0, 0]
    mean = sum(rewards) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 5)
    w = group_weights(1, 6)
    assert w.expert == pytest.approx(math.tanh(0.4 * (8 / 3 - mean) / (std + 1e-6)) / 2, rel=1e-12)


def test_correct_rollout_weight_stays_in_its_band():
    for K in range(1, 9):
        for k in range(1, K):
            w = group_weights(k, K, RASFTRoutingConfig(max_negatives=8))
            assert 0.005 - 1e-15 <= w.correct_rollout <= 0.0375 + 1e-15 and w.expert > 0


def test_invalid_counts_are_rejected():
    with pytest.raises(ValueError, match="0 <= k <= K"):
        group_weights(4, 3)


# ----------------------------------------------------------------------------- calibration and window

def test_calibrate_reads_the_configured_quantiles():
    q = calibrate(EVEN)
    assert (q.easy_floor, q.window_start, q.window_end, q.hard_ceiling) == (
        pytest.approx(10), pytest.approx((20, 45)), pytest.approx((50, 75)), pytest.approx(90))
    assert calibrate(EVEN, RASFTRoutingConfig(hard_ceiling_q=0.95)).hard_ceiling == pytest.approx(95)


def test_calibrate_interpolates_like_torch_quantile():
    rng = random.Random(3)
    values = [rng.expovariate(1.0) for _ in range(37)]
    q = calibrate(values)
    levels = torch.tensor([0.10, 0.20, 0.45, 0.50, 0.75, 0.90], dtype=torch.float64)
    want = torch.quantile(torch.tensor(values, dtype=torch.float64), levels).tolist()
    got = [q.easy_floor, *q.window_start, *q.window_end, q.hard_ceiling]
    assert got == pytest.approx(want, rel=1e-12)


def test_calibrate_rejects_empty_or_nonfinite():
    with pytest.raises(ValueError, match="no difficulties"):
        calibrate([])
    with pytest.raises(ValueError, match="finite"):
        calibrate([1.0, float("nan")])


def test_calibration_sample_draws_the_configured_number():
    ids = calibration_sample(5000, RASFTRoutingConfig(), random.Random(0))
    assert len(ids) == 1000 == len(set(ids)) and all(0 <= i < 5000 for i in ids)
    assert calibration_sample(10, RASFTRoutingConfig(), random.Random(0)) == list(range(10))


@pytest.mark.parametrize("progress,low,high", [(0.0, 20, 45), (0.5, 35, 60), (1.0, 50, 75), (1.7, 50, 75),
                                               (-0.2, 20, 45)])
def test_window_moves_from_start_to_end_quantiles(progress, low, high):
    assert window_at(progress, calibrate(EVEN)) == pytest.approx((low, high))


# ----------------------------------------------------------------------------- routing

@pytest.mark.parametrize("d,expected", [(5, "expert_easy"), (10, "expert_easy"), (15, "hard_never"),
                                        (19.9, "hard_never"), (20, "pending"), (30, "pending"), (45, "pending"),
                                        (60, "hard_pool"), (90, "hard_pool"), (95, "expert_other")])
def test_route_at_the_start(d, expected):
    q = calibrate(EVEN)
    assert route(d, window_at(0.0, q), q) == expected


def test_route_at_the_end_and_the_pending_alternative():
    q = calibrate(EVEN)
    end = window_at(1.0, q)  # 50 .. 75
    assert [route(d, end, q) for d in (10, 30, 60, 80, 91)] == [
        "expert_easy", "hard_never", "pending", "hard_pool", "expert_other"]
    alt = RASFTRoutingConfig(hard_never="pending")
    assert [route(d, end, q, alt) for d in (10, 30, 60, 80, 91)] == [
        "expert_easy", "pending", "pending", "hard_pool", "expert_other"]
    assert set(ROUTES) - EXPERT_ROUTES == {"pending"}


def calibrated_router(**cfg) -> Router:
    router = Router(RASFTRoutingConfig(**cfg))
    router.calibrate(EVEN)
    return router


def test_router_routes_a_chunk_into_queue_and_pool():
    router = calibrated_router()
    out = router.route_chunk([1, 2, 3, 4, 5, 6], [5, 15, 30, 60, 95, 44], progress=0.0)
    assert out.routes == ["expert_easy", "hard_never", "pending", "hard_pool", "expert_other", "pending"]
    assert out.expert == [1, 2, 4, 5] and out.pending == [3, 6]
    assert router.pending == [3, 6] and router.hard_pool == [4]
    # routed again later: the latest decision wins, and nothing is queued twice
    out = router.route_chunk([3, 4, 6], [60, 30, 44], progress=0.0)
    assert router.pending == [6, 4] and router.hard_pool == [3]
    assert router.counts["pending"] == 4 and router.counts["hard_pool"] == 2 and router.counts["hard_never"] == 1


def test_router_needs_calibration_first():
    with pytest.raises(RuntimeError, match="calibrate"):
        Router().route_chunk([0], [1.0], 0.0)


def test_refresh_rolls_out_35_percent_and_sends_the_rest_to_expert():
    router = calibrated_router()
    router.route_chunk(list(range(20)), [30.0] * 20, progress=0.0)
    plan = router.refresh(random.Random(0), step=32, progress=0.0, rescore=lambda ids: pytest.fail("no pool"))
    assert len(plan.rollout) == 7 and len(plan.expert) == 13  # round(0.35 * 20) = 7
    assert sorted(plan.rollout + plan.expert) == list(range(20)) and router.pending == []
    assert router.last_refresh_step == 32 and not router.refresh_due(40, False) and router.refresh_due(64, False)
    assert router.refresh_due(40, ready_queue_empty=True)


def test_refresh_probes_the_hard_pool():
    router = calibrated_router(hard_probe_fraction=1.0)
    router.route_chunk([7, 8, 9], [60, 70, 80], progress=0.0)
    assert router.hard_pool == [7, 8, 9]
    new = {7: 15.0, 8: 85.0, 9: 99.0}  # below the window (20), within the ceiling (90), above it
    seen = []

    def rescore(ids):
        seen.extend(ids)
        return [new[i] for i in ids]

    plan = router.refresh(random.Random(1), step=5, progress=0.0, rescore=rescore)
    assert sorted(seen) == [7, 8, 9] and plan.probed == seen
    assert plan.expert == [7] and plan.rollout == [8] and router.hard_pool == [9]
    assert (router.counts["probe_to_expert"], router.counts["probe_to_rollout"], router.counts["probe_stayed"]) == (
        1, 1, 1)


def test_default_probe_share_is_3_percent():
    router = calibrated_router()
    router.route_chunk(list(range(100)), [60.0] * 100, progress=0.0)
    plan = router.refresh(random.Random(0), step=1, progress=0.0, rescore=lambda ids: [99.0] * len(ids))
    assert len(plan.probed) == 3 and len(router.hard_pool) == 100


def test_router_state_round_trips_through_json_and_resumes_identically():
    rng = random.Random(1234)
    router = calibrated_router()
    for chunk in range(3):
        ids = list(range(chunk * 50, chunk * 50 + 50))
        router.route_chunk(ids, [rng.uniform(0, 100) for _ in ids], progress=chunk / 10)
    router.refresh(rng, step=32, progress=0.3, rescore=lambda ids: [rng.uniform(0, 100) for _ in ids])
    router.route_chunk(list(range(150, 250)), [rng.uniform(0, 100) for _ in range(100)], progress=0.4)

    saved = json.dumps({"router": router.state_dict(), "rng": rng.getstate()})  # what a checkpoint holds
    loaded = json.loads(saved)
    resumed = Router(RASFTRoutingConfig())
    resumed.load_state_dict(loaded["router"])
    resumed_rng = random.Random()
    version, internal, gauss = loaded["rng"]
    resumed_rng.setstate((version, tuple(internal), gauss))
    assert resumed.state_dict() == router.state_dict()

    def rescore(ids):
        return [(7 * i) % 100 for i in ids]

    a = router.refresh(rng, step=64, progress=0.5, rescore=rescore)
    b = resumed.refresh(resumed_rng, step=64, progress=0.5, rescore=rescore)
    assert a == b and a.rollout
    assert json.dumps(router.state_dict()) == json.dumps(resumed.state_dict())


def test_load_rejects_foreign_state():
    with pytest.raises(ValueError, match="RASFT"):
        Router().load_state_dict({"pending": []})


# ----------------------------------------------------------------------------- filtering

LONG = ("first we add five to twelve which gives seventeen then we multiply seventeen by three which gives "
        "fifty one and finally we take away seven which leaves forty four #### 44")


def test_trigrams_and_jaccard():
    assert word_trigrams("A b c D") == {("a", "b", "c"), ("b", "c", "d")}
    assert word_trigrams("#### 44") == {("####", "44")} and word_trigrams("  ") == set()
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5 and jaccard(set(), set()) == 1.0


def test_dedupe_drops_a_near_duplicate_and_keeps_a_distinct_answer():
    near = LONG.replace("finally", "lastly")  # 3 of 30 trigrams change: Jaccard 27/33 = 0.818 < 0.82
    nearer = LONG.replace("#### 44", "#### 44.")  # 1 trigram changes: 29/31 = 0.935
    distinct = "12+5=17 17*3=51 51-7=44 #### 44"
    assert jaccard(word_trigrams(LONG), word_trigrams(nearer)) >= 0.82
    assert jaccard(word_trigrams(LONG), word_trigrams(near)) < 0.82
    assert dedupe([LONG, nearer, distinct, LONG]) == [0, 2]
    assert dedupe([LONG, near]) == [0, 1] and dedupe([LONG, near], threshold=0.8) == [0]


def test_reasoning_words_cut_the_answer_and_its_marker():
    assert reasoning_words("12+5=17 17*3=51 #### 51", "51") == 2
    assert reasoning_words("#### 51", "51") == 0
    assert reasoning_words("So we get 3. So, the answer is: 3", "3") == 4
    assert reasoning_words("x = 2, so \\boxed{2}", "2") == 4


EXPERT = "12+5=17 17*3=51 51-7=44 #### 44"


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   \n", "empty"),
    ("12+5=17 17*3=51 51-7=44", "no_answer"), ("12+5=17 #### ", "no_answer"),
    ("17*3=51 " * 16 + "#### 51", "loop"),  # one 1-word block x16
    ("we add five and get seventeen " * 4 + "#### 17", "loop"),  # a 6-word block x4 = 24 words
    ("#### 44", "shortcut"),
    ("12+5=17 17*3=51 51-7=44 #### 44", None), ("17*3=51 51-7=44 #### 44", None),  # concise but reasoned
    ("12+5=17 17*3=51 51-7=45 #### 45", None),  # wrong is not degenerate
    ("17*3=51 " * 3 + "#### 51", None),  # 3 copies: not yet a loop
])
def test_degenerate_reasons(text, reason):
    assert degenerate_reason(text, EXPERT) == reason


def test_no_shortcut_when_the_expert_shows_no_reasoning_either():
    assert degenerate_reason("#### 44", "#### 44") is None
    assert degenerate_reason("#### 44") is None  # no expert given


def test_filter_group_gives_the_worked_example():
    samples = [EXPERT, EXPERT + " ", "12+5=17 17*3=51 51-7=45 #### 45", "#### 44"]
    group = filter_group(samples, EXPERT)
    assert group.kept == [0, 2, 3] and group.correct == [0] and group.negatives == [2, 3]
    assert group.dropped == {1: "duplicate", 3: "shortcut"}
    assert (group.K, group.k) == (3, 1)
    w = group_weights(group.k, group.K)
    assert round(w.expert, 3) == 0.278 and round(w.correct_rollout, 4) == 0.0087


def test_filter_group_accepts_numeric_equivalents_and_a_custom_verifier():
    group = filter_group(["so 44.0 #### 44.0", "so 88/2 #### 88/2"], "thus #### 44")
    assert group.correct == [0, 1]
    group = filter_group(["so 44.0 #### 44.0"], "thus #### 44", is_correct=lambda text: False)
    assert group.correct == [] and group.negatives == [0]


# ----------------------------------------------------------------------------- config

def test_config_defaults_are_the_published_run():
    cfg = RASFTRoutingConfig()
    assert (cfg.easy_floor_q, cfg.window_start, cfg.window_end, cfg.hard_ceiling_q) == (0.10, (0.20, 0.45),
                                                                                       (0.50, 0.75), 0.90)
    assert (cfg.rollout_fraction, cfg.hard_probe_fraction, cfg.refresh_every, cfg.route_chunk) == (0.35, 0.03, 32, 128)
    assert (cfg.samples_per_problem, cfg.temperature, cfg.top_p, cfg.repetition_penalty) == (3, 0.9, 0.95, 1.1)
    assert cfg.hard_never == "expert" and cfg.calibrate_on_initial


@pytest.mark.parametrize("kw,match", [({"window_start": (0.5, 0.3)}, "window_start"),
                                      ({"easy_floor_q": 0.3}, "easy_floor_q"),
                                      ({"hard_ceiling_q": 1.5}, "hard_ceiling_q"),
                                      ({"route_chunk": 0}, "route_chunk")])
def test_config_rejects_invalid_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        RASFTRoutingConfig(**kw)
