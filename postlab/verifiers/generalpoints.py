"""The GeneralPoints (24 points) verifier: rewards and reasons of Chu et al. (2025).

Reward rules follow the authors' released `step_rewards` (SFTvsRL, `utils_rl.py`), with the
fixes methods.md asks for (exact arithmetic, no `eval`, bounded input):

- illegal characters, or a formula that does not parse: -3 ("illegal characters" /
  "illegal formula"); nothing else is checked;
- numbers: -2 if the formula uses a number that is not a card ("you used invalid numbers:
  [11]"), else -2 if it uses a card more often than dealt ("you used numbers: [8] too many
  times"); another -2 if a card is left unused ("you didn't use numbers: [3]"). In the
  released code each of these is one -2 however many numbers it lists; set
  `per_number=True` to charge -2 per offending number instead;
- numbers right: +5 if the value is exactly the target, else -1 ("your formula does not
  evaluate to 24").

The text after the first "=" is ignored ("8*3=24" is the formula "8*3"), as in the
released code. Unlike it, ASCII spaces between tokens are allowed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from fractions import Fraction

from postlab.verifiers.arith import ArithError, format_fraction, parse

MAX_RESPONSE_CHARS = 16_384  # longer answers are rejected before any parsing

CORRECT, WRONG_VALUE, BAD_NUMBERS, ILLEGAL = 5.0, -1.0, -2.0, -3.0

_FORMULA_KEY = re.compile(r"""["']formula["']\s*:\s*["']([^"'\n]{0,512})["']""")


@dataclasses.dataclass
class GPVerdict:
    reward: float
    success: bool
    kind: str  # "correct" | "wrong value" | "bad numbers" | "illegal"
    reasons: list[str]  # the paper's reason phrases
    short: list[str]  # the same reasons, terse (compact prompt style)
    formula: str | None = None
    value: Fraction | None = None
    numbers: tuple[int, ...] = ()

    def feedback(self, style: str = "paper") -> str:
        """The user turn after a failed attempt (sequential revision)."""
        if style != "paper":  # compact and reason
            return "fail: " + ", ".join(self.short)
        return "You failed this trial because " + ", ".join(self.reasons) + "."

    def as_info(self) -> dict:
        return {"verdict": self.kind, "reasons": list(self.reasons), "formula": self.formula,
                "value": None if self.value is None else format_fraction(self.value),
                "numbers_used": list(self.numbers)}


def extract_formula(text: str, last_field: bool = False) -> str | None:
    """The formula in a response: the JSON "formula" field if the response has one (paper
    style, parsed leniently: trailing commas, single quotes), else the first line (compact
    style), or with `last_field` the last " | " field of the first line (reason style: a
    worked derivation, then the formula; only the formula is scored). Returns None when a
    "formula" key is present but unreadable."""
    if len(text) > MAX_RESPONSE_CHARS:
        return None
    if last_field:
        lines = text.strip().splitlines()
        return lines[0].rsplit("|", 1)[-1].strip() if lines else ""
    if "formula" in text and ("{" in text or '"formula"' in text or "'formula'" in text):
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                obj = json.loads(text[start:end + 1])
                if isinstance(obj, dict) and isinstance(obj.get("formula"), str):
                    return obj["formula"]
            except (ValueError, RecursionError):  # the paper's own template has a trailing comma
                pass
        m = _FORMULA_KEY.search(text)
        return m.group(1) if m else None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def score_formula(formula: str | None, card_values: list[int], target: int = 24,
                  per_number: bool = False) -> GPVerdict:
    """Score a bare formula (left of "=") against the dealt card values."""
    if formula is None:
        return GPVerdict(ILLEGAL, False, "illegal", ["illegal formula"], ["illegal"])
    lhs = formula.split("=", 1)[0]
    try:
        parsed = parse(lhs)
    except ArithError as e:
        short = "illegal chars" if e.kind == "illegal characters" else "illegal"
        return GPVerdict(ILLEGAL, False, "illegal", [e.kind], [short], formula=lhs)

    used, dealt = Counter(parsed.numbers), Counter(card_values)
    reward, reasons, short = 0.0, [], []
    invalid = [n for n in used if n not in dealt]
    overused = [n for n in used if n in dealt and used[n] > dealt[n]]
    unused = [n for n in dealt if dealt[n] > used[n]]
    if invalid:
        reward += BAD_NUMBERS * (len(invalid) if per_number else 1)
        reasons.append(f"you used invalid numbers: {invalid}")
        short.append(f"invalid {invalid}")
    elif overused:  # the released code reports overuse only when no number is invalid
        reward += BAD_NUMBERS * (len(overused) if per_number else 1)
        reasons.append(f"you used numbers: {overused} too many times")
        short.append(f"overused {overused}")
    if unused:
        reward += BAD_NUMBERS * (len(unused) if per_number else 1)
        reasons.append(f"you didn't use numbers: {unused}")
        short.append(f"unused {unused}")
    if reasons:
        return GPVerdict(reward, False, "bad numbers", reasons, short, lhs, parsed.value, parsed.numbers)
    if parsed.value is not None and parsed.value == target:
        return GPVerdict(CORRECT, True, "correct", [], [], lhs, parsed.value, parsed.numbers)
    why = "your formula divides by zero" if parsed.div_zero else f"your formula does not evaluate to {target}"
    return GPVerdict(WRONG_VALUE, False, "wrong value", [why], [f"not {target}"], lhs, parsed.value, parsed.numbers)


def score_response(text: str, card_values: list[int], target: int = 24, per_number: bool = False,
                   last_field: bool = False) -> GPVerdict:
    """Score a whole model response (any prompt style; `last_field` for the reason style)."""
    if not isinstance(text, str):
        return score_formula(None, card_values, target, per_number)
    return score_formula(extract_formula(text, last_field), card_values, target, per_number)
