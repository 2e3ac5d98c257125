"""A small, safe parser for exact arithmetic over `+ - * / ( )` and integer literals.

Model text is never given to `eval`/`exec`: it is tokenized by hand, parsed by recursive
descent and evaluated with `fractions.Fraction`, so `8/(3-8/3)` is exactly 24 (a float
evaluation gives 23.999999999999996 and wrongly rejects it, a bug of public 24-points
verifiers). Every resource is bounded before any work is done:

- input length (`MAX_CHARS`), so a 1 MB string is rejected in O(1);
- bracket nesting (`MAX_DEPTH`), so 10,000 nested brackets cannot exhaust the stack;
- literal size (`MAX_DIGITS`), and there is no exponent operator, so no `9**9**9` blow-up:
  the largest value n literals of d digits can reach has about n*d digits.

Division by zero is not an exception for callers: the parse succeeds (the formula is
legal) and `Parsed.value` is None with `Parsed.div_zero` set, because a verifier still
needs the literals the formula used to score it.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

MAX_CHARS = 256
MAX_DEPTH = 32
MAX_DIGITS = 9

_OPS = "+-*/"
_SPACE = " \t"


class ArithError(ValueError):
    """The text is not a formula. `kind` is "illegal characters" or "illegal formula"."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclasses.dataclass(frozen=True)
class Parsed:
    value: Fraction | None  # None when the formula divides by zero
    numbers: tuple[int, ...]  # integer literals in order of appearance
    div_zero: bool = False


def tokenize(text: str) -> list[str]:
    """Split into integer literals, operators and brackets; ASCII spaces/tabs are skipped."""
    if len(text) > MAX_CHARS:
        raise ArithError("illegal formula", f"longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif "0" <= c <= "9":  # ASCII digits only: str.isdigit() accepts '²' and other scripts
            j = i
            while j < n and "0" <= text[j] <= "9":
                j += 1
            if j - i > MAX_DIGITS:
                raise ArithError("illegal formula", f"number longer than {MAX_DIGITS} digits")
            tokens.append(text[i:j])
            i = j
        elif c in _OPS or c in "()":
            tokens.append(c)
            i += 1
        else:
            raise ArithError("illegal characters", f"character {c!r} at position {i}")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := INT | '(' expr ')'. No unary minus: the 24-points rules only combine cards."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0
        self.numbers: list[int] = []
        self.div_zero = False

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> Fraction | None:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.term()
            value = None if value is None or rhs is None else (value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction | None:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.factor()
            if value is None or rhs is None:
                value = None
            elif op == "*":
                value = value * rhs
            elif rhs == 0:
                self.div_zero, value = True, None
            else:
                value = value / rhs
        return value

    def factor(self) -> Fraction | None:
        tok = self.peek()
        if tok is None:
            raise ArithError("illegal formula", "unexpected end")
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ArithError("illegal formula", f"brackets nested deeper than {MAX_DEPTH}")
            self.pos += 1
            value = self.expr()
            if self.peek() != ")":
                raise ArithError("illegal formula", "unbalanced brackets")
            self.pos += 1
            self.depth -= 1
            return value
        if tok[0].isdigit():
            self.pos += 1
            self.numbers.append(int(tok))
            return Fraction(int(tok))
        raise ArithError("illegal formula", f"unexpected {tok!r}")


def parse(text: str) -> Parsed:
    """Parse and evaluate exactly; raises ArithError for anything that is not a formula."""
    tokens = tokenize(text)
    if not tokens:
        raise ArithError("illegal formula", "empty")
    p = _Parser(tokens)
    value = p.expr()
    if p.pos != len(tokens):
        raise ArithError("illegal formula", f"unexpected {tokens[p.pos]!r}")
    return Parsed(value=value, numbers=tuple(p.numbers), div_zero=p.div_zero)


def evaluate(text: str) -> Fraction | None:
    """The exact value, or None if the text is not a formula or divides by zero."""
    try:
        return parse(text).value
    except ArithError:
        return None


def format_fraction(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
