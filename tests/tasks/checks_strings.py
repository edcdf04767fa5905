"""Checks shared by the string tasks' test files (copy, reverse, sort).

Hypothesis draws one 64-bit case number per example and a seeded PRNG turns it into the knobs
(seed, split, index, sampling mode, min_len/max_len in 1..30, an alphabet: the default, "ab",
ASCII punctuation or arbitrary Unicode): one draw per example keeps Hypothesis's own cost per
example (about a millisecond) as low as it goes. Each task file supplies its own independent
answer function; the checks here read the input back from the prompt and compare.
"""

import functools
import random
import string
from collections import Counter

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from seqlab.core.errors import BadInput
from seqlab.tasks import get
from tests.tasks.checks_common import assert_repeated_calls_agree

DEFAULT_ALPHABET = string.ascii_lowercase


def random_alphabet(r: random.Random) -> str | None:
    kind = r.choice(["default", "ab", "ascii", "unicode"])
    if kind == "default":
        return None
    if kind == "ab":
        return r.choice(["ab", "ba", "10"])
    if kind == "ascii":
        pool = [ch for ch in string.printable if ch != "=" and not ch.isspace()]
    else:
        pool = {chr(r.choice([r.randrange(0x21, 0xD800), r.randrange(0x10000, 0x1FFFF)])) for _ in range(20)}
        pool = sorted(ch for ch in pool if ch != "=" and not ch.isspace() and ch.isprintable())
    return "".join(r.sample(pool, r.randint(2, min(10, len(pool)))))


def case(number: int) -> dict:
    r = random.Random(number)
    sampling = r.choice(["independent", "pairs", "fixed"])
    lo, hi = r.randint(1, 30), r.randint(1, 30)
    # `fixed` uses max_len only (min_len may even exceed it); the others need min_len <= max_len.
    cfg = dict(sampling=sampling, min_len=lo, max_len=hi) if sampling == "fixed" else \
        dict(sampling=sampling, min_len=min(lo, hi), max_len=max(lo, hi))
    alphabet = random_alphabet(r)
    if alphabet is not None:
        cfg["alphabet"] = alphabet
    index = r.randrange(r.choice([50, 10**9]))
    return dict(cfg=cfg, seed=r.getrandbits(32), split=r.choice(["train", "test"]), index=index)


CASES = st.integers(0, 2**64 - 1).map(case)


@functools.cache
def shared_task(name: str, cfg_items: tuple):
    """One task object per config, reused across Hypothesis examples (it must keep no state)."""
    return get(name, **dict(cfg_items))


def string_task_tests(NAME: str, expected_answer):
    """The three tests of a string task, given its name and an independent answer function."""

    @pytest.mark.slow
    @settings(max_examples=10_000, deadline=None, derandomize=True)
    @given(CASES)
    def test_every_example_is_answered_correctly(c):
        note(f"knobs: {c}")
        cfg, seed, split, index = c["cfg"], c["seed"], c["split"], c["index"]
        alphabet = cfg.get("alphabet", DEFAULT_ALPHABET)
        shortest = cfg["max_len"] if cfg["sampling"] == "fixed" else cfg["min_len"]
        task = shared_task(NAME, tuple(sorted(cfg.items())))
        try:
            ex = task.example(seed, split, index)
        except BadInput as e:
            # Only a tiny problem space may lack a problem of this split (1/8 of problems are test).
            assert len(alphabet) ** shortest <= 64 and "too small" in str(e)
            return

        assert ex.prompt.endswith("=") and ex.prompt.count("=") == 1
        s = ex.prompt[:-1]
        assert s == ex.meta["input"] and len(s) == ex.meta["length"]
        assert set(s) <= set(alphabet)
        if cfg["sampling"] == "fixed":
            assert len(s) == cfg["max_len"]
        else:
            assert cfg["min_len"] <= len(s) <= cfg["max_len"]
        assert ex.target == ex.meta["answer"] == expected_answer(s)

        # Determinism: the same call on a freshly constructed task (the shared one has served other calls).
        assert get(NAME, **cfg).example(seed, split, index) == ex


    @pytest.mark.parametrize("split", ["train", "test"])
    def test_pairs_visits_every_length_equally_often(split):
        lo, hi = 3, 9
        task = get(NAME, sampling="pairs", min_len=lo, max_len=hi)
        counts = Counter(len(task.example(2, split, i).prompt) - 1 for i in range(11, 11 + 4 * (hi - lo + 1)))
        assert counts == {n: 4 for n in range(lo, hi + 1)}


    def test_repeated_calls_agree():
        assert_repeated_calls_agree(NAME)

    return test_every_example_is_answered_correctly, test_pairs_visits_every_length_equally_often, test_repeated_calls_agree
