"""Typed configuration: dataclasses in, YAML and dotted command-line overrides on top.

Every stage (SFT, RL, ...) has one dataclass tree. `load_config(Cls, path, overrides)` builds
it strictly: an unknown key, a value of the wrong type or an invalid choice raises
`ConfigError` naming the key, the value, what is valid and the nearest valid key, before any
work starts. `__post_init__` hooks on the dataclasses reject invalid combinations.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says which key and how."""


def suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def finite_float(text: str) -> float:
    """argparse `type=` for a float option: a finite number ("nan" and "inf" parse as floats, so
    `type=float` alone lets them through)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


# A float field is finite unless its dataclass lists it in `NONFINITE` (a class attribute: a tuple of
# field names whose value may be nan / inf, e.g. "no limit"). NaN slips through every check
# written as `x <= 0` and "nan" / ".inf" parse as floats, so the one check lives here, where
# every config value passes (load_config: YAML, overrides, study stages at --plan).
NONFINITE_ATTR = "NONFINITE"


def _coerce(value: Any, tp: Any, key: str, finite: bool = True) -> Any:
    """Check `value` against the annotation `tp`, converting only lossless cases (int->float).
    A float must be finite unless `finite` is False."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = suggest(str(value), [str(c) for c in choices]) if isinstance(value, str) else ""
            raise ConfigError(f"{key}: invalid value {value!r}; valid values: {', '.join(map(repr, choices))}.{hint}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, finite)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # `X | None`: X's own message names the inner key (e.g. model.lora.r)
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: value {value!r} is not a valid {type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fields = ", ".join(f.name for f in dataclasses.fields(tp) if f.init)
            raise ConfigError(f"{key}: expected a section (a mapping with keys {fields}), got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]", finite) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if finite and not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        renamed = getattr(cls, "RENAMED", {}).get(name)
        if name not in fields and renamed:
            where = f"{(prefix + '.') if prefix else ''}{renamed}"
            if " " in renamed:  # a rename with an explanation: its text is the hint
                raise ConfigError(f"config key '{key}' moved to {where}")
            raise ConfigError(f"config key '{key}' was renamed to '{renamed}'; use '{where}'")
        if name not in fields:
            raise ConfigError(
                f"unknown config key '{key}'.{suggest(name, list(fields))} "
                f"Valid keys{' under ' + prefix if prefix else ''}: {', '.join(fields)}"
            )
        default = section_default(fields[name], hints[name])
        if isinstance(value, dict) and default is not None:
            # a section given in part keeps the trainer's own defaults for the rest (RFT's env is math,
            # DRIFT's optim is constant after 10% warm-up with weight decay 0.1), not the section class's
            base = dataclasses.asdict(default)
            for group in getattr(type(default), "ONE_OF", ()):  # setting one of them drops the default's others
                if set(group) & set(value):
                    base.update({k: None for k in group})
            value = deep_merge(base, value)
        kwargs[name] = _coerce(value, hints[name], key, finite=name not in getattr(cls, NONFINITE_ATTR, ()))
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not str(e).startswith(prefix):
            raise ConfigError(f"{prefix}: {e}") from None
        raise


def section_default(field: dataclasses.Field, hint) -> Any:
    """The default instance of a nested config section (a dataclass field with a default factory), or None."""
    if not (dataclasses.is_dataclass(hint) and field.default_factory is not dataclasses.MISSING):
        return None
    try:
        default = field.default_factory()
    except ConfigError:  # a section whose defaults alone are not valid (model: needs path or preset)
        return None
    return default if dataclasses.is_dataclass(default) else None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=3e-4` -> (['optim', 'lr'], 0.0003). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: '{part}' is not a section")
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Any:
    """Build `cls` from an optional YAML file, an optional dict and dotted overrides (in that order)."""
    data: dict = {}
    if base:
        data = deep_merge(data, base)
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    for text in overrides or []:
        apply_override(data, *parse_override(text))
    return _build(cls, data)


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------- shared sections


@dataclasses.dataclass
class TokenizerConfig:
    """Tokenizer built by postlab for lab-scale models trained from scratch."""

    kind: Literal["char", "bpe"] = "char"
    vocab_size: int = 512  # bpe only; char vocab = characters seen in the corpus + specials

    def __post_init__(self):
        if self.kind == "bpe" and self.vocab_size < 300:
            raise ConfigError(f"tokenizer.vocab_size: {self.vocab_size} is too small for bpe (>= 300: 256 bytes + specials)")


@dataclasses.dataclass
class LoRAConfig:
    """`model.lora`: train low-rank adapters (peft) instead of every weight (postlab.models.lora)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    # peft's target_modules: module names ("q_proj", ...) or "all-linear" (every Linear but the LM head)
    target_modules: str | tuple[str, ...] = "all-linear"
    save_merged: bool = False  # also write the merged model to RUN/final/merged/ (plain transformers loads it)

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"model.lora.r: must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"model.lora.alpha: must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.lora.dropout: must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("model.lora.target_modules: name at least one module (e.g. [q_proj, v_proj]) or "
                              "'all-linear'")


@dataclasses.dataclass
class ModelConfig:
    """Either `path` (a Hugging Face directory or hub id) or `preset` (a tiny model from scratch)."""

    ONE_OF = (("path", "preset"),)  # a config that sets one replaces a trainer default's other
    path: str | None = None
    preset: str | None = None
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False
    lora: LoRAConfig | None = None  # None: full fine-tuning
    # Mixed precision: training forwards run under torch.autocast in this dtype while the weights
    # (and so the optimizer's master copy) stay in model.dtype = float32. None: no autocast.
    autocast: Literal["bfloat16", "float16"] | None = None
    gradient_checkpointing: bool = False  # recompute activations in backward (transformers' own)
    # How dialogues become text (postlab.models.tokenizer.choose_chat_template): "auto" = the
    # tokenizer's own template when it has one, else postlab's; "tokenizer" = the checkpoint's own
    # (an error if it has none); "postlab" = postlab's plain template, whatever the tokenizer has.
    chat_template: Literal["auto", "tokenizer", "postlab"] = "auto"

    def __post_init__(self):
        if (self.path is None) == (self.preset is None):
            raise ConfigError("model: set exactly one of model.path (a checkpoint) or model.preset (a tiny model from scratch)")
        if self.lora is not None and self.path is None:
            raise ConfigError("model.lora: LoRA adapts a pretrained checkpoint; set model.path (a preset trained from "
                              "scratch trains every weight: drop model.lora)")
        if self.autocast is not None and self.dtype != "float32":
            raise ConfigError(f"model.autocast: {self.autocast} autocast keeps float32 master weights; set "
                              f"model.dtype: float32 (got {self.dtype!r}), or drop model.autocast to train in "
                              f"{self.dtype} throughout")
        if self.preset is not None:
            from postlab.models.presets import PRESETS

            if self.preset not in PRESETS:
                raise ConfigError(f"model.preset: unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}.{suggest(self.preset, list(PRESETS))}")


@dataclasses.dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps == 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"optim.lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"optim.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"optim.grad_clip: must be > 0 or null, got {self.grad_clip}")


@dataclasses.dataclass
class RunConfig:
    out_dir: str = "runs/sft"
    seed: int = 0
    max_steps: int = 100
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    num_samples: int = 4  # generated samples written at each eval
    device: str = "auto"
    tensorboard: bool = True
    wandb: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.max_steps <= 0:
            raise ConfigError(f"run.max_steps: must be > 0, got {self.max_steps}")
        for name in ("log_every", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"run.{name}: must be >= 0, got {getattr(self, name)}")
