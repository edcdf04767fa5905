"""Integer addition and multiplication of operands with a chosen number of digits.

meta: ``{"a": int, "b": int, "answer": str, "n_digits": max digits, "n_digits_a", "n_digits_b"}``,
the answer in plain decimal (most significant digit first), whatever the format shows.
"""

from __future__ import annotations

from seqlab.tasks.base import Example, Task, TaskConfig, n_digit_count, n_digit_number
from seqlab.tasks.registry import TASKS, register


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

    def max_written_length(self) -> int:
        # Problem 0 is the smallest: 10^(n-1) + 10^(n-1) has n digits, the widest sum n + 1.
        return max(super().max_written_length(), self.answer_width((self.config.max_len,) * 2))

    def space_size(self, lengths: tuple[int, ...]) -> int:
        la, lb = lengths
        return n_digit_count(la) * n_digit_count(lb)

    def operands(self, lengths: tuple[int, ...], k: int) -> tuple[int, int]:
        """Problem number k's operands: k counts pairs (a, b) of the given digit counts."""
        la, lb = lengths
        ka, kb = divmod(k, n_digit_count(lb))
        return n_digit_number(la, ka), n_digit_number(lb, kb)

    def problem(self, lengths: tuple[int, ...], k: int) -> Example:
        la, lb = lengths
        a, b = self.operands(lengths, k)
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


def _reversed_padded(n: int, width: int) -> str:
    """n written least significant digit first, padded with zeros on the right to `width`."""
    return str(n)[::-1].ljust(width, "0")


@register
class MultiplicationSteps(_BinaryArithmetic):
    """a * b worked digit by digit: reversed partial products and running sums (Lee, Cai et al. 2025)."""

    # The paper's chain-of-thought format, the task writes all of it: operands least significant
    # digit first, then for each digit b_i of b (least significant first) the partial product
    # a * b_i * 10^i reversed and zero-padded to len(a) + i + 1 digits, joined by "+"; after each
    # partial product but the first and the last, the running sum so far, in parentheses, in the
    # same form; then "=" and the product, reversed and padded to len(a) + len(b) digits.
    #     12 * 34  ->  21*43=840+0630=8040
    #     123 * 456  ->  321*654=8370+05160(88860)+002940=880650
    # meta as for `multiplication`; `answer` there is the plain product, the target is the whole chain.
    name = "multiplication-steps"
    stream_name = "multiplication_steps"  # its name until the rename: the same seeds give the same examples
    Config = TaskConfig
    op = "*"
    align = "left"  # written as a whole, in reading order: no format reverses or pads it
    numeric = False
    fixed_order = True

    def alphabet(self) -> str:
        return "0123456789+()="

    def compute(self, a: int, b: int) -> int:
        return a * b

    def problem(self, lengths: tuple[int, ...], k: int) -> Example:
        la, lb = lengths
        a, b = self.operands(lengths, k)
        steps, running = [], 0
        for i, digit in enumerate(reversed(str(b))):
            partial = a * int(digit) * 10**i
            running += partial
            step = _reversed_padded(partial, la + i + 1)
            if 0 < i < lb - 1:
                step += f"({_reversed_padded(running, la + i + 1)})"
            steps.append(step)
        chain = "+".join(steps) + "=" + _reversed_padded(a * b, la + lb)
        meta = {"a": a, "b": b, "answer": str(a * b), "n_digits": max(la, lb), "n_digits_a": la, "n_digits_b": lb}
        return Example(fields=(str(a)[::-1], str(b)[::-1]), ops=("*", "="), answer=chain, meta=meta)


# Every task name but this one was written with hyphens; configs and scripts that say the old name still work.
TASKS.alias("multiplication_steps", MultiplicationSteps.name)
