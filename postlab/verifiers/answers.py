"""Final-answer extraction and checking for biographies and math.

Extraction understands the formats postlab's environments ask for and the common ones of
real data: the text after the last "So, the answer is:" (biographies, Cheng et al.), the
last `<answer>...</answer>` (DRIFT), the last `\\boxed{...}` (math data), and `#### X`
(GSM8K-style, the compact math style).

Checking is exact match after light normalisation, then exact numeric equality for
numbers (`0.5` == `1/2` == `\\frac{1}{2}`; digit groups of three split by a comma, a space or
a LaTeX thin space: `1,000` == `1\\,000` == `1000`; but `1 2` is not `12`), then, only if
the caller asks for it, symbolic equivalence through `math-verify` (a core dependency since
issue 29: what the field's RL stacks grade with; without it, e.g. a broken install, the fallback
below still reads the common formats). Before the numeric and symbolic checks, `canonical`
rewrites notation that real MATH / GSM8K / AIME answers use and neither path reads alike
(`\\frac12`, units, degrees, `\\$`, `x=`, `\\text{(B)}`, `50\\%` for 50, `3, 4` for `\\{3,4\\}`).
Decimals are exact everywhere: `1.414214` is not `\\sqrt{2}` and `0.333333` is not
`1/3` (math-verify would round both sides to 6 places), and a product with a zero factor and
a symbol or constant (`0z`, `0\\pi`) equals nothing but itself.
`math-verify` is called with LaTeX extraction only: its plain-expression mode hands the
text to sympy's `parse_expr`, which uses `eval`. It runs with its own timeouts, on short
inputs that pass a screen against the inputs that make sympy hang (power towers, huge
factorials), and any exception it raises is a "no".
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_ANSWER_CHARS = 16_384  # responses longer than this have no answer
MAX_MV_CHARS = 160  # math-verify only sees answers this short

MARKER = "So, the answer is:"
_NUMBER = re.compile(r"[+-]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]{1,40})\}\{([^{}]{1,40})\}")
_LATEX_WRAP = re.compile(r"^\\(?:text|mathrm|textbf)\{(.*)\}$", re.S)
_MV_COMMANDS = {"frac", "dfrac", "tfrac", "sqrt", "pi", "cdot", "times", "div", "left", "right", "boxed",
                "text", "mathrm", "infty", "pm", "le", "ge", "leq", "geq", "circ", "degree", "%", ",", "!", " "}


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces matched; None if absent."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        rest = text[idx + len("\\boxed"):].strip()  # "\boxed 5"
        return rest.split()[0] if rest else None
    depth, start = 0, i + 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start:j]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer in a response, or None if it gives none in a known format."""
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    end = text.rfind("</answer>")  # rfind, not a regex: no quadratic scan on hostile input
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    if start >= 0:
        return text[start + len("<answer>"):end].strip()
    k = text.rfind(MARKER)
    if k >= 0:
        rest = text[k + len(MARKER):].strip()
        return rest.splitlines()[0].strip() if rest else ""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    k = text.rfind("####")
    if k >= 0:
        rest = text[k + 4:].lstrip(" \t")
        return rest.splitlines()[0].strip() if rest else ""
    return None


def normalize(ans: str) -> str:
    """Whitespace collapsed, `$`/`\\text{}` wrappers and one trailing period removed."""
    s = " ".join(ans.split())
    s = s.strip("$ ").strip()
    m = _LATEX_WRAP.match(s)
    if m:
        s = m.group(1).strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


def _number_text(ans: str) -> str:
    """`ans` normalised for number parsing. MATH-style spacing goes: `\\!` (negative thin
    space: `10,\\!000`, `44\\!`) is dropped and `{,}` is a comma. A space or a LaTeX space
    (`\\,` `\\;` `\\:` `\\ `) between two digits becomes a comma, so it only passes as a
    thousands separator (`10\\,000`, `10 000`) and `1 2` is no number; other spaces go (`- 3`)."""
    s = normalize(ans).replace("\\!", "").replace("{,}", ",")
    s = re.sub(r"\\[,;: ]", " ", s)
    s = re.sub(r"(?<=\d)\s+(?=\d)", ",", s)
    return re.sub(r"\s+", "", s)


def as_number(ans: str) -> Fraction | None:
    """An exact number for plain numeric answers: 42, -3, 0.5, 1,000, 10\\,000, 3/4, \\frac{3}{4}, 50%."""
    s = _number_text(ans)
    if len(s) > 80:
        return None
    sign = s[0] if s[:1] in ("+", "-") and _FRAC.fullmatch(s[1:]) else ""
    m = _FRAC.fullmatch(s[len(sign):])
    if m:
        s = f"{sign}{m.group(1)}/{m.group(2)}"
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    pct = s.endswith("%") or s.endswith("\\%")
    if pct:
        s = s.rstrip("%").rstrip("\\")
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            if not (_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b)):
                return None
            den = Fraction(b)
            value = Fraction(a) / den if den != 0 else None
        elif _NUMBER.fullmatch(s):
            value = Fraction(s)
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    if value is not None and pct:
        value /= 100
    return value


def _exponents(s: str) -> list[str]:
    """The exponent after each '^': a balanced {...} group, or the next character."""
    out = []
    for i, c in enumerate(s):
        if c != "^":
            continue
        j = i + 1
        while j < len(s) and s[j] == " ":
            j += 1
        if j < len(s) and s[j] == "{":
            depth, k = 0, j
            while k < len(s):
                depth += {"{": 1, "}": -1}.get(s[k], 0)
                if depth == 0:
                    break
                k += 1
            out.append(s[j + 1:k])
        else:
            out.append(s[j:j + 1])
    return out


def _mv_safe(s: str) -> bool:
    """Screen out what makes sympy slow: long text, power towers, big exponents/factorials."""
    if len(s) > MAX_MV_CHARS or not s.isascii() or any(ord(c) < 32 for c in s):
        return False
    if "**" in s or "!" in s or s.count("^") > 2:
        return False
    for exp in _exponents(s):
        if "^" in exp or len(re.sub(r"\D", "", exp)) > 2:
            return False
    if any(len(d) > 30 for d in re.findall(r"\d+", s)):
        return False
    return all(cmd in _MV_COMMANDS for cmd in re.findall(r"\\([a-zA-Z]+|.)", s))


_MV = None


def _math_verify():
    """The math_verify module, or False when it is not installed (imported once, lazily)."""
    global _MV
    if _MV is None:
        try:
            import math_verify

            _MV = math_verify
        except Exception:  # not installed, or broken: the feature is optional
            _MV = False
    return _MV


def math_verify_available() -> bool:
    return bool(_math_verify())


# Digits split by a space or a LaTeX space: LaTeX ignores the space (`1 2` renders as 12), the
# numeric path already had its chance to read a digit group (`10\,000`), so this is no answer.
_SPLIT_DIGITS = re.compile(r"\d(?:\s|\\[,;:! ])+\d")


def _exact_decimals(expr):
    """`expr` with every sympy Float replaced by the exact rational its decimal digits write
    (1.414214 -> 707107/500000), or None when that fails. math-verify compares anything next
    to a Float after rounding both sides to `float_rounding` places (so 1.414214 == sqrt(2)),
    and has no switch to turn that off; without Floats it compares exactly."""
    import sympy

    if isinstance(expr, str):  # parse() also returns the matched text; verify compares it as text
        return expr
    try:
        floats = expr.atoms(sympy.Float)
        return expr.xreplace({f: sympy.Rational(str(f)) for f in floats}) if floats else expr
    except Exception:  # a structure sympy cannot rebuild: no exact comparison, no verdict
        return None


def _zero_product(expr) -> bool:
    """Whether `expr` holds a product of a literal zero and a symbol or constant (`0z`, `0\\pi`,
    `0\\sqrt{2}`): it evaluates to 0, but an answer written so states no number."""
    import sympy

    def plain(a) -> bool:  # a number, or a percentage's 1/100 (X% parses as X * UnevaluatedExpr(1/100))
        return isinstance(a, sympy.Number) or (isinstance(a, sympy.UnevaluatedExpr)
                                               and isinstance(a.args[0], sympy.Number))

    if isinstance(expr, str):
        return False
    try:
        return any(any(isinstance(a, sympy.Number) and a == 0 for a in m.args) and not all(map(plain, m.args))
                   for m in expr.atoms(sympy.Mul))
    except Exception:  # cannot inspect it: treat it as suspect
        return True


def _mv_parse(text: str, mv, timeout: int) -> list | None:
    """math-verify's parse of `$text$`, with decimals made exact; None when it yields nothing usable."""
    cfg = [mv.LatexExtractionConfig()]  # never ExprExtractionConfig: it evals via sympy
    parsed = mv.parse(f"${text}$", extraction_config=cfg, parsing_timeout=timeout)
    if not parsed or any(_zero_product(e) for e in parsed):
        return None
    exact = [_exact_decimals(e) for e in parsed]
    return None if any(e is None for e in exact) else exact


def _mv_equal(pred: str, gold: str, timeout: int = 1) -> bool:
    mv = _math_verify()
    if not mv or not (_mv_safe(pred) and _mv_safe(gold)):
        return False
    if _SPLIT_DIGITS.search(pred) or _SPLIT_DIGITS.search(gold):
        return False
    try:
        g = _mv_parse(gold, mv, timeout)
        p = _mv_parse(pred, mv, timeout)
        if not g or not p:
            return False
        return bool(mv.verify(g, p, timeout_seconds=timeout))
    except Exception:  # math-verify's own errors and timeouts mean "not shown equal"
        return False


# ----------------------------------------------------------------------------- real answer formats
# MATH / GSM8K / AIME answers are written many ways that mean one value. `canonical` rewrites the
# notation (never the value) before any comparison, so the verdict is the same with and without
# math-verify: `\frac12` = `\frac{1}{2}`, `5\text{ cm}` = `5`, `90^\circ` = `90`, `\$5` = `5`,
# `x=5` = `5`, `\text{(B)}` = `B`, `(1, 2)` = `(1,2)`, `\left(`/`\right)` dropped. Values are
# compared by `_value` (scientific notation, integer powers, k*sqrt(m)) and sets item by item.

_UNIT = re.compile(r"^(.*?\d)\s*\\(?:text|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z .^{}0-9]*\}(\^\{?[23]\}?)?$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")
_ASSIGN = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!.*=)(.+)$")


def canonical(ans: str) -> str:
    """`ans` in one notation: the rewrites above, each of which keeps the answer's value."""
    s = normalize(ans)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\$", "").replace("$", "").strip()
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)  # \frac1{2}
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)  # \frac{1}2
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)  # \sqrt3
    s = _DEGREES.sub("", s).strip()
    m = _UNIT.match(s)
    if m:
        s = m.group(1).strip()
    m = _LATEX_WRAP.match(s)  # \text{(B)}
    if m:
        s = m.group(1).strip()
    m = _CHOICE.match(s)
    if m:
        s = m.group(1)
    m = _ASSIGN.match(s)
    if m:
        s = m.group(1).strip()
    s = re.sub(r"\s*,\s*(?=\D|\d{1,2}\b|\d{4,})", ",", s)  # `(1, 2)`; not a digit group (`1, 000`)
    return normalize(s)


def _sqrt_form(s: str) -> tuple[Fraction, int] | None:
    """`k\\sqrt{n}` (k an integer or fraction, n a positive integer) as (k * a, b) with n = a^2 b and b
    squarefree: 2\\sqrt{3} and \\sqrt{12} are both (2, 3)."""
    m = re.fullmatch(r"([+-]?\d{0,12})\s*(?:\\cdot\s*|\\times\s*)?\\sqrt\{(\d{1,12})\}", s)
    if not m:
        return None
    k = {"": 1, "+": 1, "-": -1}.get(m.group(1))
    k = Fraction(m.group(1)) if k is None else Fraction(k)
    n = int(m.group(2))
    if n == 0:
        return Fraction(0), 1
    a, b, f = 1, n, 2
    while f * f <= b:
        while b % (f * f) == 0:
            a, b = a * f, b // (f * f)
        f += 1
    return (k * a, b) if b != 1 else (k * a, 1)


def _value(s: str):
    """An exact value of a numeric answer: a Fraction (plain numbers, `1.5\\times10^{3}`, `10^{10}`,
    `2^5`, `50\\%` read as 50 and as 1/2) as a set of readings, or (k, m) for k*sqrt(m); None otherwise."""
    n = as_number(s)
    if n is not None:
        readings = {n}
        if s.rstrip().endswith("%"):  # MATH writes `50\%` for a gold of 50: the percent sign is notation too
            readings.add(n * 100)
        return frozenset(readings)
    m = re.fullmatch(r"(?:([+-]?\d{1,12}(?:\.\d{1,12})?)\s*(?:\\times|\\cdot|\*)\s*)?(\d{1,7})\s*\^\s*\{?\s*([+-]?\d{1,3})\s*\}?",
                     s)
    if m:
        base, exp = int(m.group(2)), int(m.group(3))
        if base == 0 or abs(exp) * len(str(base)) > 400:
            return None
        mant = Fraction(m.group(1)) if m.group(1) else Fraction(1)
        return frozenset({mant * Fraction(base) ** exp})
    root = _sqrt_form(s)
    if root is not None:
        return frozenset({Fraction(root[0])}) if root[1] == 1 else root
    return None


def _items(s: str) -> tuple[list[str], bool] | None:
    """The items of a set `\\{a,b\\}` (unordered) or a bare list `a, b` (unordered: MATH lists all
    solutions in any order); None for anything else (tuples and intervals keep their brackets)."""
    m = re.fullmatch(r"\\\{(.*)\\\}", s)
    inner = m.group(1) if m else s
    if "," not in inner or re.search(r"[()\[\]{}]", inner.replace("\\frac", "").replace("\\sqrt", "")) and not m:
        return None
    if not m and re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", inner):  # a digit group, not a list
        return None
    parts = [x.strip() for x in inner.split(",")]
    return (parts, True) if all(parts) else None


def _same(p: str, g: str, use_math_verify: bool) -> bool:
    if p == g:
        return True
    pv, gv = _value(p), _value(g)
    if pv is not None and gv is not None:
        if isinstance(pv, frozenset) and isinstance(gv, frozenset):
            return bool(pv & gv)
        return pv == gv
    return use_math_verify and _mv_equal(p, g)


def answers_match(pred: str | None, gold: str, use_math_verify: bool = False) -> bool:
    """Exact match after normalisation, then the same answer in another notation (`canonical`), numeric
    equality, unordered sets, then (optionally) math-verify."""
    if pred is None or not isinstance(pred, str) or len(pred) > MAX_ANSWER_CHARS:
        return False
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    pn, gn = as_number(p), as_number(g)
    if pn is not None and gn is not None and pn == gn:
        return True
    p, g = canonical(p), canonical(g)
    if _same(p, g, use_math_verify):
        return True
    pi, gi = _items(p), _items(g)
    if pi and gi and len(pi[0]) == len(gi[0]):
        rest = list(gi[0])
        for item in pi[0]:
            hit = next((j for j, x in enumerate(rest) if _same(item, x, use_math_verify)), None)
            if hit is None:
                return False
            rest.pop(hit)
        return True
    return False


def exact_match(text: str, gold: str) -> bool:
    """The biographies reward: the extracted final answer equals the gold answer exactly
    (after whitespace and trailing-period normalisation; no numeric or symbolic leniency)."""
    pred = extract_answer(text)
    return pred is not None and normalize(pred) == normalize(gold)


def check_response(text: str, gold: str, use_math_verify: bool = False) -> bool:
    """The math reward: extract the final answer, then `answers_match`."""
    return answers_match(extract_answer(text), gold, use_math_verify)
