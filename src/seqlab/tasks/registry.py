"""The task registry: names to Task classes. A task registers itself with `@register` where it is defined."""

from __future__ import annotations

from typing import Any

from seqlab.core.registry import Registry

TASKS: Registry[type] = Registry("task")
register = TASKS.register


def task_class(name: str):
    """The Task class called `name` (or once called so: the new name is said on stderr)."""
    return TASKS[TASKS.canonical(name)]


def get(name: str, **params: Any):
    """A task instance by name, its config built from keyword arguments."""
    from seqlab.core.configs import parse_config

    cls = task_class(name)
    return cls(parse_config(cls.Config, params, prefix="task."))


def names() -> list[str]:
    return TASKS.names()
