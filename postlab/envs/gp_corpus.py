"""The GeneralPoints base corpus: what a from-scratch model must know for OOD to be possible.

design.md's lab-scale world principle: a tiny model trained only on ID episodes (J/Q/K = 10,
black suits) has never seen what 11, 12 and 13 are, nor a red suit, so its OOD success is 0
by construction. The base corpus fixes that without showing the ID task (cards -> formula
reaching the target). It mixes, in plain lines:

- arithmetic over 1..13 and beyond: binary facts ("12*2=24", "13-8=5", "26/13=2") and
  random expressions over 2-4 numbers with their exact value, fractions included
  ("3-8/3=1/3"), written in the compact answer notation. An expression over 4
  numbers whose value is the target is never included: that would be a 24-points episode;
- both face-card conventions stated in sentences, and card values under each rule for all
  four suits ("rule J=11 Q=12 K=13 | Q♥ is 12", "Under the rule J=Q=K=10, the king of hearts
  counts as 10.");
- card reading: a hand under a rule and its numbers ("rule J=11 Q=12 K=13 | cards K♠ 3♥ 8♦ A♣
  are 13 3 8 1");
- card arithmetic under both rules: 2-4 cards and a random expression over their values
  ("rule J=11 Q=12 K=13 | cards K♠ 3♥ 8♦ | 13*3-8=31"), so the rule is used inside formulas.
  A 4-card expression equal to the target is never included;
- card games in the task's chat form, under both rules: 2-4 cards and the target they make
  "rule J=11 Q=12 K=13 | cards K♠ 3♥ | target 39" -> "13*3=39", or for the `reason` style
  (targets at most 60) the worked derivation "13 3 | 13*3=39 | 13*3=39". A 4-card game never has
  the task's target (24), so the task itself is never shown.
"""

from __future__ import annotations

import random
from fractions import Fraction

from postlab.envs.gp_solver import derivation, render_derivation
from postlab.verifiers.arith import format_fraction

# Reason-style games and steps stay at or below this value: the task's intermediate results stay
# near 24, and a derivation to a target in the hundreds teaches steps the task never takes.
_MAX_REASON_TARGET = 60

_RANKS = {1: "A", 11: "J", 12: "Q", 13: "K"}
_RANK_WORDS = {1: "ace", 11: "jack", 12: "queen", 13: "king"}
_SUITS = {"♠": "spades", "♣": "clubs", "♥": "hearts", "♦": "diamonds"}
_RULES = {10: "rule J=Q=K=10", 11: "rule J=11 Q=12 K=13"}
_RULE_WORDS = {10: "J, Q and K count as 10", 11: "J, Q and K count as 11, 12 and 13"}


def _value(rank: int, face: int) -> int:
    return rank if rank <= 10 or face == 11 else 10


def _name(rank: int) -> str:
    return _RANKS.get(rank, str(rank))


def _binary_fact(rng: random.Random) -> str:
    a, b = rng.randint(1, 13), rng.randint(1, 13)
    if rng.random() < 0.3:  # intermediate results reach beyond 13
        a = rng.randint(1, 40)
    op = rng.choice("+-*/")
    if op == "/":
        a = b * rng.randint(1, 13)  # exact quotients; fractions come from `_expression`
    value = {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op]
    return f"{a}{op}{b}={format_fraction(Fraction(value))}"


def _random_expression(rng: random.Random, values: list[int]) -> tuple[Fraction, str]:
    """A random bracketed expression using each of `values` once, and its exact value."""
    from postlab.envs.gp_solver import join_expression  # the solver's printer: same bracket conventions as answers

    items = [(Fraction(v), str(v), 3) for v in values]
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        a, b = items[i], items[j]
        op = rng.choice([op for op in "+-*/" if op != "/" or b[0] != 0])
        value = {"+": a[0] + b[0], "-": a[0] - b[0], "*": a[0] * b[0], "/": a[0] / b[0] if b[0] else 0}[op]
        items = [x for n, x in enumerate(items) if n not in (i, j)] + [(value, *join_expression(a[1:], op, b[1:]))]
    return items[0][0], items[0][1]


def _expression(rng: random.Random, target: int) -> str:
    while True:
        k = rng.choice((2, 3, 3, 4))
        value, text = _random_expression(rng, [rng.randint(1, 13) for _ in range(k)])
        if k == 4 and value == target:  # a 4-card solution is the ID task itself: never shown
            continue
        return f"{text}={format_fraction(value)}"


def _card_expression(rng: random.Random, target: int) -> str:
    """Cards under a stated rule, then arithmetic over their values (the rule used inside a formula).

    This is what makes rule OOD reachable for a from-scratch model: both rules appear in front of
    formulas, so "K under J=11 Q=12 K=13" is 13 in arithmetic, not only in a sentence. Never a
    4-card expression equal to the target (that would be an episode of the task)."""
    while True:
        face, k = rng.choice((10, 11)), rng.choice((2, 3, 3, 4))
        ranks = [rng.randint(1, 13) for _ in range(k)]
        if rng.random() < 0.6:  # most exercises involve a face card, where the rules differ
            ranks[rng.randrange(k)] = rng.randint(11, 13)
        value, text = _random_expression(rng, [_value(r, face) for r in ranks])
        if k == 4 and value == target:
            continue
        cards = " ".join(f"{_name(r)}{rng.choice(list(_SUITS))}" for r in ranks)
        return f"{_RULES[face]} | cards {cards} | {text}={format_fraction(value)}"


def _card_game(rng: random.Random, target: int, reason: bool = False) -> dict:
    """A number game in the task's own chat form: 2-4 cards under a stated rule, some target.

    Pre-trained LLMs have played many "make N from these numbers" puzzles before the paper's
    SFT; this is the lab-scale stand-in, and the only place where a rule other than the ID one
    meets the chat format. It is never the task itself: the target is whatever the cards make,
    and a 4-card game never has the task's target (measured: with 2-3 card games only, the
    warm-up model reads the OOD rule but cannot build a 4-card formula with it; docs/results.md)."""
    while True:
        face, k = rng.choice((10, 11)), rng.choice((2, 3, 4, 4))
        ranks = [rng.randint(1, 13) for _ in range(k)]
        if rng.random() < 0.7:
            ranks[rng.randrange(k)] = rng.randint(11, 13)
        value, text = _random_expression(rng, [_value(r, face) for r in ranks])
        if (value.denominator == 1 and value > 0 and not (k == 4 and value == target)
                and (not reason or value <= _MAX_REASON_TARGET)):
            break
    cards = " ".join(f"{_name(r)}{rng.choice(list(_SUITS))}" for r in ranks)
    answer = f"{text}={value}"
    if reason:  # the worked derivation the task's reason style answers with, here for another target
        values = [_value(r, face) for r in ranks]
        answer = render_derivation(values, derivation(tuple(values), int(value)), int(value))
    return {"messages": [{"role": "user", "content": f"{_RULES[face]} | cards {cards} | target {value}"},
                         {"role": "assistant", "content": answer}]}


def _card_fact(rng: random.Random) -> str:
    rank, suit, face = rng.randint(1, 13), rng.choice(list(_SUITS)), rng.choice((10, 11))
    if rng.random() < 0.5:
        return f"{_RULES[face]} | {_name(rank)}{suit} is {_value(rank, face)}"
    word = _RANK_WORDS.get(rank, str(rank))
    return f"When {_RULE_WORDS[face]}, the {word} of {_SUITS[suit]} counts as {_value(rank, face)}."


def _hand_reading(rng: random.Random) -> str:
    face = rng.choice((10, 11))
    ranks = [rng.randint(1, 13) for _ in range(4)]
    cards = " ".join(f"{_name(r)}{rng.choice(list(_SUITS))}" for r in ranks)
    return f"{_RULES[face]} | cards {cards} are {' '.join(str(_value(r, face)) for r in ranks)}"


def _rule_sentence(rng: random.Random) -> str:
    return rng.choice([
        "In one game J, Q and K count as 10. In another game J counts as 11, Q as 12 and K as 13.",
        "rule J=Q=K=10 means J is 10, Q is 10 and K is 10.",
        "rule J=11 Q=12 K=13 means J is 11, Q is 12 and K is 13.",
        "A is 1 under every rule. Cards 2 to 10 count as their number.",
        "Suits do not change the value of a card: K♠, K♣, K♥ and K♦ are worth the same.",
        "Hearts ♥ and diamonds ♦ are red suits. Spades ♠ and clubs ♣ are black suits.",
    ])


def _derivation_step(rng: random.Random) -> str:
    """One step of a worked derivation (the `reason` style), on its own: a list of 2-4 numbers,
    two of them combined as derivations combine them (the larger first in - and /, exact
    division only), and the list left: "13 1 12 | 13-1=12 [12 12]". The numbers are what both
    rules produce (1-13) and the intermediate results of hands (up to 30): the arithmetic and
    the bookkeeping of a derivation, never a whole one."""
    while True:  # large products are steps the task (target 24) almost never takes
        k = rng.choice((2, 3, 3, 4))
        nums = [rng.randint(1, 13) if rng.random() < 0.7 else rng.randint(1, 30) for _ in range(k)]
        i, j = sorted(rng.sample(range(k), 2))
        a, b = nums[i], nums[j]
        op = rng.choice(["+", "-", "*"] + (["/"] if max(a, b) % min(a, b) == 0 else []))
        if op in "-/" and a < b:
            a, b = b, a
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if op == "/" else 0}[op]
        if value <= _MAX_REASON_TARGET:
            break
    left = [x for n, x in enumerate(nums) if n not in (i, j)] + [value]
    return f"{' '.join(map(str, nums))} | {a}{op}{b}={value} [{' '.join(map(str, left))}]"


_MIX = ((0.2, _expression), (0.15, _binary_fact), (0.15, _card_fact), (0.1, _hand_reading), (0.15, _card_expression),
        (0.2, _card_game), (0.05, _rule_sentence))
# The `reason` corpus teaches the steps of a derivation: mostly steps and card games in the
# derivation form (under both rules), less free-form arithmetic. Measured (docs/results.md): with
# the compact mix, a warm-up's steps were right on 27 of 128 ID hands, and it read the stated
# rule on 18 of 128 rule-OOD hands.
_REASON_MIX = ((0.05, _expression), (0.3, _derivation_step), (0.1, _card_fact), (0.1, _hand_reading),
               (0.05, _card_expression), (0.35, _card_game), (0.05, _rule_sentence))
_TAKES_TARGET = (_expression, _card_expression, _card_game)


def gp_base_corpus(n: int, seed: int = 0, target: int = 24, reason: bool = False) -> list[str | dict]:
    """`n` items, deterministic from `seed`: short lines, and chat records (``{"messages": ...}``)
    for the small card games; with `reason` the games are answered with worked derivations
    (the env's `reason` style), so pre-training teaches the steps under both rules."""
    if n < 0:
        raise ValueError(f"base_corpus: n must be >= 0, got {n}")
    rng = random.Random(f"generalpoints-corpus/{seed}")
    out = []
    mix = _REASON_MIX if reason else _MIX
    for _ in range(n):
        r, acc = rng.random(), 0.0
        for p, fn in mix:
            acc += p
            if r < acc or fn is mix[-1][1]:
                if fn is _card_game:
                    out.append(fn(rng, target, reason))
                else:
                    out.append(fn(rng, target) if fn in _TAKES_TARGET else fn(rng))
                break
    return out
