"""Multiplication with worked steps: every example's chain is parsed back and each piece checked
against Python ints (not rebuilt the way the task builds it): every partial product is the next
digit of b times a times the right power of ten, every running sum is the sum so far, every piece
has its width, and the result is a * b. The paper's own examples are checked by hand.
"""

import re
from collections import Counter

import pytest
from hypothesis import given, note, settings

from seqlab.core.configs import task_section
from seqlab.tasks import TASKS, get, task_class
from tests.tasks.checks_arithmetic import CASES, canonical, shared_task
from tests.tasks.checks_common import assert_repeated_calls_agree

NAME = "multiplication-steps"
OLD_NAME = "multiplication_steps"  # its name until every task name was written with hyphens


def read_reversed(text: str) -> int:
    return int(text[::-1])


def check_chain(chain: str, a: int, b: int) -> None:
    la, lb = len(str(a)), len(str(b))
    steps_text, final = chain.split("=")
    steps = steps_text.split("+")
    assert len(steps) == lb
    total = 0
    for i, step in enumerate(steps):
        m = re.fullmatch(r"(\d+)(?:\((\d+)\))?", step)
        assert m, step
        partial, running = m.group(1), m.group(2)
        digit = (b // 10**i) % 10
        assert len(partial) == la + i + 1 and read_reversed(partial) == digit * a * 10**i
        total += digit * a * 10**i
        if 0 < i < lb - 1:
            assert running is not None and len(running) == la + i + 1 and read_reversed(running) == total
        else:
            assert running is None
    assert len(final) == la + lb and read_reversed(final) == a * b == total


def test_the_papers_examples():
    task = get(NAME)
    for (a, b), written in [((12, 34), "21*43=840+0630=8040"),
                            ((123, 456), "321*654=8370+05160(88860)+002940=880650"),
                            ((123, 4567), "321*7654=1680+08370(14280)+005160(147960)+0002940=1471650"),
                            ((5, 7), "5*7=53=53")]:
        la, lb = len(str(a)), len(str(b))
        first_b = 10 ** (lb - 1) if lb > 1 else 0
        first_a = 10 ** (la - 1) if la > 1 else 0
        k = (a - first_a) * (9 * 10 ** (lb - 1) if lb > 1 else 10) + (b - first_b)
        ex = task.problem((la, lb), k)
        assert ex.prompt + ex.answer == written


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, derandomize=True)
@given(CASES)
def test_every_chain_is_right(c):
    note(f"knobs: {c}")
    cfg = c["cfg"]
    task = shared_task(NAME, tuple(sorted(cfg.items())))
    ex = task.example(c["seed"], c["split"], c["index"])
    a, b = ex.meta["a"], ex.meta["b"]
    assert ex.prompt.endswith("=") and ex.prompt.count("*") == 1 and ex.prompt.count("=") == 1
    left, right = ex.prompt[:-1].split("*")
    assert canonical(left[::-1]) and canonical(right[::-1])  # written least significant digit first
    assert (read_reversed(left), read_reversed(right)) == (a, b)
    assert ex.meta["answer"] == str(a * b)
    check_chain(ex.answer, a, b)
    for n in (len(left), len(right)):
        assert n == cfg["max_len"] if cfg["sampling"] == "fixed" else cfg["min_len"] <= n <= cfg["max_len"]
    assert get(NAME, **cfg).example(c["seed"], c["split"], c["index"]) == ex


def test_pairs_visits_every_length_pair_equally_often():
    task = get(NAME, sampling="pairs", min_len=2, max_len=4)
    counts = Counter((task.example(1, "train", i).meta["n_digits_a"], task.example(1, "train", i).meta["n_digits_b"])
                     for i in range(5, 5 + 2 * 9))
    assert counts == {(x, y): 2 for x in range(2, 5) for y in range(2, 5)}


def test_repeated_calls_agree():
    assert_repeated_calls_agree(NAME)


def test_the_old_name_still_works_and_draws_the_same_examples():
    assert task_class(OLD_NAME) is task_class(NAME) and TASKS.renamed(OLD_NAME) == NAME
    old, new = get(OLD_NAME, max_len=2), get(NAME, max_len=2)
    assert [old.example(2, s, i) for s in ("train", "test") for i in range(50)] == \
        [new.example(2, s, i) for s in ("train", "test") for i in range(50)]
    # The streams are still seeded by the old name, so a seed gives the examples it gave before the rename.
    firsts = [new.example(0, "train", i) for i in range(3)]
    assert [ex.prompt + ex.answer for ex in firsts] == ["98*69=435+0108=4458", "0*66=00+000=000", "5*0=00=00"]


def test_the_old_name_says_the_new_one_once(cli, monkeypatch):
    monkeypatch.setattr(TASKS, "_told", set())
    code, out, err = cli("sample", OLD_NAME, "--n", "1")
    assert code == 0 and out.strip()
    assert err.strip().splitlines() == [f"task '{OLD_NAME}' is now called '{NAME}'"]
    code, _, err = cli("sample", OLD_NAME, "--n", "1")
    assert code == 0 and err == ""


def test_a_config_that_says_the_old_name_stores_the_new_one():
    assert task_section(OLD_NAME, get, "a task") == task_section(NAME, get, "a task")
    assert task_section({"name": OLD_NAME, "max_len": 3}, get, "a task")["name"] == NAME
