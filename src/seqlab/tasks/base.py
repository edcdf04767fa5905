"""The task contract: a typed config, a generator, and a pure function from (seed, split, i) to an example.

Tasks are plain Python (no torch): a researcher can `from seqlab.tasks import get` and use the
generators on their own. Formatting into tokens (reversal, padding, index hints, position ids)
happens later, in `seqlab.formats.format`; a task only says what the problem and its answer are.
"""

from __future__ import annotations

import hashlib
import random
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from seqlab.core.configs import Config
from seqlab.core.errors import BadInput

SPLITS = ("train", "test")
# Share of the problem space that belongs to the test split. Every problem is assigned to one
# split by a hash of (seed, its canonical key: `Task.problem_key`), so the two streams can never share a
# problem, however many ways a prompt may write it. The token tasks and the function classes split the same
# way (token_base.py, function_base.py).
TEST_SHARE = 1 / 8
MAX_TRIES = 2000
# A token task or a function class whose problems hold at least this many bits of randomness (no one problem
# more likely than 2**-64) draws its train and test streams independently: 10^9 training and 10^6 test draws
# then share a problem with probability below 1/16000. Below it, a draw is kept only where its problem's key
# hashes to the split asked for, as for the character tasks.
INDEPENDENT_BITS = 64
# A space split by hashing must hold this many problems at least, or the test split may come out empty (the
# chance is (7/8)^64, one seed in 5000): smaller settings are refused, or ranked where they can be listed.
MIN_HASHED_PROBLEMS = 64
# Below this many problems (for one tuple of operand lengths) the split is made by ranking every
# problem's hash, so both splits are non-empty however small the space (26 one-letter strings, say).
SMALL_SPACE = 4096


@dataclass(frozen=True)
class Example:
    """One problem in canonical form.

    `fields` are the operands as written (numbers most significant digit first); the prompt is
    the fields joined by `ops` (`ops[k]` follows `fields[k]`, the last op is "="). `meta` holds the
    canonical problem, its answer and slice labels, as DESIGN.md specifies for `seqlab sample`.
    """

    fields: tuple[str, ...]
    ops: tuple[str, ...]
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return "".join(f + o for f, o in zip(self.fields, self.ops))

    @property
    def target(self) -> str:
        return self.answer


def _takes_text(annotation: Any) -> bool:
    """Whether a field is declared as text: `str`, or `str | None`."""
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    return (typing.get_origin(annotation) in (typing.Union, types.UnionType) and str in args
            and all(a in (str, type(None)) for a in args))


class KnobConfig(Config):
    """The base of every task's config (character tasks, token tasks, function classes).

    A knob declared as text takes an integer as the text it writes: the command line reads `alphabet=12` or
    `labels=123` as JSON, a number, before any config sees it, and an alphabet of the digits 1 and 2 is
    what was meant. (A float is not turned back into text: 1e3 and 1000.0 are one number but two texts.)"""

    @model_validator(mode="before")
    @classmethod
    def _integers_as_text(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            f = cls.model_fields.get(name)
            if f is not None and isinstance(value, int) and not isinstance(value, bool) and _takes_text(f.annotation):
                out[name] = str(value)
        return out


class TaskConfig(KnobConfig):
    """Difficulty knobs shared by every task: how operand lengths are drawn.

    - ``independent``: each operand's length is drawn uniformly from [min_len, max_len], independently
      (Lee, Cai et al. 2025).
    - ``pairs``: the tuples of operand lengths are visited in a fixed cycle by example index, so every
      length pair occurs equally often in any window of that many examples, not only on average
      (McLeish et al. 2024 sample all length pairs with equal frequency).
    - ``fixed``: every operand has length `max_len` (for evaluation by length).
    """

    sampling: Literal["independent", "pairs", "fixed"] = "independent"
    min_len: int = 1
    max_len: int = 10

    @model_validator(mode="after")
    def _check_lengths(self):
        if self.min_len < 1:
            raise ValueError("min_len must be at least 1")
        if self.max_len < self.min_len and self.sampling != "fixed":
            raise ValueError(f"max_len ({self.max_len}) is below min_len ({self.min_len})")
        return self

    def at_length(self, n: int) -> "TaskConfig":
        """This config with every operand fixed to length n."""
        return self.model_copy(update={"sampling": "fixed", "min_len": n, "max_len": n})


class Task:
    """Base class of every task. Subclasses set `name`, `Config`, `slice_key` and implement `draw`."""

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    n_operands: ClassVar[int] = 1
    # Numbers align from the right (least significant digit last); strings from the left.
    align: ClassVar[Literal["left", "right"]] = "left"
    numeric: ClassVar[bool] = False
    slice_key: ClassVar[str] = "length"
    # A task whose prompt and answer are already written in the order they must be read (a maze
    # path, a worked multiplication) refuses the formats that reverse them.
    fixed_order: ClassVar[bool] = False
    # The name hashed into every example's random stream, where it is not `name`: a renamed task keeps
    # its old name here, so each seed still gives the examples it gave before the rename.
    stream_name: ClassVar[str | None] = None

    def __init__(self, config: TaskConfig | None = None):
        self.config = config if config is not None else self.Config()

    # -- what subclasses provide -------------------------------------------------------------
    def alphabet(self) -> str:
        """Every character that can appear in an operand or an answer."""
        raise NotImplementedError

    def symbols(self) -> str:
        """Every separator character the prompt uses (operators and '=')."""
        return "="

    def space_size(self, lengths: tuple[int, ...]) -> int:
        """How many distinct problems have operands of these lengths."""
        raise NotImplementedError

    def problem(self, lengths: tuple[int, ...], k: int) -> Example:
        """Problem number k (0 <= k < space_size) with operands of these lengths."""
        raise NotImplementedError

    def problem_key(self, ex: Example) -> str:
        """The canonical problem an example states: examples that pose the same problem have the same key, so
        they fall in the same split. By default the operands, which write each problem one way only; a task
        whose prompt can write one problem in several ways (a maze's listing order) says what is the same."""
        return "|".join(ex.fields)

    def random_problem(self, lengths: tuple[int, ...], rng: random.Random, size: int) -> Example:
        """A problem drawn uniformly from a large space of `size` problems with operands of these lengths.
        By default problem number rng.randrange(size); a task whose problem numbers are slow to decode (a
        string of 10^5 characters is a number of 10^5 base-26 digits) draws its problem directly."""
        return self.problem(lengths, rng.randrange(size))

    def max_written_length(self) -> int:
        """The most characters any operand or answer of this config can have (a format's index hints name one
        place per character). By default those of a problem at the longest lengths, which suits tasks whose
        widths follow from the lengths alone; a task whose answer can be wider says so."""
        ex = self.problem((self.config.max_len,) * self.n_operands, 0)
        return max(len(text) for text in (*ex.fields, ex.answer))

    def valid_answer(self, ex: Example, output: str) -> bool:
        """A check of a proposed answer that reads the problem only, never `ex.answer` (a maze path
        must follow the maze's edges). Tasks without such a check accept every output."""
        return True

    # -- shared machinery ----------------------------------------------------------------------
    def operand_lengths(self, rng: random.Random, i: int) -> tuple[int, ...]:
        c = self.config
        k = self.n_operands
        if c.sampling == "fixed":
            return (c.max_len,) * k
        span = c.max_len - c.min_len + 1
        if c.sampling == "pairs":
            out, j = [], i
            for _ in range(k):
                out.append(c.min_len + j % span)
                j //= span
            return tuple(out)
        return tuple(rng.randint(c.min_len, c.max_len) for _ in range(k))

    def example(self, seed: int, split: str, i: int, lengths: tuple[int, ...] | None = None) -> Example:
        """Example i of a split: a pure function of (config, seed, split, i). `lengths` fixes the
        operand lengths instead of drawing them (a 5x6 multiplication, say)."""
        if split not in SPLITS:
            raise BadInput(f"unknown split '{split}' (use train or test)")
        rng = random.Random(f"{self.stream_name or self.name}:{seed}:{split}:{i}")
        if lengths is None:
            lengths = self.operand_lengths(rng, i)
        elif len(lengths) != self.n_operands or min(lengths) < 1:
            raise BadInput(f"{self.name} takes {self.n_operands} positive operand length(s), got {tuple(lengths)}")
        lengths = tuple(lengths)
        size = self.space_size(lengths)
        if size <= SMALL_SPACE:
            members = self._small_split(seed, lengths, split)
            return self.problem(lengths, members[rng.randrange(len(members))])
        want_test = split == "test"
        for _ in range(MAX_TRIES):  # a uniform draw lands in the test split with probability TEST_SHARE
            ex = self.random_problem(lengths, rng, size)
            if in_test_split(seed, self.problem_key(ex)) == want_test:
                return ex
        raise BadInput(
            f"{self.name}: cannot find a {split} example with operand lengths {lengths}: "
            "the problem space is too small to split into train and test"
        )

    def _small_split(self, seed: int, lengths: tuple[int, ...], split: str) -> list[int]:
        """Problem numbers of one split in a small space: the TEST_SHARE with the lowest hashes are test."""
        cache = self.__dict__.setdefault("_split_cache", {})
        key = (seed, lengths)
        if key not in cache:
            size = self.space_size(lengths)
            if size < 2:
                raise BadInput(f"{self.name}: only {size} problem has operand lengths {lengths}: "
                               "too small to split into train and test")
            ranked = sorted(range(size), key=lambda k: split_hash(seed, self.problem_key(self.problem(lengths, k))))
            n_test = max(1, round(size * TEST_SHARE))
            cache[key] = {"test": ranked[:n_test], "train": ranked[n_test:]}
        return cache[key][split]

    def examples(self, seed: int, split: str, n: int, start: int = 0) -> list[Example]:
        return [self.example(seed, split, i) for i in range(start, start + n)]

    def at_length(self, n: int) -> "Task":
        """The same task with every operand fixed to length n (for evaluation by length); its config checked
        as any other (BadInput for a length the task refuses)."""
        from seqlab.core.configs import parse_config

        return type(self)(parse_config(type(self.config), self.config.at_length(n).model_dump(), prefix="task."))

    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0]


def split_hash(seed: int, key: str | bytes) -> int:
    """A 64-bit hash of (seed, a problem's canonical key)."""
    data = f"{seed}|".encode() + (key if isinstance(key, bytes) else key.encode())
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def in_test_split(seed: int, key: str | bytes) -> bool:
    """Whether the problem with this canonical key belongs to the test split for this seed (in a large space;
    a small one ranks every problem's hash instead, `Task._small_split`)."""
    return split_hash(seed, key) < TEST_SHARE * 2**64


def n_digit_count(n: int) -> int:
    """How many integers have exactly n digits (0-9 count as one-digit numbers)."""
    return 10 if n == 1 else 9 * 10 ** (n - 1)


def n_digit_number(n: int, k: int) -> int:
    """The k-th integer (from 0) with exactly n digits."""
    return k if n == 1 else 10 ** (n - 1) + k
