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

`make` takes a registered name or an import path of an Env subclass outside postlab
('package.module:ClassName' or 'path/to/file.py:ClassName'; docs/envs.md, "Bring your own
environment").
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Protocol, TypeGuard, runtime_checkable

from postlab.naming import Registry

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
    """Base class of every environment; the whole protocol is declared here.

    Required: `splits` (the first is the in-distribution one), `reset(seed)`, `step(text)`,
    `expert()`. Optional: `styles`, `diagnostics`, `base_corpus` (lab-scale pre-training), `clone`
    (when copying shares state it must not), and the single-answer verifier methods of
    `SingleAnswerEnv` below (`check_answer`, `expert_answer`; test with `is_single_answer`).
    `name` is set by `register_env`, or is the import path for an unregistered class (`env_class`).
    """

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

    def expert_turn_trained(self) -> bool:
        """Whether the expert's next turn is one to imitate. True here; unary-feedback's `expert_retries`
        first shows a deliberate wrong answer (False), so that SFT sees a correction without learning the
        mistake (`export.expert_dialogue` marks such a turn ``"train": false``)."""
        return True

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


# ----------------------------------------------------------------------------- single-answer envs

# The optional part of the protocol, as a list so that errors can name what an env lacks.
SINGLE_ANSWER_METHODS = ("check_answer", "expert_answer")


@runtime_checkable
class SingleAnswerEnv(Protocol):
    """An env whose episode asks for one final answer that a verifier judges on its own.

    Trainers and wrappers that verify answers themselves need it: RASFT and RFT judge each
    rollout's extracted answer, the unary-feedback wrapper (DRIFT) retries wrong answers. An Env
    subclass opts in by defining both methods; nothing needs registering. Test with
    `is_single_answer`, not with hasattr/getattr, so that the protocol lives here only.
    """

    def check_answer(self, answer: str) -> bool:
        """Whether `answer` (a final answer, already extracted from the model's text) is correct."""
        ...

    def expert_answer(self) -> str:
        """The current episode's correct final answer (after `reset`)."""
        ...


def missing_single_answer_methods(env: Any) -> list[str]:
    """The `SINGLE_ANSWER_METHODS` that an env (instance or class) does not define, in order."""
    return [m for m in SINGLE_ANSWER_METHODS if not callable(getattr(env, m, None))]


def is_single_answer(env: Any) -> TypeGuard[SingleAnswerEnv]:
    """Whether an env (instance or class) implements `SingleAnswerEnv`."""
    return not missing_single_answer_methods(env)


def single_answer_envs() -> list[str]:
    """The registered environments that implement `SingleAnswerEnv` (for error messages)."""
    return sorted(n for n, cls in ENV_REGISTRY.items() if is_single_answer(cls))


# ----------------------------------------------------------------------------- registry and lookup

ENV_REGISTRY: Registry = Registry("environment")

IMPORT_FORMS = ("'package.module:ClassName' (importable: installed, or its folder on PYTHONPATH) or "
                "'path/to/file.py:ClassName'")


def register_env(name: str):
    """Class decorator: register an Env subclass under `name` (and set its `name`).

    A name registered by another class is an error, as in every postlab registry: a plugin that
    reuses 'math' would otherwise silently replace the built-in for every later `make`. The same
    definition registering again is allowed and replaces the entry: a class with the same module
    and qualified name is the same source re-executed (`importlib.reload`, a notebook cell run
    twice, a factory function that builds the class per call), never a clash between two authors.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"register_env: invalid environment name {name!r}; a name is a non-empty string without "
                         "':' (that form is an import path, 'package.module:ClassName')")

    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, Env)):
            raise TypeError(f"register_env({name!r}): {cls!r} is not a subclass of postlab.envs.Env")
        old = ENV_REGISTRY.get(name)
        if old is not None and _qualified(old) == _qualified(cls):
            ENV_REGISTRY[name] = cls
        else:
            ENV_REGISTRY.add(name, cls, owner=_qualified(old) if old is not None else "")
        cls.name = name
        return cls

    return wrap


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def is_import_path(name: str) -> bool:
    """Whether an env name is an import path ('module:Class' or 'file.py:Class'), not a registry name.
    Registry names never contain ':' (`register_env` refuses them), so the two cannot collide."""
    return isinstance(name, str) and ":" in name


def env_class(name: str) -> type[Env]:
    """The Env subclass an env name stands for: a registered name, or an import path (`IMPORT_FORMS`).

    Every place that resolves an env name goes through here (`make` included), so a custom env
    works wherever a built-in one does: `postlab train rl`, `postlab eval`, study stages. An
    imported class need not be registered; one that sets no `name` of its own is given the import
    path as its name (as `register_env` names a registered one), which logs and errors then show.
    A problem is a ValueError that names the key, the module and what is valid.

    The registry is complete here: importing this module ran the package's __init__ first, which
    registers every built-in environment.
    """
    if is_import_path(name):
        return _import_env_class(name)
    if name not in ENV_REGISTRY:
        import difflib

        close = difflib.get_close_matches(str(name), list(ENV_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown environment {name!r}; valid: {', '.join(sorted(ENV_REGISTRY))}.{hint} "
                         f"A custom environment: {IMPORT_FORMS}")
    return ENV_REGISTRY[name]


def make(name: str, **kwargs: Any) -> Env:
    """Build the environment `name` (a registered name or an import path; see `env_class`)."""
    return env_class(name)(**kwargs)


def _import_env_class(key: str) -> type[Env]:
    # rpartition: a Windows drive letter ('C:/envs/my.py:MyEnv') keeps its colon in the module part
    module, _, attr = key.rpartition(":")
    if not module or not attr.isidentifier():
        raise ValueError(f"environment {key!r}: expected {IMPORT_FORMS}")
    mod = _load_file(key, module) if _is_file(module) else _load_module(key, module)
    if not hasattr(mod, attr):
        import difflib

        envs = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and issubclass(v, Env) and v is not Env)
        close = difflib.get_close_matches(attr, envs, n=1)
        raise ValueError(f"environment {key!r}: module {module!r} has no attribute {attr!r}; Env subclasses there: "
                         f"{', '.join(envs) or 'none'}." + (f" Did you mean '{close[0]}'?" if close else ""))
    cls = getattr(mod, attr)
    if not (isinstance(cls, type) and issubclass(cls, Env)):
        raise ValueError(f"environment {key!r}: {module}:{attr} is {cls!r}, not a subclass of postlab.envs.Env "
                         "(an environment is a class deriving from Env with reset, step and expert; docs/envs.md)")
    if cls is Env:
        raise ValueError(f"environment {key!r}: {module}:{attr} is postlab's base class Env itself, not a task; "
                         "name your subclass of it")
    if not vars(cls).get("name"):  # its own name, not one inherited from a registered parent
        cls.name = key
    return cls


def _is_file(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def _load_module(key: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        # the module itself (or its package) is missing, vs. a dependency that it imports
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise ValueError(f"environment {key!r}: no module named {module!r} (is it installed, or its folder on "
                             f"PYTHONPATH? A file can be named directly: 'path/to/file.py:ClassName')") from None
        raise ValueError(f"environment {key!r}: importing module {module!r} failed: {e}") from None
    except ImportError as e:
        raise ValueError(f"environment {key!r}: importing module {module!r} failed: {e}") from None


def _load_file(key: str, module: str):
    """Import a Python file by path, once per resolved path (a second lookup returns the same module,
    so the class stays one object and `register_env` calls in the file run once)."""
    path = Path(module).expanduser().resolve()
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"environment {key!r}: no Python file {str(path)!r}"
                         f"{'' if path.suffix == '.py' else ' (a file path must end in .py)'}; "
                         f"expected {IMPORT_FORMS}")
    # a stable module name per file: stable for pickling and for `__module__` in error messages
    mod_name = f"postlab_env_file_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_" \
               f"{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod  # before executing: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(mod)
    except ImportError as e:
        del sys.modules[mod_name]
        raise ValueError(f"environment {key!r}: importing file {str(path)!r} failed: {e}") from None
    except BaseException:
        del sys.modules[mod_name]  # the file's own bug: its traceback is what the author needs
        raise
    return mod
