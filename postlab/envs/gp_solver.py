"""Exhaustive exact solver for GeneralPoints (the 24 game over any target).

Every binary expression tree over the cards is reached by repeatedly combining two
sub-results with + - * / (both orders for - and /). Arithmetic is exact (Fraction), so
`8/(3-8/3)` counts. Two entry points:

- `is_solvable(values, target)`: fast. It caches the set of values each sub-multiset of
  cards can reach, then for each split of the hand into two parts asks whether some value
  of one part has the complementary value in the other part: O(1) set look-ups per value
  instead of enumerating every expression. All 1820 hands are checked in well under a second.
- `solutions(values, target)`: every distinct formula string that reaches the target,
  printed with the fewest brackets precedence allows (so "simplest" is well defined).
"""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

# operator precedence for printing: leaves 3, * / 2, + - 1
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _combine(a: Fraction, b: Fraction) -> list[Fraction]:
    out = [a + b, a - b, b - a, a * b]
    if b != 0:
        out.append(a / b)
    if a != 0:
        out.append(b / a)
    return out


@functools.lru_cache(maxsize=None)
def reachable(values: tuple[int, ...]) -> frozenset[Fraction]:
    """All exact values an expression using each of `values` once can take (sorted key)."""
    if len(values) == 1:
        return frozenset([Fraction(values[0])])
    out: set[Fraction] = set()
    for left, right in _splits(values):
        ra, rb = reachable(left), reachable(right)
        for a in ra:
            for b in rb:
                out.update(_combine(a, b))
    return frozenset(out)


def _splits(values: tuple[int, ...]):
    """Unordered splits of a sorted multiset into two non-empty sorted parts (deduplicated)."""
    n, seen = len(values), set()
    for r in range(1, n // 2 + 1):
        for idx in itertools.combinations(range(n), r):
            left = tuple(values[i] for i in idx)
            right = tuple(values[i] for i in range(n) if i not in idx)
            key = (left, right) if left <= right else (right, left)
            if key not in seen:
                seen.add(key)
                yield key


@functools.lru_cache(maxsize=None)
def _solvable_sorted(values: tuple[int, ...], target: Fraction) -> bool:
    if len(values) == 1:
        return values[0] == target
    for left, right in _splits(values):
        rb = reachable(right)
        for a in reachable(left):
            if any(b in rb and (b != 0 or p_ok) for b, p_ok in _partner_checks(a, target)):
                return True
            if a == 0 and target == 0 and rb:  # 0*b = 0 and 0/b = 0
                return True
    return False


def _partner_checks(a: Fraction, t: Fraction):
    """(b, zero_allowed): the division cases need b != 0."""
    yield t - a, True
    yield a - t, True
    yield t + a, True
    if a != 0:
        yield t / a, True  # a*b = t (b = 0 only if t = 0, handled by value equality)
        yield t * a, True  # b/a = t
    if t != 0:
        yield a / t, False  # a/b = t needs b != 0 (a/t == 0 iff a == 0, then a/b = 0 != t)


def is_solvable(values, target: int = 24) -> bool:
    return _solvable_sorted(tuple(sorted(int(v) for v in values)), Fraction(target))


def _join(a: tuple[str, int], op: str, b: tuple[str, int]) -> tuple[str, int]:
    """(text, prec) of a op b, with brackets only where precedence needs them."""
    ta, pa = a
    tb, pb = b
    p = _PREC[op]
    if pa < p:
        ta = f"({ta})"
    if pb < p or (pb == p and op in "-/"):
        tb = f"({tb})"
    return f"{ta}{op}{tb}", p


def _right_operands(a: Fraction, op: str, t: Fraction, rb: frozenset[Fraction]):
    """The values b in `rb` with a (op) b == t."""
    if op == "+":
        need = [t - a]
    elif op == "-":
        need = [a - t]
    elif op == "*":
        if a == 0:
            return list(rb) if t == 0 else []
        need = [t / a]
    else:  # a / b == t, b != 0
        if t == 0:
            return [b for b in rb if b != 0] if a == 0 else []
        need = [a / t] if a != 0 else []
    return [b for b in need if b in rb and (op != "/" or b != 0)]


@functools.lru_cache(maxsize=100_000)
def _exprs(values: tuple[int, ...], target: Fraction) -> tuple[tuple[str, int], ...]:
    """Every expression (text, prec) over the sorted multiset `values` whose value is `target`.

    Top-down: choose the root's split and operator, then only recurse into operand values
    that can actually occur (`reachable`), so strings are built for solutions only."""
    if len(values) == 1:
        return ((str(values[0]), 3),) if values[0] == target else ()
    out: set[tuple[str, int]] = set()
    for left, right in _splits(values):
        for A, B in ((left, right), (right, left)) if left != right else ((left, right),):
            rb = reachable(B)
            for a in reachable(A):
                for op in "+-*/":
                    for b in _right_operands(a, op, target, rb):
                        for ea in _exprs(A, a):
                            for eb in _exprs(B, b):
                                out.add(_join(ea, op, eb))
    return tuple(out)


@functools.lru_cache(maxsize=8192)
def _solutions_sorted(values: tuple[int, ...], target: Fraction) -> tuple[str, ...]:
    found = {text for text, _ in _exprs(values, target)}
    return tuple(sorted(found, key=lambda s: (s.count("("), len(s), s)))


def solutions(values, target: int = 24) -> tuple[str, ...]:
    """Every distinct solution formula, simplest first (fewest brackets, then shortest)."""
    return _solutions_sorted(tuple(sorted(int(v) for v in values)), Fraction(target))


def count_solvable(face_values: tuple[int, int, int] = (11, 12, 13), target: int = 24, n_cards: int = 4) -> int:
    """How many of the C(13+n-1, n) rank multisets are solvable (1362 of 1820 for 11/12/13, 24)."""
    value = {r: r for r in range(1, 11)} | dict(zip((11, 12, 13), face_values))
    return sum(is_solvable([value[r] for r in ranks], target)
               for ranks in itertools.combinations_with_replacement(range(1, 14), n_cards))
