"""`EnvSpec`: which environment a config plays, spelled one way everywhere.

Every config that builds an environment (the `env:` section of RL, RFT, RASFT and DRIFT, and of
the offline rollout job) says it with these five keys, and a study stage fills them from its own
`env` / `split` / `style` / `env_args` / `max_turns`. Turn counts have one meaning here:

- `max_turns` is the environment's cap on model turns in one episode, as `Env.__init__` takes it
  (None: the environment's own default). What a turn earns is the environment's business:
  GeneralPoints counts evaluated attempts ("verification iterations", Chu et al.: 5), navigation
  counts actions, `unary-feedback` counts every turn, unparsable ones included.
- Environment-specific budgets are environment arguments in `kwargs`, under the environment's own
  name: `unary-feedback`'s attempt budget is `kwargs.max_attempts` (DRIFT: 5; its turns default
  to twice that).
"""

from __future__ import annotations

import dataclasses

from postlab.config import ConfigError


@dataclasses.dataclass
class EnvSpec:
    name: str = "toy"  # a registered env, or an import path ('mypkg.myenv:MyEnv', 'path/to/file.py:MyEnv')
    split: str = "id"
    style: str = "compact"
    max_turns: int | None = None  # model turns per episode at most; None = the environment's default
    kwargs: dict = dataclasses.field(default_factory=dict)  # the environment's own arguments

    RESERVED = ("split", "style", "max_turns")  # keys of their own, never env arguments

    def __post_init__(self):
        if self.max_turns is not None and self.max_turns < 1:
            raise ConfigError(f"max_turns: must be >= 1 (or unset for the environment's default), got {self.max_turns}")
        clash = sorted(set(self.RESERVED) & set(self.kwargs))
        if clash:
            raise ConfigError(f"kwargs: {clash} are keys of the env section itself (split, style, max_turns); move "
                              "them there")

    def build(self, split: str | None = None, key: str = "env"):
        """The environment on `split` (default: the spec's own); a bad name, split, style or argument is a
        ConfigError that starts with `key`, the config key to fix."""
        from postlab.envs.base import make

        turns = {} if self.max_turns is None else {"max_turns": self.max_turns}
        try:
            return make(self.name, split=split or self.split, style=self.style, **turns, **self.kwargs)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{key}: {e}") from None

    def record(self, built_name: str | None = None) -> dict:
        """What a dataset records of the env it was sampled on (the built env's name when given, e.g.
        'unary-feedback(math)')."""
        return {"name": built_name or self.name, "split": self.split, "style": self.style,
                "max_turns": self.max_turns, "kwargs": dict(self.kwargs)}


__all__ = ["EnvSpec"]
