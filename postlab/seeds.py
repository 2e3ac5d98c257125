"""Every environment seed postlab draws comes from here: named, disjoint ranges.

An environment seed picks a problem (a hand of cards, a route, a question). Training,
corpus and evaluation problems must never meet: when they lived in six modules, RL seed 1
drew `1 * 1_000_000 + i`, exactly the evaluation problems `1_000_000 + i`, and trained on
what it was evaluated on. So each use owns one half-open range below, the ranges are checked
disjoint at import, and every function asserts that its result stays inside its range.

=============  ==========================  =============================================
range          seeds                       what draws from it
=============  ==========================  =============================================
sft_expert     [0, 1_000_000)              expert demonstrations: run seed s, item i ->
                                           s * 100_003 + i; RASFT's refresh rollouts
                                           replay these problems (each item's own
                                           meta.seed: RASFT samples the problems it
                                           trains on, drawing no new seed)
eval           [1_000_000, 2_000_000)      evaluation problem i -> 1_000_000 + i, the same
                                           problems for every model and every run seed
corpus         [1e7, 1e7 + 10_001*1_000_003)  routes a base corpus builds (navigation's
                                           route reading, turn decisions): generator seed g, item i ->
                                           1e7 + g * 1_000_003 + i
rl             [2e10, 2e10 + 1000 * 1e7)   on-policy training problems (RL, RFT,
                                           DRIFT's offline rollouts):
                                           run seed s, problem i -> 2e10 + s * 1e7 + i
=============  ==========================  =============================================

Base-corpus *generator* seeds (the RNG of `Env.base_corpus(n, seed)`) are not problem seeds;
`corpus_generator_seed` keeps pre-training's and the SFT base mix's apart.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SeedRange:
    name: str
    start: int
    stop: int  # exclusive
    stride: int = 0  # width of one run seed's block (0: one block shared by every run seed)

    def seed(self, index: int, run_seed: int = 0) -> int:
        """The `index`-th problem seed of run seed `run_seed` in this range."""
        if index < 0 or run_seed < 0:
            raise ValueError(f"seed range {self.name!r}: index ({index}) and run seed ({run_seed}) must be >= 0")
        if self.stride and index >= self.stride:
            raise ValueError(f"seed range {self.name!r}: index {index} >= {self.stride} problems per run seed")
        value = self.start + run_seed * self.stride + index
        if not self.start <= value < self.stop:
            raise ValueError(f"seed range {self.name!r}: run seed {run_seed}, index {index} gives {value}, outside "
                             f"[{self.start}, {self.stop}); use fewer problems or a smaller run seed "
                             f"(at most {self.max_run_seed()})")
        return value

    def max_run_seed(self) -> int:
        return (self.stop - self.start) // self.stride - 1 if self.stride else 0

    def __contains__(self, value: int) -> bool:
        return self.start <= value < self.stop


SFT_EXPERT = SeedRange("sft_expert", 0, 1_000_000, stride=100_003)
EVAL = SeedRange("eval", 1_000_000, 2_000_000)
# generator seeds go up to BASE_MIX_OFFSET + run seed, so the corpus range holds 10_001 blocks
CORPUS = SeedRange("corpus", 10_000_000, 10_000_000 + 10_001 * 1_000_003, stride=1_000_003)
RL = SeedRange("rl", 20_000_000_000, 20_000_000_000 + 1_000 * 10_000_000, stride=10_000_000)
RANGES = (SFT_EXPERT, EVAL, RL, CORPUS)


def _check_disjoint() -> None:
    spans = sorted((r.start, r.stop, r.name) for r in RANGES)
    for (a0, a1, a), (b0, b1, b) in zip(spans, spans[1:]):
        assert a1 <= b0, f"seed ranges {a!r} [{a0}, {a1}) and {b!r} [{b0}, {b1}) overlap"


_check_disjoint()


def expert_seed(run_seed: int, index: int) -> int:
    """Env seed of the `index`-th expert demonstration of run seed `run_seed`."""
    return SFT_EXPERT.seed(index, run_seed)


def eval_seed(index: int) -> int:
    """Env seed of evaluation problem `index` (the same for every model and run seed)."""
    return EVAL.seed(index)


def rl_seed(run_seed: int, index: int) -> int:
    """Env seed of the `index`-th on-policy training problem of run seed `run_seed`."""
    return RL.seed(index, run_seed)


def corpus_seed(corpus_seed_: int, index: int) -> int:
    """Env seed of the `index`-th episode a base corpus builds with generator seed `corpus_seed_`."""
    return CORPUS.seed(index, corpus_seed_)


# World seeds (what a world is built from, not a problem): navigation's cities. A study's world
# seed picks its seen cities; unseen (visual-OOD) cities sit UNSEEN_CITY_OFFSET further on, so
# the two sets never share a city while a world has fewer than that many of each.
CITY_STRIDE = 100_003
UNSEEN_CITY_OFFSET = 10_000


def city_seed(world_seed: int, index: int, unseen: bool = False) -> int:
    """RNG seed of the `index`-th seen (or unseen) city of world `world_seed`."""
    if not 0 <= index < UNSEEN_CITY_OFFSET:
        raise ValueError(f"city index {index}: a world has at most {UNSEEN_CITY_OFFSET} cities of each kind")
    return world_seed * CITY_STRIDE + (UNSEEN_CITY_OFFSET if unseen else 0) + index


# Base-corpus generator seeds: pre-training draws `seed`, the SFT base mix `BASE_MIX_OFFSET + seed`, and the
# held-out items that measure forgetting of the base corpus (postlab.eval.drift) one fixed seed below the base
# mix, which no pre-training seed reaches.
BASE_MIX_OFFSET = 7_919
HELD_OUT_CORPUS = BASE_MIX_OFFSET - 1


def corpus_generator_seed(run_seed: int, purpose: str = "pretrain") -> int:
    """RNG seed of `Env.base_corpus` for pre-training, for the items mixed into SFT (`base_mix`), or for the
    held-out items forgetting is measured on (`held_out`: the same for every run seed, like evaluation problems)."""
    if purpose in ("pretrain", "base_mix") and not 0 <= run_seed < HELD_OUT_CORPUS:
        raise ValueError(f"run seed {run_seed}: base corpora are drawn for run seeds 0..{HELD_OUT_CORPUS - 1} "
                         f"(seed {HELD_OUT_CORPUS} draws the held-out items)")
    if purpose == "pretrain":
        return run_seed
    if purpose == "base_mix":
        return BASE_MIX_OFFSET + run_seed
    if purpose == "held_out":
        return HELD_OUT_CORPUS
    raise ValueError(f"corpus purpose {purpose!r}; valid: 'pretrain', 'base_mix', 'held_out'")


# Sampling seeds (the RNG of a sampler, not a problem): one per (run seed, step), and per
# data-parallel rank, so two ranks' rows never draw the same random numbers (rank 0 keeps the
# single-process seed).
RANK_SEED_STRIDE = 1_000_000_007


def sampling_seed(run_seed: int, step: int, rank: int = 0) -> int:
    return run_seed * 7_919 + step + RANK_SEED_STRIDE * rank


# Per-item draws inside a step (the RNG of a choice, not a problem): UFT's hint length per prompt.
ITEM_SEED_STRIDE = 1_000_003


def item_draw_seed(run_seed: int, step: int, item: int) -> int:
    """RNG seed of one item's random draw at `step` (item = the prompt's index in the step, over all
    ranks), the same on every rank and after a resume."""
    return sampling_seed(run_seed, step) * ITEM_SEED_STRIDE + item
