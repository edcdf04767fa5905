"""String tasks over a configurable alphabet: copy, reverse and sort.

meta: ``{"input": str, "answer": str, "length": int}``. Sort orders characters ascending by code point.

A string has at most MAX_STRING_LEN characters: its prompt and answer take 2 * max_len + 3 tokens, and the
models trained here read a few thousand positions at most (a decoder's position table defaults to 1024).
Strings of a large space are drawn character by character (linear in the length); problem number k, k
written in base len(alphabet), names a string of a small space (the split ranks them all).
"""

from __future__ import annotations

import random

from pydantic import field_validator, model_validator

from seqlab.tasks.base import Example, Task, TaskConfig
from seqlab.tasks.registry import register

MAX_STRING_LEN = 10_000


class StringConfig(TaskConfig):
    alphabet: str = "abcdefghijklmnopqrstuvwxyz"

    @model_validator(mode="after")
    def _short_enough(self):
        if self.max_len > MAX_STRING_LEN:
            raise ValueError(f"max_len={self.max_len} is above the limit of {MAX_STRING_LEN} characters: a prompt "
                             f"and its answer take 2 * max_len + 3 tokens, beyond what the models here read "
                             f"(a decoder's position table defaults to 1024)")
        return self

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
        return self._example("".join(chars))

    def random_problem(self, lengths: tuple[int, ...], rng: random.Random, size: int) -> Example:
        # Uniform over the len(alphabet) ** n strings, as problem(lengths, rng.randrange(size)) is, but linear
        # in n: decoding a number of n base-26 digits takes n divisions of an n-digit number.
        return self._example("".join(rng.choices(self.config.alphabet, k=lengths[0])))

    def _example(self, s: str) -> Example:
        answer = self.transform(s)
        return Example(fields=(s,), ops=("=",), answer=answer, meta={"input": s, "answer": answer, "length": len(s)})


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
