"""A toy environment for evaluation and study tests (registered as 'toy-copy')."""

from postlab.envs.base import Env, Observation, StepResult, register_env


@register_env("toy-copy")
class ToyCopy(Env):
    """Copy a number. With `scripted=True` the model's text is ignored: even seeds succeed on
    the 2nd attempt, odd seeds never (reason 'wrong number: ...'), to test the bookkeeping."""

    splits = ("id", "ood")

    def __init__(self, split="id", style="compact", max_turns=1, scripted=False, **kw):
        super().__init__(split=split, style=style, max_turns=max_turns)
        self.scripted = scripted

    def reset(self, seed):
        self.seed, self.attempts = seed, 0
        self.target = str(seed % 7 + (10 if self.split == "ood" else 0))
        return Observation([{"role": "user", "content": f"copy {self.target}"}])

    def step(self, text):
        self.attempts += 1
        ok = (self.attempts == 2 and self.seed % 2 == 0) if self.scripted else text.strip() == self.target
        done = ok or self.attempts >= self.max_turns
        info = {} if ok else {"reasons": [f"wrong number: {text[:5]!r}"]}
        fb = [] if done else [{"role": "user", "content": "You failed this trial"}]
        return StepResult(fb, 1.0 if ok else -1.0, done, ok, info)

    def expert(self):
        return self.target

    def base_corpus(self, n, seed=0):
        return [f"copy {i % 17} gives {i % 17}" for i in range(n)]
