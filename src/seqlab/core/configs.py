"""Typed configs: strict pydantic models that reject unknown keys by naming the nearest one.

Every config in seqlab derives from `Config`. `parse_config` turns a ValidationError into a
one-line `BadInput` such as ``unknown key 'model.n_layer' (did you mean 'model.n_layers'?)``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from seqlab.core.errors import BadInput
from seqlab.core.registry import nearest

C = TypeVar("C", bound="Config")


def _allows_none(annotation: Any) -> bool:
    return annotation is None or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                  and type(None) in typing.get_args(annotation))


class Config(BaseModel):
    # allow_inf_nan=False: every float of every config is finite. nan or inf is never a meaningful setting (an lr of
    # nan "diverges" only after the run has started) and could not be written to config.json as JSON.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        """`key=none` (or null) on the command line unsets a field that may be None; where "none" is
        a value of its own (model.position=none) it stays the word."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is not None and isinstance(value, str) and value.lower() in ("none", "null") \
                    and _allows_none(field.annotation):
                out[name] = None
        return out

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", serialize_as_any=True)

    def stable_hash(self) -> str:
        """A hash of the config's content that does not depend on key order or Python's hash seed."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config classes an annotation admits: itself, or the members of a union (`A | B | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _walk(model_cls: type[BaseModel], loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """(the location as the user wrote it, the config class at its end): a discriminated union puts the
    member's tag into pydantic's location (`model.transformer.n_layer`), which names no key of the user's."""
    keys: list[str] = []
    cls: type[BaseModel] | None = model_cls
    parts = list(loc)
    while parts and cls is not None:
        part = parts.pop(0)
        field = cls.model_fields.get(part)
        keys.append(part)
        if field is None:
            return tuple(keys + parts), None
        members = _models_in(field.annotation)
        tag = field.discriminator
        if isinstance(tag, str) and parts:  # the next part is the tag of the member that was tried
            chosen = [m for m in members if parts[0] in typing.get_args(m.model_fields[tag].annotation)]
            if chosen:
                parts.pop(0)
                members = chosen
        cls = members[0] if members else None
    return tuple(keys + parts), cls


def _valid_keys(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at `loc` (the location of the offending key's parent)."""
    _, cls = _walk(model_cls, loc)
    return list(cls.model_fields) if cls is not None else []


def explain(error: ValidationError, model_cls: type[BaseModel], prefix: str = "") -> str:
    """One line for the first problem in a ValidationError."""
    err = error.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        loc = _walk(model_cls, loc[:-1])[0] + loc[-1:]
    dotted = prefix + ".".join(loc)
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(model_cls, loc[:-1])
        near = nearest(loc[-1], valid, cutoff=0.5)
        hint = f" (did you mean '{prefix + '.'.join(loc[:-1] + (near,))}'?)" if near else ""
        if not near and valid:
            hint = f" (valid keys: {', '.join(valid)})"
        return f"unknown key '{dotted}'{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith(("unknown ", "invalid value for '")):
        return msg  # a nested config already explained itself
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {shown_value(value)})"
    if not loc:  # a check across fields of the section itself
        return f"invalid {prefix.rstrip('.') or 'config'}: {msg}"
    return f"invalid value for '{dotted}': {msg}{shown}"


def parse_config(model_cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise BadInput(explain(e, model_cls, prefix)) from None


# Configs nest a few levels (model.mamba.d_state; self_improve.schedule is a list of lists of lists): a value or a
# config file nested deeper than this is a mistake, and a deep one would exhaust the parser's recursion.
MAX_NESTING = 32


def int_digit_limit() -> int:
    """The most digits Python converts between an int and a decimal string (0: no limit, before Python 3.11)."""
    return getattr(sys, "get_int_max_str_digits", lambda: 0)()


def shown_value(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut short where it is long."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's int-to-string digit limit
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def nesting(value: Any) -> int:
    """How many lists and mappings deep a value goes (0 for a number or a string); no recursion, so any depth."""
    depth, level = 0, [value]
    while True:
        level = [c for c in level if isinstance(c, (list, tuple, dict))]
        if not level:
            return depth
        depth += 1
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c)]


def check_nesting(value: Any, what: str) -> None:
    if nesting(value) > MAX_NESTING:
        raise BadInput(f"{what} nests lists or mappings more than {MAX_NESTING} levels deep; no setting does")


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses (numbers, booleans, lists), else the string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        return text  # "none" stays a word: configs turn it into None where a field may be None
    except RecursionError:
        raise BadInput(f"value {shown_value(text)} nests lists or mappings more than {MAX_NESTING} levels deep; "
                       "no setting does") from None
    except ValueError:  # json reads integers with int(), which refuses more digits than Python's limit
        raise BadInput(f"value {shown_value(text)} has more digits than Python's limit for an integer "
                       f"({int_digit_limit()}); no setting takes a number that large") from None
    check_nesting(value, f"value {shown_value(text)}")
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict (a copy is returned)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise BadInput(f"expected key=value, got '{item}'")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise BadInput(f"bad key '{key}' in '{item}'")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise BadInput(f"'{p}' in '{key}' is a value, not a section")
            node = nxt
        try:
            node[parts[-1]] = parse_value(raw)
        except BadInput as e:
            raise BadInput(f"invalid value for '{key.strip()}': {e}") from None
    return out


def task_section(value: Any, make, what: str) -> dict[str, Any]:
    """A run config's `task` section, from a name or a mapping with a name: the name and every knob of the
    task's config (defaults filled in), as `make(name, **knobs)` validates them. `what` names the kind of
    task in the error for anything else. The name stored is the task's own: a config that says a task's
    old name reads back as the same run under the new one."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ValueError(f"task must be {what} name or a mapping with a name")
    task = make(value["name"], **task_params(value))
    return {"name": task.name, **task.config.to_json()}


def task_params(section: dict[str, Any]) -> dict[str, Any]:
    """A task section's knobs: everything but its name."""
    return {k: v for k, v in section.items() if k != "name"}
