"""Checks shared by the arithmetic tasks' test files (addition, multiplication).

Hypothesis draws one 64-bit case number per example and a seeded PRNG turns it into the knobs
(seed, split, index, sampling mode, min_len/max_len in 1..30): one draw per example keeps
Hypothesis's own cost per example (about a millisecond) as low as it goes. Each task file supplies
its operator and an independent answer function of the two Python ints; the checks here parse
the prompt by hand and compare.
"""

import functools
import random
from collections import Counter

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from seqlab.tasks import get
from tests.tasks.checks_common import assert_repeated_calls_agree


def case(number: int) -> dict:
    r = random.Random(number)
    sampling = r.choice(["independent", "pairs", "fixed"])
    lo, hi = r.randint(1, 30), r.randint(1, 30)
    # `fixed` uses max_len only (min_len may even exceed it); the others need min_len <= max_len.
    cfg = dict(sampling=sampling, min_len=lo, max_len=hi) if sampling == "fixed" else \
        dict(sampling=sampling, min_len=min(lo, hi), max_len=max(lo, hi))
    index = r.randrange(r.choice([50, 10**9]))
    return dict(cfg=cfg, seed=r.getrandbits(32), split=r.choice(["train", "test"]), index=index)


CASES = st.integers(0, 2**64 - 1).map(case)


def canonical(digits: str) -> bool:
    """Plain decimal: ASCII digits, no leading zero except the number 0 itself."""
    return digits.isascii() and digits.isdigit() and (digits == "0" or digits[0] != "0")


@functools.cache
def shared_task(name: str, cfg_items: tuple):
    """One task object per config, reused across Hypothesis examples (it must keep no state)."""
    return get(name, **dict(cfg_items))


def arithmetic_task_tests(NAME: str, OP: str, expected_answer):
    """The three tests of a binary arithmetic task."""

    @pytest.mark.slow
    @settings(max_examples=10_000, deadline=None, derandomize=True)
    @given(CASES)
    def test_every_example_is_correct(c):
        note(f"knobs: {c}")
        cfg, seed, split, index = c["cfg"], c["seed"], c["split"], c["index"]
        task = shared_task(NAME, tuple(sorted(cfg.items())))
        ex = task.example(seed, split, index)
        a, b = ex.meta["a"], ex.meta["b"]

        # The prompt, parsed by hand.
        assert ex.prompt.endswith("=") and ex.prompt.count(OP) == 1 and ex.prompt.count("=") == 1
        left, right = ex.prompt[:-1].split(OP)
        assert canonical(left) and canonical(right)
        assert (int(left), int(right)) == (a, b)
        assert ex.prompt == f"{a}{OP}{b}="

        # The answer, by Python ints.
        assert type(a) is int and type(b) is int
        assert ex.target == ex.meta["answer"] == expected_answer(a, b)
        assert canonical(ex.target)

        # Digit counts, against the configured range.
        assert (len(left), len(right)) == (ex.meta["n_digits_a"], ex.meta["n_digits_b"])
        assert ex.meta["n_digits"] == max(len(left), len(right))
        for n in (len(left), len(right)):
            if cfg["sampling"] == "fixed":
                assert n == cfg["max_len"]
            else:
                assert cfg["min_len"] <= n <= cfg["max_len"]

        # Determinism: the same call on a freshly constructed task (the shared one has served other calls).
        assert get(NAME, **cfg).example(seed, split, index) == ex


    def test_pairs_visits_every_length_pair_equally_often():
        lo, hi = 2, 5
        task = get(NAME, sampling="pairs", min_len=lo, max_len=hi)
        cycle = (hi - lo + 1) ** 2
        for split in ("train", "test"):
            counts = Counter()
            for i in range(37, 37 + 3 * cycle):  # three whole cycles, not starting at 0
                a, b = task.example(1, split, i).prompt[:-1].split(OP)
                counts[len(a), len(b)] += 1
            assert counts == {(x, y): 3 for x in range(lo, hi + 1) for y in range(lo, hi + 1)}


    def test_repeated_calls_agree():
        assert_repeated_calls_agree(NAME)

    return test_every_example_is_correct, test_pairs_visits_every_length_pair_equally_often, test_repeated_calls_agree
