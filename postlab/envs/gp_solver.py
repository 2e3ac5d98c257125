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


def join_expression(a: tuple[str, int], op: str, b: tuple[str, int]) -> tuple[str, int]:
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
                                out.add(join_expression(ea, op, eb))
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


# -- worked derivations (the `reason` answer style) ---------------------------------------------
# A derivation reduces the hand one binary step at a time: combine two numbers of the current list,
# write the step and the list that is left, until one number is left. Each step is local (two
# numbers and a list), so a model that learned the steps on ID hands can take them on hands it
# never saw; a formula recalled per value multiset cannot be (docs/results.md, issue 17).

Step = tuple[int, int, str, Fraction]  # (index a, index b) into the current list, op, result


def _steps_from(items: tuple[Fraction, ...], target: Fraction, integer: bool):
    """Every derivation (a tuple of steps) from `items` to `target`, in a fixed order.

    With `integer`, `-` and `/` take the larger number first and `/` must divide exactly, so
    every intermediate is a non-negative integer; without it every order is tried."""
    if len(items) == 1:
        if items[0] == target:
            yield ()
        return
    for i, j in itertools.combinations(range(len(items)), 2):
        a, b = items[i], items[j]
        hi, lo = (i, j) if a >= b else (j, i)
        big, small = items[hi], items[lo]
        cand = [(i, j, "+", a + b), (hi, lo, "-", big - small), (i, j, "*", a * b)]
        if small != 0 and (not integer or big % small == 0):
            cand.append((hi, lo, "/", big / small))
        if not integer:  # the fallback for hands like 8/(3-8/3): every order
            cand += [(lo, hi, "-", small - big)] + ([(lo, hi, "/", small / big)] if big != 0 else [])
        for step in cand:
            rest = tuple(x for k, x in enumerate(items) if k not in (i, j)) + (step[3],)
            for tail in _steps_from(rest, target, integer):
                yield (step,) + tail


@functools.lru_cache(maxsize=65_536)
def derivation(values: tuple[int, ...], target: int = 24) -> tuple[Step, ...] | None:
    """The canonical worked derivation of a hand (in dealt order), or None if unsolvable.

    One derivation per hand (a function to imitate, as `expert_choice="canonical"`): integer
    intermediates if any derivation has them, then the smallest largest intermediate (numbers a
    small model has seen most; 24 for ~90% of hands), ties by the enumeration order (pairs left
    to right, ops + - * /)."""
    start, goal = tuple(Fraction(v) for v in values), Fraction(target)
    for integer in (True, False):
        best, best_key = None, None
        for d in _steps_from(start, goal, integer):
            key = max(abs(s[3]) for s in d)  # the largest intermediate
            if best_key is None or key < best_key:
                best, best_key = d, key
                if key <= abs(goal):  # the last step's result is the goal: nothing smaller exists
                    break
        if best is not None:
            return best
    return None


def _number(x: Fraction) -> str:
    """An operand inside a step: fractions bracketed so `8/(1/3)` does not read as `8/1/3`."""
    return str(x.numerator) if x.denominator == 1 else f"({x.numerator}/{x.denominator})"


def render_derivation(values: list[int], steps: tuple[Step, ...], target: int) -> str:
    """The `reason` answer: `9 3 13 1 | 13-1=12 [9 3 12] | 9+3=12 [12 12] | 12+12=24 | (13-1)+(9+3)=24`.

    Fields: the card values, one field per step (the step, then the list left, except after the
    last), and the formula: step results in brackets, cards bare. Only the formula is scored."""
    from postlab.verifiers.arith import format_fraction

    items = [(Fraction(v), str(v), True) for v in values]  # (value, expression, is a card)
    fields = [" ".join(str(v) for v in values)]
    for n, (i, j, op, value) in enumerate(steps):
        (va, ea, la), (vb, eb, lb) = items[i], items[j]
        expr = f"{ea if la else f'({ea})'}{op}{eb if lb else f'({eb})'}"
        items = [x for k, x in enumerate(items) if k not in (i, j)] + [(value, expr, False)]
        field = f"{_number(va)}{op}{_number(vb)}={format_fraction(value)}"
        if n < len(steps) - 1:
            field += " [" + " ".join(format_fraction(x[0]) for x in items) + "]"
        fields.append(field)
    fields.append(f"{items[0][1]}={target}")
    return " | ".join(fields)
