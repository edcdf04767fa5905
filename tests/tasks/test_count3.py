"""Count3 (ENTP's Triplet-Counting): every computed token and every target recounted from the tokens before it,
by a count over residues for every position and by the plain double loop over (i, j) at a few, with the
seed, the scored positions and ENTP's layout checked on their own."""

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.count3 import count3
from seqlab.tasks.token_base import IGNORE, get_token_task
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where


def by_double_loop(prefix: list[int]) -> int:
    """The definition as written: ordered pairs (i, j), i = j included, with x_i + x_j + x_n = 0 mod n."""
    n, last = len(prefix), prefix[-1]
    return sum(1 for a in prefix for b in prefix if (a + b + last) % n == 0) % n


def by_residues(prefix: list[int]) -> int:
    """The same count by residue classes: x_j must be -(x_i + x_n) mod n."""
    n = len(prefix)
    classes = Counter(x % n for x in prefix)
    need = Counter((-(x + prefix[-1])) % n for x in prefix)
    return sum(classes[r] * m for r, m in need.items()) % n


def knobs(r: random.Random) -> dict:
    if r.random() < 0.2:
        return {}
    length = r.choice([2, 3, r.randint(2, 20), r.randint(2, 80)])
    seed_size = r.randint(1, length - 1)
    return {"length": length, "seed_size": seed_size, "seed_max": r.randint(1, length)}


@pytest.mark.slow
@settings(max_examples=2500, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_every_token_after_the_seed_is_count3_of_its_prefix(number):
    r = random.Random(number)
    cfg = knobs(r)
    seed, split, i = where(r)
    note(f"cfg={cfg} at {(seed, split, i)}")
    if cfg.get("seed_max") == 1:  # one sequence: nothing to split into train and test
        with pytest.raises(BadInput, match="only 1 distinct sequence"):
            task_of("count3", cfg)
        return
    task = task_of("count3", cfg)
    L, s, top = task.config.length, task.config.seed_size, task.config.seed_max
    ex = task.example(seed, split, i)
    scored = check_contract(task, ex)
    tokens, targets = list(ex.tokens), list(ex.targets)
    assert len(tokens) == L == task.max_length == task.vocab_size
    assert all(0 <= x < top for x in tokens[:s])
    assert targets[:s] == [IGNORE] * s and scored == list(range(s, L))  # ENTP's forward_idxs
    # The stream the targets continue: a_1 .. a_L and the last target a_{L+1}.
    stream = tokens + [targets[-1]]
    assert targets[s:L - 1] == tokens[s + 1:]  # each target is the next token
    for n in range(s, L + 1):
        assert stream[n] == by_residues(stream[:n]) and stream[n] < n
    for n in {s, L, r.randint(s, L)}:
        assert stream[n] == by_double_loop(stream[:n])
    assert ex.meta["sequence"] == stream and ex.meta["seed"] == tokens[:s] and ex.meta["answer"] == targets[s:]


@pytest.mark.parametrize("prefix, expected", [
    ([1, 2], 0),  # n = 2, x_n = 0: (1, 1) and (2, 2) make even sums, 2 mod 2
    ([1, 1], 0),  # n = 2, x_n = 1: x_i + x_j must be odd, and 1 + 1 is not
    ([1, 1, 2, 3], 2),  # n = 4, x_n = 3: x_i + x_j = 1 mod 4 only for (2, 3) and (3, 2)
    ([0, 0, 0], 0),  # all 9 ordered pairs, 9 mod 3
    ([0, 0, 0, 0, 0], 0),  # 25 mod 5
    ([0, 0, 0, 0, 0, 0], 0),
    ([0, 1, 5], 0),  # n = 3, x_n = 5 = 2: x_i + x_j = 1 mod 3 for (0, 1), (1, 0) and (5, 5): 3 mod 3
    ([2, 0, 1, 1, 3], 1),  # n = 5, x_n = 3: x_i + x_j = 2 mod 5: (2, 0) (0, 2) and the four (1, 1): 6 mod 5
])
def test_count3_by_hand(prefix, expected):
    assert by_double_loop(prefix) == by_residues(prefix)
    assert by_double_loop(prefix) == expected
    assert count3(np.array(prefix)) == expected


def test_seed_values_above_the_prefix_length_are_taken_mod_n():
    # seed_max > seed_size: the first count is over residues mod seed_size, as ENTP's (x[i] + x[-1]) % n does.
    task = get_token_task("count3", length=12, seed_size=3, seed_max=12)
    for i in range(300):
        ex = task.example(0, "train", i)
        stream = list(ex.tokens) + [ex.targets[-1]]
        assert stream[3] == by_double_loop(stream[:3])
    assert any(max(task.example(0, "train", i).tokens[:3]) >= 3 for i in range(300))


def test_seed_is_uniform_and_the_defaults_are_entps():
    task = get_token_task("count3")
    c = task.config
    assert (c.length, c.seed_size, c.seed_max, task.vocab_size) == (64, 16, 16, 64)
    counts = Counter(x for i in range(500) for x in task.example(4, "test", i).tokens[:16])
    assert set(counts) == set(range(16)) and all(abs(counts[v] / 8000 - 1 / 16) < 0.02 for v in range(16))


def test_purity():
    check_purity("count3", {})
    check_purity("count3", {"length": 20, "seed_size": 5, "seed_max": 20})


@pytest.mark.parametrize("params, message", [
    ({"seed_size": 64}, "seed_size \\(64\\) must be below length"),
    ({"length": 10, "seed_size": 4}, "seed_max \\(16\\) must be at most length"),
    ({"length": 1}, "task.length"),
    ({"seed_max": 0}, "task.seed_max"),
    ({"seed_sise": 3}, "did you mean 'task.seed_size'"),
])
def test_bad_knobs_are_refused(params, message):
    with pytest.raises(BadInput, match=message):
        get_token_task("count3", **params)
