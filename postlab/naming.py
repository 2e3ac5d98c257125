"""Named registries: one place that rejects a duplicate name and suggests the nearest valid one.

Objectives, RL algorithms and study stage kinds are each a `Registry`; a plugin that registers a
name twice fails at import instead of silently replacing the built-in.
"""

from __future__ import annotations

import difflib


class Registry(dict):
    """A dict of name -> entry whose `add` refuses duplicates and whose `lookup` suggests names."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def add(self, name: str, entry, owner: str = ""):
        if name in self:
            raise ValueError(f"{self.what} {name!r} is already registered{f' (by {owner})' if owner else ''}; "
                             "pick another name")
        self[name] = entry
        return entry

    def lookup(self, name: str):
        if name not in self:
            close = difflib.get_close_matches(name, list(self), n=1)
            raise ValueError(f"unknown {self.what} {name!r}; valid: {', '.join(self)}."
                             + (f" Did you mean '{close[0]}'?" if close else ""))
        return self[name]
