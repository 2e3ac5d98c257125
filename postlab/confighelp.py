"""Every key of a config class with its default, type / valid values and meaning, read from the
class itself (field annotations, defaults and the `# comment` on or above each field in its
source), so the listing cannot drift from the code. `postlab train STAGE --config-help`."""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import typing

from postlab.config import NONFINITE_ATTR, section_default, type_name


def field_comments(cls: type) -> dict[str, str]:
    """{field name: its comment}: the comment at the end of the field's line, else the comment lines
    right above it; inherited fields from the base classes."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names = {f.name for f in dataclasses.fields(klass)}
        pending: list[str] = []
        line_field: dict[int, str] = {}
        depth = 0
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        for i, tok in enumerate(tokens):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            elif tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                row = tok.start[0]
                if row in line_field:
                    out[line_field[row]] = (out.get(line_field[row], "") + " " + text).strip()
                elif tok.line.lstrip().startswith("#"):  # a comment line: about the field below it
                    pending.append(text)
                else:  # the end of another line (a class attribute): about that line only
                    pending = []
            elif tok.type == tokenize.NAME and depth == 0 and tok.start[1] == 4 and tok.string in names \
                    and i + 1 < len(tokens) and tokens[i + 1].string == ":":
                line_field[tok.start[0]] = tok.string
                if pending:
                    out[tok.string] = " ".join(pending)
                pending = []
            elif tok.type in (tokenize.NEWLINE, tokenize.NL) and tok.line.strip() == "":
                pending = []
            elif tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string == "def":
                break
    return out


def _doc(cls: type) -> str:
    """The first line of a class's own docstring ("" for dataclass's generated signature)."""
    doc = (cls.__doc__ or "").strip()
    return "" if not doc or doc.startswith(cls.__name__ + "(") else doc.splitlines()[0]


def _valid(tp, finite: bool) -> str:
    origin = typing.get_origin(tp)
    text = type_name(tp).replace("NoneType", "null").replace("Ellipsis", "...")
    if tp is float or (origin is not None and float in typing.get_args(tp)):
        text += ", finite" if finite else ", may be nan/inf"
    return text


def describe(cls: type, default=None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, default, valid values, meaning) for every leaf of the config class tree."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, tp = prefix + f.name, hints[f.name]
        if default is not None:
            value = getattr(default, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = section_default(f, tp) if dataclasses.is_dataclass(tp) else f.default_factory()
        else:
            value = "(required)"
        if dataclasses.is_dataclass(tp):
            rows.append((key, "", "section", comments.get(f.name, "") or _doc(tp)))
            rows += describe(tp, value if dataclasses.is_dataclass(value) else None, key + ".")
            continue
        rows.append((key, "null" if value is None else repr(value) if isinstance(value, str) else str(value),
                     _valid(tp, f.name not in getattr(cls, NONFINITE_ATTR, ())), comments.get(f.name, "")))
    return rows


def trainer_defaults(cls: type) -> object | None:
    """The trainer's own default config (its sections' defaults), when it builds without overrides."""
    from postlab.config import ConfigError, load_config

    for base in ([], ["model.preset=nano"]):
        try:
            return load_config(cls, None, base)
        except (ConfigError, TypeError, ValueError):
            continue
    return None


def config_help(cls: type) -> str:
    """The listing `--config-help` prints."""
    default = trainer_defaults(cls)
    rows = describe(cls, default)
    width = max(len(k) for k, *_ in rows)
    lines = [f"{cls.__name__}" + (f": {_doc(cls)}" if _doc(cls) else ""), "",
             "Every key (set it with key.sub=value or in the YAML config), its default as this trainer fills it in, "
             "[its valid values] and its meaning. Float values must be finite unless marked otherwise; the config "
             "checks name any further range when a value is out of it.", ""]
    for key, value, valid, meaning in rows:
        if valid == "section":
            lines.append(f"{key}:{('  # ' + meaning) if meaning else ''}")
            continue
        lines.append(f"  {key.ljust(width)} = {value}    [{valid}]" + (f"  {meaning}" if meaning else ""))
    return "\n".join(lines) + "\n"
