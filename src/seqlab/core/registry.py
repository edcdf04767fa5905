"""One registry for everything seqlab looks up by name: tasks, models, mixers, recipes, baselines, run kinds.

An entry registers itself by decorator in the file that defines it:

    TASKS = Registry("task")

    @TASKS.register
    class Addition(Task):
        name = "addition"

`TASKS.get("additon")` raises BadInput("unknown task 'additon' (did you mean 'addition'?)"). A registry
reads like a mapping (`name in TASKS`, `TASKS[name]`, `sorted(TASKS)`, `TASKS.items()`), so contract tests
iterate over whatever is registered instead of a hand-kept list of names.
"""

from __future__ import annotations

import difflib
import sys
from typing import Generic, Iterator, TypeVar

from seqlab.core.errors import BadInput

T = TypeVar("T")


def nearest(name: str, choices, cutoff: float = 0.6) -> str | None:
    """The choice closest to a mistyped `name`, or None where none is close."""
    near = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return near[0] if near else None


def unknown_name(what: str, name: str, choices, known: str | None = None) -> str:
    """"unknown WHAT 'NAME' (did you mean 'X'?)", or the known names where none is close."""
    near = nearest(name, choices)
    if near is not None:
        return f"unknown {what} '{name}' (did you mean '{near}'?)"
    return f"unknown {what} '{name}' (known: {known if known is not None else ', '.join(choices)})"


class Registry(Generic[T]):
    """Names to entries (classes, specs or functions), with the nearest-name hint on a miss.

    `what` names an entry in messages ("task", "mixer"). `sort_known` lists the known names sorted in
    the error; otherwise in registration order (where that order means something, as for mixers)."""

    def __init__(self, what: str, sort_known: bool = True):
        self.what = what
        self.sort_known = sort_known
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._told: set[str] = set()  # old names whose new name has been said

    def register(self, entry: T | None = None, *, name: str | None = None, description: str | None = None):
        """Register `entry` under `name` (default: its `name` attribute). Usable as `@REG.register` or
        `@REG.register(name=..., description=...)`; returns the entry."""

        def add(obj: T) -> T:
            key = name if name is not None else getattr(obj, "name", None)
            if not isinstance(key, str) or not key:
                raise TypeError(f"a {self.what} needs a name to be registered")
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.what} '{key}' is registered twice")
            self._entries[key] = obj
            if description is not None:
                self._descriptions[key] = description
            return obj

        return add if entry is None else add(entry)

    def alias(self, old: str, new: str) -> None:
        """Keep an old name working: `get(old)` answers with `new`'s entry, and `canonical(old)` is `new`
        (saying so once)."""
        self._aliases[old] = new

    def renamed(self, name: str) -> str | None:
        """The new name of a renamed entry, or None."""
        return self._aliases.get(name)

    def canonical(self, name: str) -> str:
        """The registered name that `name` stands for: itself, or the new name of a renamed entry, which is
        said once a process in one line on stderr (a config or a script that says the old name keeps
        working, and whoever reads the output learns the new one); BadInput for a name never registered."""
        if name in self._entries:
            return name
        new = self.renamed(name)
        if new is None:
            raise BadInput(self.unknown(name))
        if name not in self._told:
            self._told.add(name)
            print(f"{self.what} '{name}' is now called '{new}'", file=sys.stderr)
        return new

    def unknown(self, name: str) -> str:
        choices = sorted(self._entries) if self.sort_known else list(self._entries)
        return unknown_name(self.what, name, choices)

    def get(self, name: str) -> T:
        """The entry `name`; BadInput naming the nearest registered one where there is none."""
        if name in self._entries:
            return self._entries[name]
        new = self.renamed(name)
        if new is not None:
            return self._entries[new]
        raise BadInput(self.unknown(name))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self, name: str) -> str:
        """What an entry is, in one line: its registered description, else its `description` or the first
        line of its docstring."""
        if name in self._descriptions:
            return self._descriptions[name]
        entry = self.get(name)
        text = getattr(entry, "description", None)
        if isinstance(text, str):
            return text
        return ((getattr(entry, "__doc__", None) or "").strip().splitlines() or [""])[0]

    # -- a read-only mapping ---------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return self._entries.keys()

    def values(self):
        return self._entries.values()

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"

