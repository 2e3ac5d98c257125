"""GeneralPoints: the 24-points card game of "SFT Memorizes, RL Generalizes" (Chu et al., 2025).

Splits (the paper's two OOD axes, methods.md section 1):

- `id`: ranks uniform in 1..13, J/Q/K count as 10, black suits (spades, clubs).
- `ood-rule`: J/Q/K count as 11/12/13; three ranks uniform and one forced to be J, Q or K,
  so every hand is affected by the rule. Black suits.
- `ood-visual`: the text analogue of the paper's visual OOD: red suits (hearts, diamonds)
  with the ID rule.

Hands are re-dealt until solvable by the exact solver. The episode is multi-turn sequential
revision: after a failed attempt the user says "You failed this trial because {reasons}",
up to `verify_iter` (alias `max_turns`, default 5) evaluated attempts; a correct formula
(+5) ends it.

Prompt styles. `paper`: the authors' language prompt, answer as JSON with "cards",
"number" and "formula". `compact` (postlab's, for tiny char-level models)::

    user:      rule J=Q=K=10 | cards 3♣ 4♣ 9♣ 9♠          (seed 0)
    assistant: 4*9-9-3=24
    user:      rule J=11 Q=12 K=13 | cards 9♣ 3♣ K♠ A♣    (ood-rule, seed 0)
    assistant: 13-1+3+9=24

`reason` (postlab's, issue 17): the compact prompt, and an answer that works the hand out
before the formula, the compact analogue of the paper's "thought" field. The values under the
stated rule, then one binary step per field with the numbers left, then the formula; only
the formula (the last field) is scored::

    user:      rule J=11 Q=12 K=13 | cards 9♣ 3♣ K♠ A♣
    assistant: 9 3 13 1 | 9+3=12 [13 1 12] | 13-1=12 [12 12] | 12+12=24 | (9+3)+(13-1)=24

A model that recalls a formula per value multiset has nothing to recall on a rule-OOD hand;
one that learned the steps can take them there, since 11-13 occur as intermediate results of
ID hands (`gp_solver.derivation` picks one derivation per hand).

The rule is always in the prompt ("rule J=11 Q=12 K=13" for ood-rule) so a model can
condition on it; the target is added (" | target 30") only when it is not 24.

The expert's answer: with `expert_choice="simple"` (default) a formula with the fewest
brackets, chosen among those by the episode seed (easier to imitate for tiny models);
with "any", uniformly among all distinct solutions, as the paper's SFT data does; with
"canonical", always the first of the simplest (one answer per hand: a function, not a
distribution, to imitate).
"""

from __future__ import annotations

import json
import random
import re

from postlab.envs.base import Env, Observation, StepResult, register_env, reject_unknown_options
from postlab.envs.gp_solver import derivation, is_solvable, render_derivation, solutions
from postlab.verifiers.generalpoints import MAX_RESPONSE_CHARS, GPVerdict, score_response

RANK_NAMES = {1: "A", 11: "J", 12: "Q", 13: "K"}
BLACK, RED = ("♠", "♣"), ("♥", "♦")

# The paper's face-card messages and language prompt (Q_GeneralPoint_EQN_L, SFTvsRL code).
FACE_MSG = {10: "'J', 'Q', and 'K' count as '10'",
            11: "'J', 'Q', and 'K' count as '11', '12', and '13' respectively"}
COMPACT_RULE = {10: "rule J=Q=K=10", 11: "rule J=11 Q=12 K=13"}
PAPER_PROMPT = """[Task Description]
You are an expert {target} points card game player. You will receive a set of 4 cards.
Note that {face_msg}, and each card must be used once.
Your goal is to output a formula that evaluates to {target} using numbers from the cards and operators such as '+', '-', '*', '/', '(', ')', and '='.

[Input]
Cards: {cards}

[Output]
{{
  "cards": [x, y, z, w], where {face_msg},
  "number": [a, b, c, d], where a, b, c, and d are the numbers on the cards,
  "formula": 'an equation that equals {target}',
}}
"""

SPLITS = {  # split -> (face value of J, forced face card, suits)
    "id": (10, False, BLACK),
    "ood-rule": (11, True, BLACK),
    "ood-visual": (10, False, RED),
}


def rank_name(rank: int) -> str:
    return RANK_NAMES.get(rank, str(rank))


def card_value(rank: int, face: int) -> int:
    """Value of a rank under the rule: face == 10 (J/Q/K = 10) or 11 (J/Q/K = 11/12/13)."""
    return rank if rank <= 10 else (10 if face == 10 else rank)


def face_rule_applied(text: str, ranks: list[int], face: int) -> str | None:
    """Which face-card convention an answer applies, for a hand with a J, Q or K (else None).

    'stated': it writes a face card's value under the prompt's rule; 'other': it writes the
    value the other convention gives (10 under J=11 Q=12 K=13, 11-13 under J=Q=K=10) where no
    card has that value; 'neither' otherwise. On rule-OOD hands a model that memorized the ID
    rule answers 'other' even when it cannot reach the target: a memorization signal that a
    success rate of 0 cannot show (`face_rule` in evaluation diagnostics)."""
    faces = [r for r in ranks if r > 10]
    if not faces:
        return None
    # card values have at most 2 digits; longer digit runs are not card values (and int() of a
    # hostile 5,000-digit run would raise)
    numbers = {int(x) for x in re.findall(r"\d+", text[:MAX_RESPONSE_CHARS].split("=")[0]) if len(x) <= 3}
    values = {card_value(r, face) for r in ranks}
    stated = {card_value(r, face) for r in faces}
    other = {card_value(r, 11 if face == 10 else 10) for r in faces} - values
    if stated & numbers:
        return "stated"
    if other & numbers:
        return "other"
    return "neither"


def values_read(text: str, ranks: list[int], face: int) -> str | None:
    """Which rule the values field of a reason-style answer reads the hand under (else None).

    The reason answer starts with every card's value ("13 3 8 1 | ..."). On a hand with a J, Q
    or K: 'stated' when all four values are the stated rule's, 'other' when they are the other
    rule's (J/Q/K = 10 on a rule-OOD hand: the memorized ID rule), 'neither' otherwise (a
    mix, a misread card, no values field). Stricter than `face_rule`, which counts an answer
    as 'stated' as soon as one face value of the rule appears anywhere before the first "="."""
    faces = [r for r in ranks if r > 10]
    if not faces or not isinstance(text, str) or " | " not in text[:MAX_RESPONSE_CHARS]:
        return None
    head = text.split(" | ", 1)[0].split()
    if len(head) != len(ranks) or not all(t.isascii() and t.isdigit() and len(t) <= 3 for t in head):
        return "neither"
    read = [int(t) for t in head]
    if read == [card_value(r, face) for r in ranks]:
        return "stated"
    if read == [card_value(r, 11 if face == 10 else 10) for r in ranks]:
        return "other"
    return "neither"


def deal(rng: random.Random, face: int, force_face: bool, suits: tuple[str, ...], target: int = 24,
         n_cards: int = 4) -> tuple[list[int], list[str]]:
    """Deal ranks (and suit symbols) until the hand is solvable under the rule."""
    while True:
        ranks = [rng.randint(1, 13) for _ in range(n_cards - 1 if force_face else n_cards)]
        if force_face:  # as the authors' OOD generator: 3 random ranks + one J/Q/K, shuffled
            ranks.append(rng.randint(11, 13))
            rng.shuffle(ranks)
        cards_suits = [rng.choice(suits) for _ in ranks]
        if is_solvable([card_value(r, face) for r in ranks], target):
            return ranks, cards_suits


@register_env("generalpoints")
class GeneralPoints(Env):
    """24 points with rule (J/Q/K value) and suit (visual analogue) OOD splits."""

    splits = tuple(SPLITS)
    styles = ("compact", "reason", "paper")
    diagnostics = ("face_rule", "values_read")  # step-info categories evaluation counts on first attempts

    def __init__(self, split: str = "id", style: str = "compact", verify_iter: int | None = None,
                 max_turns: int | None = None, target: int = 24, expert_choice: str = "simple",
                 per_number_penalty: bool = False, **kwargs):
        if verify_iter is not None and max_turns is not None and verify_iter != max_turns:
            raise ValueError(f"generalpoints: verify_iter={verify_iter} and its alias max_turns={max_turns} disagree; "
                             "give one of them")
        turns = verify_iter if verify_iter is not None else (max_turns if max_turns is not None else 5)
        reject_unknown_options("generalpoints", type(self), kwargs)
        super().__init__(split=split, style=style, max_turns=turns)
        if expert_choice not in ("simple", "any", "canonical"):
            raise ValueError(f"generalpoints: unknown expert_choice {expert_choice!r}; valid: simple, any, canonical")
        if not isinstance(target, int) or not 1 <= target <= 10_000:
            raise ValueError(f"generalpoints: target must be an integer in 1..10000, got {target!r}")
        self.verify_iter, self.target, self.expert_choice = turns, target, expert_choice
        self.per_number_penalty = per_number_penalty
        self.face, self.force_face, self.suits = SPLITS[split]
        self.ranks: list[int] = []

    # -- episode -----------------------------------------------------------------------------
    def reset(self, seed: int) -> Observation:
        rng = random.Random(f"generalpoints/{self.split}/{self.target}/{seed}")
        self.seed = seed
        self.ranks, self.suit_of = deal(rng, self.face, self.force_face, self.suits, self.target)
        self.values = [card_value(r, self.face) for r in self.ranks]
        self.all_solutions = solutions(self.values, self.target)
        pool = self.all_solutions  # simplest first: fewest brackets, then shortest
        if self.expert_choice == "simple":
            pool = tuple(s for s in pool if s.count("(") == pool[0].count("("))
        self.solution = pool[0] if self.expert_choice == "canonical" else rng.choice(pool)
        self.attempts, self.done = 0, False
        self.messages = [{"role": "user", "content": self.prompt()}]
        return Observation(messages=list(self.messages), info=self.episode_info())

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("generalpoints: episode is over; call reset(seed)")
        verdict = self.verify(text)
        self.attempts += 1
        self.messages.append({"role": "assistant", "content": text})
        self.done = verdict.success or self.attempts >= self.verify_iter
        feedback = [] if self.done else [{"role": "user", "content": verdict.feedback(self.style)}]
        self.messages += feedback
        info = self.episode_info() | verdict.as_info() | {"attempt": self.attempts,
                                                          "face_rule": face_rule_applied(text, self.ranks, self.face),
                                                          "values_read": (values_read(text, self.ranks, self.face)
                                                                          if self.style == "reason" else None)}
        return StepResult(feedback=feedback, reward=verdict.reward, done=self.done, success=verdict.success, info=info)

    def expert(self) -> str:
        if self.style == "reason":  # the derivation fixes the formula: `expert_choice` does not apply
            return self._derivation()
        formula = f"{self.solution}={self.target}"
        if self.style == "compact":
            return formula
        # The authors' response template (ResponseEqn), as valid JSON with lists on one line.
        cards = json.dumps([rank_name(r) for r in self.ranks])
        return f'{{\n  "cards": {cards},\n  "number": {json.dumps(self.values)},\n  "formula": "{formula}"\n}}'

    def _derivation(self) -> str:
        return render_derivation(self.values, derivation(tuple(self.values), self.target), self.target)

    # -- single-answer interface (used by the unary-feedback wrapper) -------------------------
    def expert_answer(self) -> str:
        """The scored formula; in the reason style the derivation's own (its last field)."""
        if self.style == "reason":
            return self._derivation().rsplit(" | ", 1)[1]
        return f"{self.solution}={self.target}"

    def expert_reasoning(self) -> str:
        """The reason style's worked fields before the formula (the values, one field per step), so that a
        wrapper writing the answer elsewhere (unary-feedback's <answer> tag) keeps the derivation; "" else."""
        return self._derivation().rsplit(" | ", 1)[0] if self.style == "reason" else ""

    def check_answer(self, answer: str) -> bool:
        return self.verify(answer).success

    def verify(self, text: str) -> GPVerdict:
        """Score a response for the current hand without advancing the episode."""
        return score_response(text, self.values, self.target, self.per_number_penalty,
                              last_field=self.style == "reason")

    # -- texts ------------------------------------------------------------------------------------
    def card_texts(self) -> list[str]:
        return [f"{rank_name(r)}{s}" for r, s in zip(self.ranks, self.suit_of)]

    def prompt(self) -> str:
        if self.style != "paper":  # compact and reason share the prompt
            extra = "" if self.target == 24 else f" | target {self.target}"
            return f"{COMPACT_RULE[self.face]} | cards {' '.join(self.card_texts())}{extra}"
        cards = "[" + ", ".join(f"'{c}'" for c in self.card_texts()) + "]"
        return PAPER_PROMPT.format(target=self.target, face_msg=FACE_MSG[self.face], cards=cards)

    def episode_info(self) -> dict:
        return {"cards": self.card_texts(), "ranks": list(self.ranks), "values": list(self.values),
                "rule": "J=Q=K=10" if self.face == 10 else "J=11,Q=12,K=13", "target": self.target,
                "n_solutions": len(self.all_solutions), "split": self.split}

    # -- lab-scale pre-training ---------------------------------------------------------------
    def base_corpus(self, n: int, seed: int = 0) -> list[str]:
        from postlab.envs.gp_corpus import gp_base_corpus

        return gp_base_corpus(n, seed, self.target, reason=self.style == "reason")


__all__ = ["GeneralPoints", "deal", "card_value", "face_rule_applied", "rank_name", "values_read"]
