"""Integer addition and multiplication of operands with a chosen number of digits.

meta: ``{"a": int, "b": int, "answer": str, "n_digits": max digits, "n_digits_a", "n_digits_b"}``,
the answer in plain decimal (most significant digit first), whatever the format shows.
"""

from __future__ import annotations

from seqlab.tasks.base import Example, Task, TaskConfig, n_digit_count, n_digit_number
from seqlab.tasks.registry import register


class _BinaryArithmetic(Task):
    n_operands = 2
    align = "right"
    numeric = True
    slice_key = "n_digits"
    op: str

    def alphabet(self) -> str:
        return "0123456789"

    def symbols(self) -> str:
        return self.op + "="

    def compute(self, a: int, b: int) -> int:
        raise NotImplementedError

    def space_size(self, lengths: tuple[int, ...]) -> int:
        la, lb = lengths
        return n_digit_count(la) * n_digit_count(lb)

    def problem(self, lengths: tuple[int, ...], k: int) -> Example:
        la, lb = lengths
        ka, kb = divmod(k, n_digit_count(lb))
        a, b = n_digit_number(la, ka), n_digit_number(lb, kb)
        answer = str(self.compute(a, b))
        meta = {"a": a, "b": b, "answer": answer, "n_digits": max(la, lb), "n_digits_a": la, "n_digits_b": lb}
        return Example(fields=(str(a), str(b)), ops=(self.op, "="), answer=answer, meta=meta)


@register
class Addition(_BinaryArithmetic):
    """a + b for non-negative integers with a chosen number of digits each."""

    name = "addition"
    Config = TaskConfig
    op = "+"

    def compute(self, a: int, b: int) -> int:
        return a + b

    def answer_width(self, lengths: tuple[int, ...]) -> int:
        """Digits of the widest possible answer: the width zero-padding pads to."""
        return max(lengths) + 1


@register
class Multiplication(_BinaryArithmetic):
    """a * b for non-negative integers with a chosen number of digits each."""

    name = "multiplication"
    Config = TaskConfig
    op = "*"

    def compute(self, a: int, b: int) -> int:
        return a * b

    def answer_width(self, lengths: tuple[int, ...]) -> int:
        return sum(lengths)
