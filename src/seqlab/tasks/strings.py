"""String tasks over a configurable alphabet: copy, reverse and sort.

meta: ``{"input": str, "answer": str, "length": int}``. Sort orders characters ascending by code point.
"""

from __future__ import annotations

from pydantic import field_validator

from seqlab.tasks.base import Example, Task, TaskConfig
from seqlab.tasks.registry import register


class StringConfig(TaskConfig):
    alphabet: str = "abcdefghijklmnopqrstuvwxyz"

    @field_validator("alphabet")
    @classmethod
    def _alphabet_ok(cls, v: str) -> str:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("alphabet needs at least two distinct characters, each once")
        if any(ch in "=" or ch.isspace() for ch in v):
            raise ValueError("alphabet may not contain '=' or whitespace")
        return v


class _StringTask(Task):
    Config = StringConfig
    n_operands = 1
    slice_key = "length"

    def alphabet(self) -> str:
        return self.config.alphabet

    def transform(self, s: str) -> str:
        raise NotImplementedError

    def space_size(self, lengths: tuple[int, ...]) -> int:
        return len(self.config.alphabet) ** lengths[0]

    def problem(self, lengths: tuple[int, ...], k: int) -> Example:
        (n,) = lengths
        alphabet, chars = self.config.alphabet, []
        for _ in range(n):  # k written in base len(alphabet), one digit per character
            k, d = divmod(k, len(alphabet))
            chars.append(alphabet[d])
        s = "".join(chars)
        answer = self.transform(s)
        return Example(fields=(s,), ops=("=",), answer=answer, meta={"input": s, "answer": answer, "length": n})


@register
class Copy(_StringTask):
    """Repeat the input string."""

    name = "copy"

    def transform(self, s: str) -> str:
        return s


@register
class Reverse(_StringTask):
    """Write the input string backwards."""

    name = "reverse"
    # Answer character j mirrors input character j counted from the right.
    align = "right"

    def transform(self, s: str) -> str:
        return s[::-1]


@register
class Sort(_StringTask):
    """Sort the characters of the input string in ascending order."""

    name = "sort"

    def transform(self, s: str) -> str:
        return "".join(sorted(s))
