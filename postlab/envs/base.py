"""The environment API shared by every task, single-turn and multi-turn.

An environment never touches tensors. It speaks chat messages
(`[{"role": "user", "content": ...}, ...]`); the rollout engine renders them with the
tokenizer's chat template, so the same environment serves tiny lab models (postlab's own
template) and Hugging Face checkpoints (their template).

Life of an episode::

    env = make("generalpoints", split="ood-rule", style="compact")
    obs = env.reset(seed=3)          # Observation: messages so far
    while True:
        result = env.step(model_text) # StepResult: feedback messages, reward, done, info
        if result.done: break

`env.expert()` gives the demonstration for the current episode (the text an expert would
answer at this point), which is what SFT trains on.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

Message = dict  # {"role": "system"|"user"|"assistant", "content": str, optional "train": bool}


@dataclasses.dataclass
class Observation:
    messages: list[Message]  # the whole dialogue so far, ending with a user turn
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StepResult:
    feedback: list[Message]  # new user turn(s) appended after the model's answer ([] when done)
    reward: float
    done: bool
    success: bool = False
    info: dict = dataclasses.field(default_factory=dict)  # verifier verdict, reasons, reward components


class Env:
    """Base class. Subclasses set `name`, `splits`, and implement `reset`, `step`, `expert`."""

    name: str = ""
    splits: tuple[str, ...] = ("id",)
    styles: tuple[str, ...] = ("compact", "paper")
    # keys of StepResult.info whose category (a string) evaluation counts on each episode's
    # first attempt, e.g. GeneralPoints' `face_rule` (which face-card convention an answer applies)
    diagnostics: tuple[str, ...] = ()

    def __init__(self, split: str = "id", style: str = "compact", max_turns: int = 1, **kwargs: Any):
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid: {', '.join(self.splits)}")
        if style not in self.styles:
            raise ValueError(f"{self.name}: unknown style {style!r}; valid: {', '.join(self.styles)}")
        if max_turns < 1:
            raise ValueError(f"{self.name}: max_turns must be >= 1, got {max_turns}")
        self.split, self.style, self.max_turns = split, style, max_turns

    def reset(self, seed: int) -> Observation:
        raise NotImplementedError

    def step(self, text: str) -> StepResult:
        raise NotImplementedError

    def expert(self) -> str:
        raise NotImplementedError

    def base_corpus(self, n: int, seed: int = 0) -> list[str | dict]:
        """Items for lab-scale pre-training: knowledge OOD needs, never the ID task itself.
        Plain texts, or chat records ``{"messages": [...]}`` where the knowledge is a dialogue."""
        return []

    def base_corpus_records(self, n: int, seed: int = 0) -> list[dict]:
        """`base_corpus` as training records: texts become ``{"text": ...}``, chat records stay."""
        return [t if isinstance(t, dict) else {"text": t} for t in self.base_corpus(n, seed)]

    def clone(self) -> "Env":
        """An independent env for batched rollouts: shares what construction built (worlds,
        cities, solver caches), while `reset` gives each copy its own episode state."""
        return copy.copy(self)


def reject_unknown_options(env_name: str, cls: type, kwargs: dict) -> None:
    """Environments built from configs should not swallow typos: name the bad and the valid keys."""
    if kwargs:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
        raise ValueError(f"{env_name}: unknown option(s) {', '.join(sorted(kwargs))}; valid: {', '.join(valid)}")


ENV_REGISTRY: dict[str, Callable[..., Env]] = {}


def register_env(name: str):
    def wrap(cls):
        ENV_REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def make(name: str, **kwargs: Any) -> Env:
    import postlab.envs  # noqa: F401 - populates the registry

    if name not in ENV_REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(ENV_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown environment {name!r}; valid: {', '.join(sorted(ENV_REGISTRY))}.{hint}")
    return ENV_REGISTRY[name](**kwargs)
