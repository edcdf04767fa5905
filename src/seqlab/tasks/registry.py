"""The task registry: names to Task classes."""

from __future__ import annotations

import difflib
from typing import Any

from seqlab.core.errors import BadInput

TASKS: dict[str, type] = {}


def register(cls):
    TASKS[cls.name] = cls
    return cls


def task_class(name: str):
    if name not in TASKS:
        near = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(sorted(TASKS))})"
        raise BadInput(f"unknown task '{name}'{hint}")
    return TASKS[name]


def get(name: str, **params: Any):
    """A task instance by name, its config built from keyword arguments."""
    from seqlab.core.configs import parse_config

    cls = task_class(name)
    return cls(parse_config(cls.Config, params, prefix="task."))


def names() -> list[str]:
    return sorted(TASKS)
