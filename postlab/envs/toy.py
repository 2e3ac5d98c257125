"""`toy`: a seconds-scale environment for RL tests and demos ("say a digit larger than k").

Prompt: "Say a digit larger than k." with k drawn per episode from 4..6 (ID) or 1..3 (OOD).
Reward: +1 for a single digit > k (success), 0 for a digit <= k, -1 for anything else.
Multi-turn: after a failure (when turns remain) the user says "No, {d} is not larger than {k}.
Try again." The expert answers a *uniformly random digit*: SFT on it teaches the format but
not the rule (about 40% ID success), which leaves RL a clear, fast signal to learn from.
"""

from __future__ import annotations

import random

from postlab.envs.base import Env, Observation, StepResult, register_env


@register_env("toy")
class ToyDigitsEnv(Env):
    splits = ("id", "ood")
    styles = ("compact",)

    def reset(self, seed: int) -> Observation:
        self._rng = random.Random(seed)
        lo, hi = (4, 6) if self.split == "id" else (1, 3)
        self.k = self._rng.randint(lo, hi)
        self.turns = 0
        return Observation([{"role": "user", "content": f"Say a digit larger than {self.k}."}], {"k": self.k})

    def step(self, text: str) -> StepResult:
        self.turns += 1
        answer = text.strip()
        fmt = len(answer) == 1 and answer.isdigit()
        correct = fmt and int(answer) > self.k
        reward = 1.0 if correct else (0.0 if fmt else -1.0)
        done = correct or self.turns >= self.max_turns
        why = f"{answer} is not larger than {self.k}" if fmt else "that is not a single digit"
        feedback = [] if done else [{"role": "user", "content": f"No, {why}. Try again."}]
        return StepResult(feedback, reward, done, correct,
                          {"components": {"format": float(fmt), "correct": float(correct)}})

    def expert(self) -> str:
        return str(self._rng.randint(0, 9))
