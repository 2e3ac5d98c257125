"""Unary-feedback multi-turn wrapper (DRIFT, Mu et al.; methods.md section 4).

Turns any single-answer environment into a dialogue of up to `max_attempts` (default 5)
answers. Each answer must be inside `<answer>...</answer>`:

- a correct answer: reward 1, the episode ends (stop at the first correct answer);
- a wrong answer: reward 0 and the user turn "Incorrect. Please think again.";
- a turn with no `<answer>...</answer>` (or an empty one): reward -0.1 (format penalty), the
  same unary feedback, and it uses no attempt. So that a model that never formats cannot
  loop forever, the total number of turns is bounded by `max_turns` (default
  2 * max_attempts); reaching it ends the episode as a failure.

`info` exposes what DRIFT's return needs: per-turn correctness (`turn_correct`: True /
False / None for unparsable), the answers given (`answers`), the number of answers N and of
distinct non-empty answers U (`n_answers`, `n_distinct`), and `format_errors`. The
trajectory return R = sum_t gamma^(t-1) r_t + penalties - 0.5 (1 - U/N) is the trainer's.

The inner env must offer `check_answer(answer) -> bool` and `expert_answer()`, and may
offer `expert_reasoning()`; every single-turn env of postlab does, and so does
GeneralPoints (its formula is the answer).
"""

from __future__ import annotations

import random

from postlab.envs.base import (ENV_REGISTRY, Env, Observation, StepResult, is_import_path, make,
                               missing_single_answer_methods, register_env, single_answer_envs)

FEEDBACK = "Incorrect. Please think again."
FORMAT_PENALTY = -0.1
FORMAT_HINT = {"paper": "Put your final answer within <answer>...</answer>.", "compact": "<answer>"}
MAX_ANSWER_SCAN = 16_384


def parse_answer_tag(text: str) -> str | None:
    """The content of the last <answer>...</answer>, or None (also for an empty one)."""
    if not isinstance(text, str) or len(text) > MAX_ANSWER_SCAN:
        return None
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    if start < 0:
        return None
    ans = text[start + len("<answer>"):end].strip()
    return ans or None


@register_env("unary-feedback")
class UnaryFeedback(Env):
    """Any single-answer env, retried up to 5 times with "Incorrect. Please think again." (DRIFT)."""

    splits: tuple[str, ...] = ()
    styles: tuple[str, ...] = ("compact", "paper")  # replaced by the inner env's in __init__

    def __init__(self, env: str | Env = "math", split: str | None = None, style: str | None = None,
                 max_attempts: int | None = None, max_turns: int | None = None, feedback: str = FEEDBACK,
                 expert_retries: float = 0.0, **env_kwargs):
        # max_attempts: evaluated answers (DRIFT: 5). max_turns: all model turns, unparsable ones
        # included. Given only max_turns (as generic trainers do), attempts = min(5, max_turns).
        if max_attempts is None:
            max_attempts = 5 if max_turns is None else min(5, max_turns)
        if isinstance(env, str):
            # The registry is complete here: importing this module ran postlab.envs's __init__ first,
            # which registers every environment.
            if env == "unary-feedback" or not is_import_path(env) and env not in ENV_REGISTRY:
                raise ValueError(f"unary-feedback: unknown inner env {env!r}; valid: "
                                 f"{', '.join(n for n in sorted(ENV_REGISTRY) if n != 'unary-feedback')}")
            kw = dict(env_kwargs)
            if split is not None:
                kw["split"] = split
            if style is not None:
                kw["style"] = style
            env = make(env, **kw)
        elif env_kwargs:
            raise ValueError(f"unary-feedback: env is already built; unexpected arguments {sorted(env_kwargs)}")
        missing = missing_single_answer_methods(env)
        if missing:
            raise ValueError(f"unary-feedback: inner env {env.name!r} has no {missing[0]}(); it cannot be wrapped "
                             "(it needs check_answer and expert_answer, as these have: "
                             f"{', '.join(single_answer_envs())})")
        if max_attempts < 1:
            raise ValueError(f"unary-feedback: max_attempts must be >= 1, got {max_attempts}")
        # expert_retries: the share of expert dialogues that first show a wrong answer (another problem's, not
        # trained) and the feedback, then the expert's: a reference that has seen a correction, which DRIFT's
        # offline data needs (a reference SFT-trained on first answers never corrects: docs/results.md, drift)
        if isinstance(expert_retries, bool) or not isinstance(expert_retries, (int, float)) \
                or not 0.0 <= expert_retries <= 1.0:
            raise ValueError(f"unary-feedback: expert_retries must be a number in [0, 1], got {expert_retries!r}")
        if expert_retries > 0 and max_attempts < 2:
            raise ValueError(f"unary-feedback: expert_retries needs max_attempts >= 2 (a retry is a second attempt), "
                             f"got {max_attempts}")
        self.expert_retries = float(expert_retries)
        self.inner = env
        # instance attributes: the wrapper has the inner env's splits and answer styles (GeneralPoints'
        # `reason` keeps its worked derivation before the <answer> tag); only `paper` changes the hint's form
        self.splits, self.styles = env.splits, env.styles
        turns = max_turns if max_turns is not None else 2 * max_attempts
        super().__init__(split=env.split, style=env.style, max_turns=turns)
        if turns < max_attempts:
            raise ValueError(f"unary-feedback: max_turns ({turns}) must be >= max_attempts ({max_attempts})")
        self.max_attempts, self.feedback_text = max_attempts, feedback
        self.name = f"unary-feedback({env.name})"

    def reset(self, seed: int) -> Observation:
        obs = self.inner.reset(seed)
        self.seed = seed
        self.retry_demo = self.expert_retries > 0 and \
            random.Random(f"unary-feedback/expert-retry/{seed}").random() < self.expert_retries
        msgs = [dict(m) for m in obs.messages]
        sep = "\n" if self.style == "paper" else " "
        msgs[-1]["content"] = f"{msgs[-1]['content']}{sep}{FORMAT_HINT[self._hint_form]}"
        self.messages = msgs
        self.turn_correct: list[bool | None] = []
        self.answers: list[str | None] = []
        self.attempts, self.format_errors, self.done, self.solved = 0, 0, False, False
        return Observation(messages=list(msgs), info=dict(obs.info))

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError(f"{self.name}: episode is over; call reset(seed)")
        ans = parse_answer_tag(text)
        self.messages.append({"role": "assistant", "content": text if isinstance(text, str) else ""})
        self.answers.append(ans)
        if ans is None:
            reward, correct = FORMAT_PENALTY, None
            self.format_errors += 1
        else:
            correct = bool(self.inner.check_answer(ans))
            reward = 1.0 if correct else 0.0
            self.attempts += 1
        self.turn_correct.append(correct)
        self.solved = bool(correct)
        self.done = self.solved or self.attempts >= self.max_attempts or len(self.answers) >= self.max_turns
        feedback = [] if self.done else [{"role": "user", "content": self.feedback_text}]
        self.messages += feedback
        return StepResult(feedback=feedback, reward=reward, done=self.done, success=self.solved, info=self.info())

    def info(self) -> dict:
        given = [a for a in self.answers if a is not None]
        return {"turn_correct": list(self.turn_correct), "answers": list(self.answers), "attempts": self.attempts,
                "n_answers": len(given), "n_distinct": len({a for a in given if a.strip()}),
                "format_errors": self.format_errors, "verdict": "correct" if self.solved else "wrong"}

    def expert_answer(self) -> str:
        return self.inner.expert_answer()

    def expert_reasoning(self) -> str:
        fn = getattr(self.inner, "expert_reasoning", None)
        return fn() if callable(fn) else ""

    @property
    def _hint_form(self) -> str:
        return "paper" if self.style == "paper" else "compact"

    def _with_tag(self, reasoning: str, answer: str) -> str:
        tag = f"<answer>{answer}</answer>"
        return f"{reasoning}{chr(10) if self.style == 'paper' else ' '}{tag}" if reasoning else tag

    def expert_turn_trained(self) -> bool:
        return not (self.retry_demo and not self.answers)  # the deliberate first mistake is shown, not taught

    def expert(self) -> str:
        if self.retry_demo and not self.answers:
            return self._wrong_attempt()
        return self._with_tag(self.expert_reasoning(), self.expert_answer())

    def _wrong_attempt(self) -> str:
        """A neighbouring problem's expert answer (reasoning and all) that is wrong here: a plausible first
        attempt. Neighbours are taken below the seed (above it only near 0), so an expert seed's neighbour
        stays in the expert range (postlab.seeds), never an evaluation problem."""
        other = self.inner.clone()
        for k in range(1, 65):
            other.reset(self.seed - k if self.seed >= k else self.seed + k)
            answer = other.expert_answer()
            if not self.inner.check_answer(answer):
                fn = getattr(other, "expert_reasoning", None)
                return self._with_tag(fn() if callable(fn) else "", answer)
        raise RuntimeError(f"{self.name}: no neighbouring problem of seed {self.seed} has a wrong answer here")

    def check_answer(self, answer: str) -> bool:
        return bool(self.inner.check_answer(answer))

    def clone(self) -> "UnaryFeedback":
        new = super().clone()
        new.inner = self.inner.clone()  # the wrapper's episode lives in the inner env too
        return new

    def base_corpus(self, n: int, seed: int = 0) -> list[str | dict]:
        return self.inner.base_corpus(n, seed)
