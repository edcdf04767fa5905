"""Checks shared by the token tasks' test files (mqar, count3, kv-retrieval).

As in checks_functions.py, Hypothesis draws one 64-bit case number per example and a seeded PRNG turns it
into the knobs, which keeps Hypothesis's own cost per example low. Each task file supplies the knobs and an
independent reading of the answer from the tokens; the checks here hold for every token task.
"""

import functools
import json
import random

import numpy as np
from hypothesis import strategies as st

import seqlab.tasks  # noqa: F401  (registers the token tasks)
from seqlab.tasks.token_base import IGNORE, TokenExample, get_token_task

CASE_NUMBERS = st.integers(0, 2**64 - 1)


def where(r: random.Random) -> tuple[int, str, int]:
    """A seed (small, negative or 32-bit), a split and an example index (small or huge)."""
    seed = r.choice([r.getrandbits(32), r.randint(-3, 3)])
    return seed, r.choice(["train", "test"]), r.randrange(r.choice([50, 10**9, 2**70]))


@functools.cache
def shared_task(name: str, cfg_items: tuple):
    """One task object per config, reused across examples (it must keep no state)."""
    return get_token_task(name, **dict(cfg_items))


def task_of(name: str, cfg: dict):
    return shared_task(name, tuple(sorted(cfg.items())))


def check_contract(task, ex: TokenExample) -> list[int]:
    """Lengths, token ids, targets either IGNORE or a token id, JSON-able meta; returns the scored positions."""
    assert len(ex.tokens) == len(ex.targets) <= task.max_length
    assert all(type(t) is int and 0 <= t < task.vocab_size for t in ex.tokens)
    assert all(type(y) is int and (y == IGNORE or 0 <= y < task.vocab_size) for y in ex.targets)
    scored = ex.scored
    assert scored, "an example with nothing to score"
    assert "answer" in ex.meta
    json.dumps(ex.meta)
    return scored


def check_purity(name: str, cfg: dict) -> None:
    """example(seed, split, i) is a pure function: the same from one object twice, from a fresh object and in a
    batch; another index, split or seed gives another sequence."""
    task = get_token_task(name, **cfg)
    keys = [(seed, split, i) for seed in (0, 7) for split in ("train", "test") for i in range(40)]
    first = [task.example(*k) for k in keys]
    assert [task.example(*k) for k in keys] == first
    fresh = get_token_task(name, **cfg)
    assert [fresh.example(*k) for k in keys] == first
    assert len({ex.tokens for ex in first}) == len(first)  # no two (seed, split, i) share a sequence here
    tokens, targets = task.batch(7, "test", 3, 5)
    assert tokens.shape == targets.shape == (5, task.max_length) and tokens.dtype == targets.dtype == np.int64
    for j in range(5):
        ex = task.example(7, "test", 3 + j)
        n = len(ex.tokens)
        assert tokens[j, :n].tolist() == list(ex.tokens) and targets[j, :n].tolist() == list(ex.targets)
        assert (tokens[j, n:] == task.pad_id).all() and (targets[j, n:] == IGNORE).all()
    record = task.sample_record(0, "train", 5)
    assert record["task"] == name and record["meta"]["tokens"] == list(task.example(0, "train", 5).tokens)
    json.dumps(record)
