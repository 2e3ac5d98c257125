"""Navigation action verifier (V-IRL language variant, Chu et al. 2025, `step_rewards_virl`).

An answer is one action: `forward()`, `stop()` or `turn_direction(x)`, with x one of the 8
compass directions (absolute action space) or left / right / slightly left / slightly right
(relative action space). Paper-style answers are JSON with "current observation",
"current instruction" and "action"; compact answers are the action, optionally after the
restated current instruction ("3. turn right to S. => turn S", the JSON fields compacted), and
short spellings are accepted by the same verifier ("forward", "turn NE", "turn slightly left").

Rewards, as the released code: +1 correct action; -1.5 when the action is wrong and the
answer's "current observation" wrongly claims (or denies) being at an intersection; -1 for
any other wrong action (including an unparsable answer or a direction outside the split's
action space).
"""

from __future__ import annotations

import dataclasses
import json
import re

MAX_RESPONSE_CHARS = 16_384

COMPASS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")
ABBR = {"n": "north", "ne": "northeast", "e": "east", "se": "southeast", "s": "south", "sw": "southwest",
        "w": "west", "nw": "northwest"}
SHORT = {v: k.upper() for k, v in ABBR.items()}
RELATIVE = ("left", "right", "slightly left", "slightly right")

CORRECT, WRONG_ACTION, WRONG_OBSERVATION = 1.0, -1.0, -1.5

_FIELD = {k: re.compile(rf"""["']{k}["']\s*:\s*["']([^"'\n]{{0,300}})["']""")
          for k in ("action", "current observation", "current instruction")}
_TURN = re.compile(r"^turn(?:_direction)?\s*(?:\(\s*([a-z ]{1,20}?)\s*\)|\s([a-z ]{1,20}))$")


@dataclasses.dataclass
class NavVerdict:
    reward: float
    correct: bool
    kind: str  # "correct" | "wrong action" | "wrong observation"
    action: tuple | None  # the parsed action, e.g. ("turn", "northeast"), ("forward",), or None
    reason: str = ""


def parse_action(text: str) -> tuple | None:
    """("forward",), ("stop",), ("turn", direction) or None. Directions are full lowercase
    names ("northeast", "slightly left"); quotes, a trailing period and case are ignored."""
    if not isinstance(text, str) or len(text) > 200:
        return None
    s = " ".join(text.strip().strip("\"'`.").strip().lower().split())
    if s in ("forward", "forward()", "fwd"):
        return ("forward",)
    if s in ("stop", "stop()"):
        return ("stop",)
    m = _TURN.match(s)
    if not m:
        return None
    x = (m.group(1) or m.group(2) or "").strip().strip("'\"")
    x = ABBR.get(x, x)
    if x in COMPASS or x in RELATIVE:
        return ("turn", x)
    return None


RESTATE = " => "  # compact answers: "<current instruction> => <action>"


def extract_fields(text: str) -> dict:
    """The JSON fields of a paper-style answer (parsed leniently), the two fields of a compact
    restated answer, or {"action": text}."""
    if len(text) > MAX_RESPONSE_CHARS:
        return {}
    if '"action"' in text or "'action'" in text:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                obj = json.loads(text[start:end + 1])
                if isinstance(obj, dict):
                    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, str)}
            except (ValueError, RecursionError):  # the paper's template has a trailing comma
                pass
        return {k: m.group(1) for k, rx in _FIELD.items() if (m := rx.search(text))}
    if RESTATE.strip() in text:
        instruction, _, action = text.rpartition(RESTATE.strip())
        return {"current instruction": instruction.strip(), "action": action}
    return {"action": text}


def format_action(action: tuple, style: str = "paper") -> str:
    if action[0] in ("forward", "stop"):
        return f"{action[0]}()" if style == "paper" else action[0]
    x = action[1]
    return f"turn_direction({x})" if style == "paper" else f"turn {SHORT.get(x, x)}"


def action_space_used(action: tuple | None, stated: str) -> str:
    """Which action space a turn answer uses: 'stated' (the prompt's mode, "absolute" or
    "relative"), 'other' (the other mode's words, e.g. a compass turn on a relative prompt: the
    ID action space applied where the prompt says otherwise) or 'neither' (no parsable turn).
    Evaluation counts it on the opening turn of rule-OOD routes, where success alone is 0."""
    if action is None or action[0] != "turn":
        return "neither"
    return "stated" if ("absolute" if action[1] in COMPASS else "relative") == stated else "other"


def score_action(text: str, gold: tuple, at_intersection: bool) -> NavVerdict:
    """Score one answer against the ground-truth action at the current rail position."""
    if not isinstance(text, str):
        return NavVerdict(WRONG_ACTION, False, "wrong action", None, "you made an incorrect action")
    fields = extract_fields(text)
    action = parse_action(fields.get("action", ""))
    if action == gold:
        return NavVerdict(CORRECT, True, "correct", action)
    claim = fields.get("current observation")
    if claim is not None:
        says_intersection = "intersection" in claim.lower()
        if says_intersection and not at_intersection:
            return NavVerdict(WRONG_OBSERVATION, False, "wrong observation", action, "you are not at any intersection")
        if at_intersection and not says_intersection:
            return NavVerdict(WRONG_OBSERVATION, False, "wrong observation", action, "you are at an intersection")
    return NavVerdict(WRONG_ACTION, False, "wrong action", action, "you made an incorrect action")
