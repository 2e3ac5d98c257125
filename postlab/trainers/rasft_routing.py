"""RASFT's trainer-independent parts: difficulty routing (here), rollout filtering and group weights
(`postlab.trainers.rasft_groups`).

Rollout-Adaptive SFT (Miao et al., arXiv 2606.07006; methods.md section 3, "Routing and
rollouts" [code]) trains on expert solutions, but calibrates each problem's supervision by
the policy's own verified rollouts. Everything here is pure (numbers, strings, item ids) so
that a trainer step can call it and checkpoint it; the loss itself is objective `rasft`.

One training run, in the order a trainer calls these pieces:

1. Calibration. Difficulty d(x) = mean token cross-entropy of the expert response under the
   current policy. `calibration_sample` picks 1000 random items; `calibrate` turns their
   difficulties into a `Quantiles` (easy floor q.10, window start q.20-q.45, window end
   q.50-q.75, hard ceiling q.90). Faithful: once, with the nearly initial model
   (`calibrate_on_initial`); the alternative recalibrates before each refresh.
2. Routing, in chunks of 128 items (`Router.route_chunk`, per item `route`) with the window
   at progress a = step/total (`window_at`):
       d <= easy_floor                -> expert_easy   expert SFT, A = 1
       window_low <= d <= window_high -> pending       rollout candidate, decided at refresh
       window_high < d <= ceiling     -> hard_pool     expert SFT, A = 1, and into the hard pool
       easy_floor < d < window_low    -> hard_never    expert SFT, A = 1 (the authors' quirk)
       d > ceiling                    -> expert_other  expert SFT, A = 1
3. Refresh, every 32 optimizer steps or when the trainer's ready queue is empty
   (`Router.refresh_due`, `Router.refresh`): 35% of pending are rolled out, the rest become
   expert items (A = 1); 3% of the hard pool are re-scored: below the window -> expert
   (A = 1), leaves the pool; up to the ceiling -> rolled out, leaves the pool; above -> stays.
4. Rollouts: 3 samples per problem at temperature 0.9, top_p 0.95, repetition penalty 1.1
   (the trainer's sampler; the knobs live in `RASFTRoutingConfig`). `filter_group` drops
   near-duplicates (word-trigram Jaccard >= 0.82; K = what is left), marks degenerate samples
   (`degenerate_reason`) and checks the rest against the expert's final answer (k = correct).
5. Weights: `group_weights(k, K)` gives the expert's A and each correct rollout's weight, or
   a fallback to expert-only with A = 1. Wrong rollouts (at most 3) only enter the group's
   reward statistics; they are never trained on.

Steps 4 and 5 live in `postlab.trainers.rasft_groups`. Randomness comes only from a
`random.Random` the trainer passes in and checkpoints, and all state (`Router.state_dict`) is
JSON, so a resumed run makes the same choices.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, Literal, NamedTuple, Sequence

from postlab.config import ConfigError

ROUTES = ("expert_easy", "pending", "hard_pool", "hard_never", "expert_other")
# routes whose items are trained right away as expert data with A = 1
EXPERT_ROUTES = frozenset({"expert_easy", "hard_pool", "hard_never", "expert_other"})


@dataclasses.dataclass
class RASFTRoutingConfig:
    """Every routing, rollout and weighting knob of RASFT; defaults are the published run's.

    Quantile levels are of the calibration sample's difficulty distribution.
    """

    easy_floor_q: float = 0.10  # at or below: easy, expert SFT with A = 1
    window_start: tuple[float, float] = (0.20, 0.45)  # rollout window at progress 0 (quantile levels)
    window_end: tuple[float, float] = (0.50, 0.75)  # rollout window at progress 1; moves linearly in between
    # Above the window up to this level: expert SFT plus the hard pool. The README's published
    # command uses 0.90; the authors' argparse default is 0.95.
    hard_ceiling_q: float = 0.90
    calibration_items: int = 1000  # random items whose difficulties give the quantiles
    # Faithful: quantiles computed once, with the (nearly) initial model, so the window's
    # edges stay in the initial model's difficulty units while the policy gets better: items
    # drift towards "easy" as training goes on. False: recalibrate before every refresh.
    calibrate_on_initial: bool = True
    route_chunk: int = 128  # items scored and routed together
    refresh_every: int = 32  # optimizer steps between refreshes (earlier when the ready queue is empty)
    rollout_fraction: float = 0.35  # share of pending items rolled out at a refresh; the rest -> expert
    hard_probe_fraction: float = 0.03  # share of the hard pool re-scored at a refresh
    samples_per_problem: int = 3  # rollouts per problem
    temperature: float = 0.9
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_new_tokens: int = 1024  # per rollout at paper scale; lab-scale configs set their own
    dedupe_jaccard: float = 0.82  # word-trigram Jaccard at or above which a sample is a near-duplicate
    max_negatives: int = 3  # wrong samples kept for the group's reward statistics (never trained on)
    rollout_weight_scale: float = 0.25  # correct rollout weight = scale * clip(A_pos / (1 + k), lo, hi)
    rollout_weight_clip: tuple[float, float] = (0.02, 0.15)
    advantage_tanh: float = 0.4  # A = tanh(advantage_tanh * z)
    reward_std_eps: float = 1e-6  # z = (r - mean) / (population std + eps)
    # Items with easy_floor < d < window low. "expert" (faithful): trained as expert data with
    # A = 1 and never rolled out, although they are harder than easy. "pending": route them
    # as rollout candidates like the window's items.
    hard_never: Literal["expert", "pending"] = "expert"
    # Degenerate-sample rules (`degenerate_reason`). The spec names the categories but no
    # numbers [recon]; these are postlab's.
    loop_min_repeats: int = 4  # back-to-back copies of one word block that make a loop ...
    loop_min_words: int = 16  # ... when the repeated span is also at least this many words
    loop_max_period: int = 64  # longest block (in words) searched for
    shortcut_fraction: float = 0.25  # fewer reasoning words than this share of the expert's -> shortcut

    def __post_init__(self):
        self.window_start = tuple(self.window_start)
        self.window_end = tuple(self.window_end)
        self.rollout_weight_clip = tuple(self.rollout_weight_clip)
        for name in ("window_start", "window_end", "rollout_weight_clip"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"rasft.{name}: expected [low, high] with low <= high, got {list(lo_hi)}")
        shares = {"easy_floor_q": self.easy_floor_q, "hard_ceiling_q": self.hard_ceiling_q,
                  "window_start[0]": self.window_start[0], "window_start[1]": self.window_start[1],
                  "window_end[0]": self.window_end[0], "window_end[1]": self.window_end[1],
                  "rollout_fraction": self.rollout_fraction, "hard_probe_fraction": self.hard_probe_fraction,
                  "dedupe_jaccard": self.dedupe_jaccard, "shortcut_fraction": self.shortcut_fraction}
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"rasft.{name}: must be in [0, 1], got {value}")
        if self.easy_floor_q > min(self.window_start[0], self.window_end[0]):
            raise ConfigError(f"rasft.easy_floor_q: {self.easy_floor_q} lies above the window's low edge "
                              f"({self.window_start[0]} -> {self.window_end[0]}); lower it or raise the window")
        for name in ("calibration_items", "route_chunk", "refresh_every", "samples_per_problem", "max_new_tokens",
                     "loop_min_repeats", "loop_min_words", "loop_max_period"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rasft.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_negatives < 0:
            raise ConfigError(f"rasft.max_negatives: must be >= 0, got {self.max_negatives}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise ConfigError(f"rasft: temperature ({self.temperature}) must be > 0, top_p ({self.top_p}) in (0, 1], "
                              f"repetition_penalty ({self.repetition_penalty}) > 0")


# ----------------------------------------------------------------------------- calibration

class Window(NamedTuple):
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class Quantiles:
    """Difficulty values (not levels) at the configured quantile levels of the calibration sample."""

    easy_floor: float
    window_start: Window
    window_end: Window
    hard_ceiling: float

    def to_dict(self) -> dict:
        return {"easy_floor": self.easy_floor, "window_start": list(self.window_start),
                "window_end": list(self.window_end), "hard_ceiling": self.hard_ceiling}

    @classmethod
    def from_dict(cls, d: dict) -> "Quantiles":
        return cls(easy_floor=d["easy_floor"], window_start=Window(*d["window_start"]),
                   window_end=Window(*d["window_end"]), hard_ceiling=d["hard_ceiling"])


def quantile(sorted_values: Sequence[float], level: float) -> float:
    """Sample quantile by linear interpolation between order statistics.

    Position h = (n - 1) * level; result x[floor h] + (h - floor h) * (x[floor h + 1] - x[floor h]).
    This is numpy's default (`method="linear"`) and torch.quantile's default
    (`interpolation="linear"`), in plain float64 Python so it is exact and device-free.
    """
    n = len(sorted_values)
    h = (n - 1) * level
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def calibration_sample(num_items: int, cfg: RASFTRoutingConfig, rng: random.Random) -> list[int]:
    """Ids of the items to calibrate on: `calibration_items` drawn without replacement (all if fewer)."""
    return sorted(rng.sample(range(num_items), min(cfg.calibration_items, num_items)))


def calibrate(difficulties: Sequence[float], cfg: RASFTRoutingConfig | None = None) -> Quantiles:
    """Quantiles of the calibration items' difficulties (see `quantile` for the interpolation)."""
    cfg = cfg or RASFTRoutingConfig()
    values = sorted(float(d) for d in difficulties)
    if not values:
        raise ValueError("calibrate: no difficulties given; score at least one item first")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("calibrate: difficulties must be finite (a NaN or inf cross-entropy means a broken forward)")
    return Quantiles(easy_floor=quantile(values, cfg.easy_floor_q),
                     window_start=Window(quantile(values, cfg.window_start[0]), quantile(values, cfg.window_start[1])),
                     window_end=Window(quantile(values, cfg.window_end[0]), quantile(values, cfg.window_end[1])),
                     hard_ceiling=quantile(values, cfg.hard_ceiling_q))


def window_at(progress: float, quantiles: Quantiles) -> Window:
    """The rollout window at progress a = step / total (clamped to [0, 1]).

    low = (1 - a) * Q(0.20) + a * Q(0.50), high = (1 - a) * Q(0.45) + a * Q(0.75): linear in
    difficulty between the calibrated edges. The spec writes the formula on quantile levels;
    both readings agree at a = 0 and a = 1, and in between wherever the calibration sample's
    quantile function is linear (e.g. evenly spread difficulties).
    """
    a = min(max(float(progress), 0.0), 1.0)
    start, end = quantiles.window_start, quantiles.window_end
    return Window((1 - a) * start.low + a * end.low, (1 - a) * start.high + a * end.high)


def route(difficulty: float, window: Window, quantiles: Quantiles, cfg: RASFTRoutingConfig | None = None) -> str:
    """The route of one item (one of ROUTES); the window's edges are inclusive.

    d <= easy_floor -> "expert_easy"; window low <= d <= high -> "pending"; high < d <= ceiling
    -> "hard_pool"; easy_floor < d < low -> "hard_never" (or "pending" with
    cfg.hard_never = "pending"); d > ceiling -> "expert_other".
    """
    cfg = cfg or RASFTRoutingConfig()
    d = float(difficulty)
    if d <= quantiles.easy_floor:
        return "expert_easy"
    if window.low <= d <= window.high:
        return "pending"
    if window.high < d <= quantiles.hard_ceiling:
        return "hard_pool"
    if d < window.low:
        return "hard_never" if cfg.hard_never == "expert" else "pending"
    return "expert_other"


# ----------------------------------------------------------------------------- the router

@dataclasses.dataclass
class RoutedChunk:
    """What one routed chunk asks of the trainer, item ids in input order."""

    expert: list[int]  # train now as expert data with A = 1
    pending: list[int]  # queued as rollout candidates until the next refresh
    routes: list[str]  # the route of every input item


@dataclasses.dataclass
class RefreshPlan:
    """What one refresh asks of the trainer."""

    rollout: list[int]  # roll out now (pending picks, then promoted hard-pool probes)
    expert: list[int]  # train as expert data with A = 1 (pending not picked, probes below the window)
    probed: list[int]  # hard-pool items that were re-scored
    probe_difficulties: list[float]  # their new difficulties, in `probed` order


COUNTERS = ROUTES + ("refreshes", "rolled_out_pending", "pending_to_expert", "probed", "probe_to_expert",
                     "probe_to_rollout", "probe_stayed", "calibrations")


def _share(n: int, fraction: float) -> int:
    """round(fraction * n), halves rounded up (Python's round() rounds halves to even)."""
    return math.floor(fraction * n + 0.5)


class Router:
    """Pending queue, hard pool and counters of one RASFT run, with JSON-serializable state.

    Items are integer ids (indices into the training set). An item is never in both
    `pending` and `hard_pool`: routing it into one removes it from the other, and neither
    holds an item twice. The trainer owns the model (to
    score difficulties), the sampler and a `random.Random` it checkpoints beside this state.
    """

    def __init__(self, cfg: RASFTRoutingConfig | None = None, quantiles: Quantiles | None = None):
        self.cfg = cfg or RASFTRoutingConfig()
        self.quantiles = quantiles
        self.pending: list[int] = []
        self.hard_pool: list[int] = []
        self.counts: dict[str, int] = {name: 0 for name in COUNTERS}
        self.last_refresh_step = 0

    def calibrate(self, difficulties: Sequence[float]) -> Quantiles:
        """Set the quantiles from calibration difficulties (once, or before every refresh when
        cfg.calibrate_on_initial is False)."""
        self.quantiles = calibrate(difficulties, self.cfg)
        self.counts["calibrations"] += 1
        return self.quantiles

    def window(self, progress: float) -> Window:
        return window_at(progress, self._need_quantiles())

    def route_chunk(self, item_ids: Sequence[int], difficulties: Sequence[float], progress: float) -> RoutedChunk:
        """Route one chunk (`cfg.route_chunk` items) at the given progress; updates pending and the pool."""
        if len(item_ids) != len(difficulties):
            raise ValueError(f"route_chunk: {len(item_ids)} items but {len(difficulties)} difficulties")
        quantiles = self._need_quantiles()
        window = window_at(progress, quantiles)
        out = RoutedChunk(expert=[], pending=[], routes=[])
        for item, d in zip(item_ids, difficulties):
            item = int(item)
            name = route(d, window, quantiles, self.cfg)
            out.routes.append(name)
            self.counts[name] += 1
            if name == "pending":
                self._discard(self.hard_pool, item)
                if item not in self.pending:
                    self.pending.append(item)
                out.pending.append(item)
                continue
            if name == "hard_pool":
                self._discard(self.pending, item)
                if item not in self.hard_pool:
                    self.hard_pool.append(item)
            out.expert.append(item)
        return out

    def refresh_due(self, step: int, ready_queue_empty: bool) -> bool:
        """Every `refresh_every` optimizer steps since the last refresh, or when the trainer ran dry."""
        return ready_queue_empty or step - self.last_refresh_step >= self.cfg.refresh_every

    def refresh(self, rng: random.Random, step: int, progress: float,
                rescore: Callable[[list[int]], Sequence[float]]) -> RefreshPlan:
        """Empty the pending queue and probe the hard pool.

        Draws from `rng` in a fixed order: first `rng.sample` of round(0.35 * |pending|) pending
        items to roll out (the others -> expert, A = 1), then `rng.sample` of
        round(0.03 * |pool|) pool items, whose difficulties `rescore(ids)` recomputes under the
        current policy. A probe below the window's low edge -> expert (A = 1) and leaves the
        pool; up to the hard ceiling -> rolled out and leaves the pool (it was given its
        rollout; routing may add it again later); above the ceiling -> stays. Rounding is
        half up, so a queue of 1 pending item rolls out 0 (0.35 rounds down).
        """
        quantiles = self._need_quantiles()
        picked = set(rng.sample(self.pending, _share(len(self.pending), self.cfg.rollout_fraction)))
        rollout = [i for i in self.pending if i in picked]
        expert = [i for i in self.pending if i not in picked]
        probed = rng.sample(self.hard_pool, _share(len(self.hard_pool), self.cfg.hard_probe_fraction))
        new_d = [float(d) for d in rescore(list(probed))] if probed else []
        if len(new_d) != len(probed):
            raise ValueError(f"refresh: rescore returned {len(new_d)} difficulties for {len(probed)} items")
        window = window_at(progress, quantiles)
        for item, d in zip(probed, new_d):
            if d < window.low:
                expert.append(item)
                self._discard(self.hard_pool, item)
                self.counts["probe_to_expert"] += 1
            elif d <= quantiles.hard_ceiling:
                rollout.append(item)
                self._discard(self.hard_pool, item)
                self.counts["probe_to_rollout"] += 1
            else:
                self.counts["probe_stayed"] += 1
        self.counts["refreshes"] += 1
        self.counts["rolled_out_pending"] += len(picked)
        self.counts["pending_to_expert"] += len(self.pending) - len(picked)
        self.counts["probed"] += len(probed)
        self.pending = []
        self.last_refresh_step = int(step)
        return RefreshPlan(rollout=rollout, expert=expert, probed=list(probed), probe_difficulties=new_d)

    def state_dict(self) -> dict:
        """Everything needed to resume, as plain JSON types (floats round-trip exactly through json)."""
        return {"quantiles": None if self.quantiles is None else self.quantiles.to_dict(),
                "pending": list(self.pending), "hard_pool": list(self.hard_pool), "counts": dict(self.counts),
                "last_refresh_step": self.last_refresh_step}

    def load_state_dict(self, state: dict) -> None:
        missing = {"quantiles", "pending", "hard_pool", "counts", "last_refresh_step"} - set(state)
        if missing:
            raise ValueError(f"RASFT router state lacks {sorted(missing)}; is this a RASFT checkpoint?")
        self.quantiles = None if state["quantiles"] is None else Quantiles.from_dict(state["quantiles"])
        self.pending = [int(i) for i in state["pending"]]
        self.hard_pool = [int(i) for i in state["hard_pool"]]
        self.counts = {name: 0 for name in COUNTERS} | {k: int(v) for k, v in state["counts"].items()}
        self.last_refresh_step = int(state["last_refresh_step"])

    def _need_quantiles(self) -> Quantiles:
        if self.quantiles is None:
            raise RuntimeError("RASFT router is not calibrated: call Router.calibrate(difficulties) at set-up")
        return self.quantiles

    @staticmethod
    def _discard(items: list[int], item: int) -> None:
        if item in items:
            items.remove(item)
