"""Math: procedural multi-step arithmetic word problems, and an adapter for real math data.

`math` (procedural, the lab-scale stand-in for the RASFT / DRIFT / Rejuvenation math
experiments): a quantity changes step by step (buy, give away, multiply, share equally);
the worked solution does one operation per line and ends with the final answer. Splits:

- `id`: 2-3 operations, start 2..20, added/removed amounts 1..20, factors/divisors 2..9,
  every intermediate value <= 100;
- `ood`: 4-6 operations, start 10..99, amounts 5..99, factors/divisors 2..12, values
  <= 2000: more steps and larger numbers than ever trained on.

Compact style (tiny models)::

    user:      Ann has 12 pens. Ann buys 5 more. Ann gets 3 times as many. Ann loses 7. How many pens?
    assistant: 12+5=17 17*3=51 51-7=44 #### 44

Paper style writes the problem in full sentences, asks for `\\boxed{}` and answers with
one explained step per line ending in `\\boxed{44}`.

`math-jsonl`: any JSONL or Parquet file of problems with worked solutions or answers (keys
problem/question/instruction/prompt and solution/response/answer/output, auto-detected); the
gold answer is the "answer" field (a string or a number) if present, else the last `\\boxed{}`
of the solution. Rewards are 1 if the extracted answer matches (exact, numeric, then
`math-verify` if installed), else 0.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

from postlab.envs.base import Env, Observation, StepResult, register_env, reject_unknown_options
from postlab.verifiers.answers import answers_match, extract_answer, last_boxed, math_verify_available

SPLITS = {
    "id": dict(steps=(2, 3), start=(2, 20), amount=(1, 20), factor=(2, 9), cap=100),
    "ood": dict(steps=(4, 6), start=(10, 99), amount=(5, 99), factor=(2, 12), cap=2000),
}
NAMES = ("Ann", "Ben", "Cy", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jo", "Kim", "Lou", "Max", "Ned", "Oli", "Pia", "Rex")
ITEMS = ("pens", "apples", "coins", "books", "cards", "shells", "stamps", "eggs", "marbles", "beads", "cups", "nails")
# op -> (compact sentence, paper sentences, paper step explanation)
OPS = {
    "+": ("{who} buys {n} more.", ("{who} buys {n} more {item}.", "{who} finds {n} more {item}.",
                                  "A friend gives {who} {n} more {item}."), "adding {n}"),
    "-": ("{who} loses {n}.", ("{who} gives away {n} {item}.", "{who} sells {n} {item}.", "{who} loses {n} {item}."),
          "taking away {n}"),
    "*": ("{who} gets {n} times as many.", ("{who} ends up with {n} times as many {item}.",
                                           "The number of {item} {who} has grows {n} times."), "multiplying by {n}"),
    "/": ("{who} splits them into {n} equal groups and keeps one.",
          ("{who} splits the {item} into {n} equal groups and keeps one group.",
           "{who} shares the {item} equally among {n} people, {who} included, and keeps one share."),
          "dividing by {n}"),
}
BOX_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# one worked step, "12+5=17" (compact) or "12 + 5 = 17" (paper); numbers capped at 12 digits so that
# hostile output cannot make int() parse megabytes
STEP = re.compile(r"(\d{1,12})\s*([-+*/])\s*(\d{1,12})\s*=\s*(\d{1,12})")
VERIFY = ("answer", "steps")
SOLUTION_KINDS = ("right", "no steps", "start misread", "copy slip", "wrong operation", "amount misread",
                  "arithmetic slip", "step count", "answer slip")


def solution_anatomy(text: str, problem: dict) -> str:
    """Where a worked solution first leaves the problem's one: the `solution` diagnostic.

    Reads the answer's equations in order against the problem's steps and returns the first
    deviation: "start misread" (step 1 does not start from the stated amount), "copy slip" (a
    step does not start from the previous step's result), "wrong operation", "amount misread"
    (the right operation by a number the problem does not say), "arithmetic slip" (a op b
    written equal to something else), "step count" (every step right, too few or too many),
    "answer slip" (every step right, the final answer is not the last result); "no steps" when
    no equation parses, "right" when nothing deviates. The problem text fixes the plan, so the
    first four kinds are reading errors and "arithmetic slip" a fact the model does not know
    (docs/envs.md).
    """
    steps = [(int(a), op, int(b), int(c)) for a, op, b, c in STEP.findall(text)] if isinstance(text, str) else []
    if not steps:
        return "no steps"
    prev = problem["start"]
    for i, ((a, op, b, c), (gold_op, gold_n, _)) in enumerate(zip(steps, problem["steps"])):
        if a != prev:
            return "start misread" if i == 0 else "copy slip"
        if op != gold_op:
            return "wrong operation"
        if b != gold_n:
            return "amount misread"
        if Fraction(c) != _apply(op, a, b):
            return "arithmetic slip"
        prev = c
    if len(steps) != len(problem["steps"]):
        return "step count"
    pred = extract_answer(text)
    return "right" if answers_match(pred, str(prev)) else "answer slip"


def _apply(op: str, a: int, b: int) -> Fraction:
    # only reached once b equals the problem's amount, so a divisor is never 0
    return Fraction(a, b) if op == "/" else Fraction({"+": a + b, "-": a - b, "*": a * b}[op])


def make_problem(rng: random.Random, split: str) -> dict:
    """A problem: start value, operations [(op, n, result)], and names."""
    cfg = SPLITS[split]
    x = rng.randint(*cfg["start"])
    start, steps = x, []
    for _ in range(rng.randint(*cfg["steps"])):
        options = []
        lo, hi = cfg["amount"]
        if x + lo <= cfg["cap"]:
            options.append(("+", rng.randint(lo, min(hi, cfg["cap"] - x))))
        if x - lo >= 1:
            options.append(("-", rng.randint(lo, min(hi, x - 1))))
        factors = [f for f in range(cfg["factor"][0], cfg["factor"][1] + 1) if x * f <= cfg["cap"]]
        if factors:
            options.append(("*", rng.choice(factors)))
        divisors = [d for d in range(cfg["factor"][0], cfg["factor"][1] + 1) if x % d == 0]
        if divisors:
            options.append(("/", rng.choice(divisors)))
        op, n = rng.choice(options)
        x = {"+": x + n, "-": x - n, "*": x * n, "/": x // n}[op]
        steps.append((op, n, x))
    return {"start": start, "steps": steps, "answer": x, "who": rng.choice(NAMES), "item": rng.choice(ITEMS)}


@register_env("math")
class Math(Env):
    """Procedural multi-step arithmetic word problems with worked solutions (id: short/small, ood: long/large)."""

    splits = tuple(SPLITS)
    styles = ("compact", "paper")
    diagnostics = ("solution",)  # `solution_anatomy`: where a worked solution first leaves the problem's steps

    def __init__(self, split: str = "id", style: str = "compact", max_turns: int = 1, verify: str = "answer",
                 **kwargs):
        # Single-turn (max_turns is accepted for generic callers); wrap with unary-feedback for retries.
        reject_unknown_options("math", type(self), kwargs)
        super().__init__(split=split, style=style, max_turns=max_turns)
        # "answer": the final answer decides (the papers' reward); "steps": the worked steps must be right
        # too. 25% of ID answers are <= 5 (9.5% are 1), so a wrong derivation often lands on the right
        # answer: "steps" is the lab's stand-in for a benchmark whose answers cannot be guessed.
        # check_answer (RASFT, unary feedback) sees the answer alone and stays answer-only.
        if verify not in VERIFY:
            raise ValueError(f"math: verify={verify!r}; valid: {', '.join(VERIFY)} (steps: the final answer and "
                             "every worked step must be right)")
        self.verify = verify

    def reset(self, seed: int) -> Observation:
        rng = random.Random(f"math/{self.split}/{seed}")
        self.problem = p = make_problem(rng, self.split)
        who, item = p["who"], p["item"]
        if self.style == "compact":
            parts = [f"{who} has {p['start']} {item}."] + [OPS[op][0].format(who=who, n=n) for op, n, _ in p["steps"]]
            prompt = " ".join(parts + [f"How many {item}?"])
        else:
            parts = [f"{who} has {p['start']} {item}."]
            parts += [rng.choice(OPS[op][1]).format(who=who, n=n, item=item) for op, n, _ in p["steps"]]
            prompt = " ".join(parts + [f"How many {item} does {who} have now?"]) + "\n" + BOX_INSTRUCTION
        self.done = False
        return Observation(messages=[{"role": "user", "content": prompt}],
                           info={"answer": str(p["answer"]), "n_steps": len(p["steps"]), "split": self.split})

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("math: episode is over; call reset(seed)")
        self.done = True
        pred = extract_answer(text) if isinstance(text, str) else None
        answer_ok = answers_match(pred, str(self.problem["answer"]))
        solution = solution_anatomy(text, self.problem)
        ok = answer_ok and (self.verify == "answer" or solution == "right")
        return StepResult(feedback=[], reward=1.0 if ok else 0.0, done=True, success=ok,
                          info={"verdict": "correct" if ok else ("wrong steps" if answer_ok else "wrong"),
                                "answer": str(self.problem["answer"]), "predicted": pred, "solution": solution})

    def expert_reasoning(self) -> str:
        p, x, lines = self.problem, self.problem["start"], []
        for i, (op, n, r) in enumerate(p["steps"]):
            if self.style == "compact":
                lines.append(f"{x}{op}{n}={r}")
            else:
                lines.append(f"Step {i + 1}: {OPS[op][2].format(n=n)}, {x} {op} {n} = {r}.")
            x = r
        return (" " if self.style == "compact" else "\n").join(lines)

    def expert_answer(self) -> str:
        return str(self.problem["answer"])

    def expert(self) -> str:
        if self.style == "compact":
            return f"{self.expert_reasoning()} #### {self.expert_answer()}"
        return f"{self.expert_reasoning()}\nThe answer is \\boxed{{{self.expert_answer()}}}."

    def check_answer(self, answer: str) -> bool:
        return answers_match(answer, self.expert_answer())

    def base_corpus(self, n: int, seed: int = 0) -> list[str]:
        return math_corpus(n, seed)


def math_corpus(n: int, seed: int = 0) -> list[str]:
    """Arithmetic facts over the OOD number range and what the story verbs mean; never a word problem."""
    if n < 0:
        raise ValueError(f"base_corpus: n must be >= 0, got {n}")
    rng = random.Random(f"math-corpus/{seed}")
    out = []
    for _ in range(n):
        op = rng.choice("+-*/")
        if op in "+-":
            a, b = rng.randint(1, 2000), rng.randint(1, 200)
            out.append(f"{a}+{b}={a + b}" if op == "+" or a < b else f"{a}-{b}={a - b}")
        elif op == "*":
            a, b = rng.randint(1, 200), rng.randint(2, 12)
            out.append(f"{a}*{b}={a * b}")
        else:
            b, q = rng.randint(2, 12), rng.randint(1, 170)
            out.append(f"{b * q}/{b}={q}")
        if rng.random() < 0.1:
            op = rng.choice(list(OPS))
            out[-1] = f"'{OPS[op][0].format(who='someone', n='n')}' means {OPS[op][2].format(n='n')}."
    return out


def _number_text(x: int | float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


FIELD_NAMES = (("problem", "question", "instruction", "prompt", "input"), ("solution", "response", "output", "answer"))


@register_env("math-jsonl")
class MathJSONL(Env):
    """Real math data from a JSONL file (problem + worked solution with \\boxed{}), verified by answer equivalence."""

    splits = ("all",)
    styles = ("paper", "compact")

    def __init__(self, path: str | None = None, split: str = "all", style: str = "paper", use_math_verify: bool = True,
                 max_turns: int = 1, **kwargs):
        reject_unknown_options("math-jsonl", type(self), kwargs)
        super().__init__(split=split, style=style, max_turns=max_turns)
        if path is None:
            raise ValueError("math-jsonl: give path=FILE.jsonl or FILE.parquet (one record per line/row with a "
                             "problem and a solution or answer)")
        self.path, self.items = Path(path), self._load(Path(path))
        self.use_math_verify = use_math_verify and math_verify_available()

    @staticmethod
    def _load(path: Path) -> list[dict]:
        from postlab.data.files import DataError, iter_file_rows  # here: postlab.data's package loads torch

        items = []
        try:
            rows = list(iter_file_rows(path))  # JSONL, or Parquet (by the .parquet suffix)
        except DataError as e:
            raise ValueError(f"math-jsonl: {e}") from None
        for where, rec in rows:
            if not isinstance(rec, dict):
                raise ValueError(f"math-jsonl: {where}: expected a JSON object")
            if isinstance(rec.get("answer"), (int, float)) and not isinstance(rec["answer"], bool):
                rec = {**rec, "answer": _number_text(rec["answer"])}  # Parquet/JSON answer columns are often numbers
            prob = next((rec[k] for k in FIELD_NAMES[0] if isinstance(rec.get(k), str)), None)
            sol = next((rec[k] for k in FIELD_NAMES[1] if isinstance(rec.get(k), str)), None)
            gold = rec["answer"] if isinstance(rec.get("answer"), str) else (last_boxed(sol) if sol else None)
            if prob is None or gold is None:
                raise ValueError(f"math-jsonl: {where}: need a problem ({'/'.join(FIELD_NAMES[0])}) and a "
                                 "solution with \\boxed{} or an 'answer' field")
            if sol is None or last_boxed(sol) is None:  # make the expert end in the format asked for
                sol = (sol + "\n" if sol else "") + f"The answer is \\boxed{{{gold}}}."
            items.append({"problem": prob, "solution": sol, "answer": gold.strip()})
        if not items:
            raise ValueError(f"math-jsonl: {path} has no records")
        return items

    def reset(self, seed: int) -> Observation:
        self.item = self.items[seed % len(self.items)]
        text = self.item["problem"] if self.style == "compact" else f"{self.item['problem']}\n{BOX_INSTRUCTION}"
        self.done = False
        return Observation(messages=[{"role": "user", "content": text}], info={"answer": self.item["answer"]})

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("math-jsonl: episode is over; call reset(seed)")
        self.done = True
        pred = extract_answer(text) if isinstance(text, str) else None
        ok = answers_match(pred, self.item["answer"], self.use_math_verify)
        return StepResult(feedback=[], reward=1.0 if ok else 0.0, done=True, success=ok,
                          info={"verdict": "correct" if ok else "wrong", "answer": self.item["answer"],
                                "predicted": pred})

    def expert(self) -> str:
        return self.item["solution"]

    def expert_answer(self) -> str:
        return self.item["answer"]

    def expert_reasoning(self) -> str:
        sol = self.item["solution"]
        k = sol.rfind("\\boxed")
        return sol[:k].rstrip() if k >= 0 else sol

    def check_answer(self, answer: str) -> bool:
        return answers_match(answer, self.item["answer"], self.use_math_verify)
