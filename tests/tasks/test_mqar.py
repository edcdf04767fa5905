"""MQAR (Zoology's `multiquery_ar`): every target read back from the tokens alone (the key-value prefix is the
table, each scored position holds a key and its target is that key's value), the value ranges, every key
asked once, and the distributions Zoology samples: query slots by successive sampling in proportion to
(g + 1) ** (power_a - 1) and uniform filler."""

import math
import random
from collections import Counter
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.token_base import IGNORE, get_token_task
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where


def knobs(r: random.Random) -> dict:
    kv = r.randint(1, 40)
    length = 2 * r.randint(2 * kv, 2 * kv + r.choice([0, 3, 60]))
    cfg = {"num_kv_pairs": kv, "input_seq_len": length,
           "vocab_size": r.choice([length + 1, length + 2, r.randint(length + 1, 10_000)]),
           "random_non_queries": r.random() < 0.7}
    if r.random() < 0.5:
        cfg["power_a"] = r.choice([0.01, 0.5, 1.0, 3.0])
    return cfg


def n_sequences(V: int, L: int, kv: int, fillers: bool) -> int:
    """Counted by hand: ordered distinct keys from V//2 - 1, ordered distinct values from V - V//2, the query
    slots (kv of the (L - 2kv) / 2, in order) and, with random fillers, V choices at each of the L - 3kv others."""
    def ordered(pool: int, k: int) -> int:
        out = 1
        for j in range(k):
            out *= max(pool - j, 0)
        return out

    return ordered(V // 2 - 1, kv) * ordered(V - V // 2, kv) * ordered((L - 2 * kv) // 2, kv) * (V ** (L - 3 * kv) if fillers else 1)


def read_answer(tokens: list[int], kv: int, vocab: int, targets: list[int]) -> None:
    """The targets, read from the tokens: the prefix k1 v1 .. kk vk is the table; a scored position is a query
    slot (at an even offset after the prefix) holding a key, and its target is the key's value."""
    ctx = 2 * kv
    table = dict(zip(tokens[0:ctx:2], tokens[1:ctx:2]))
    assert len(table) == kv and len(set(table.values())) == kv  # keys distinct, values distinct
    assert all(1 <= key < vocab // 2 <= value < vocab for key, value in table.items())
    scored = [t for t in range(len(tokens)) if targets[t] != IGNORE]
    assert len(scored) == kv and all(t >= ctx and (t - ctx) % 2 == 0 for t in scored)
    assert sorted(tokens[t] for t in scored) == sorted(table)  # every key asked exactly once
    for t in scored:
        assert targets[t] == table[tokens[t]]


@pytest.mark.slow
@settings(max_examples=2500, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_every_target_is_the_value_of_its_query_key(number):
    r = random.Random(number)
    cfg = knobs(r)
    seed, split, i = where(r)
    note(f"cfg={cfg} at {(seed, split, i)}")
    kv, L, V = cfg["num_kv_pairs"], cfg["input_seq_len"], cfg["vocab_size"]
    if n_sequences(V, L, kv, cfg["random_non_queries"]) < 64:  # too few to split by hash
        with pytest.raises(BadInput, match="too few to split into train and test"):
            task_of("mqar", cfg)
        return
    task = task_of("mqar", cfg)
    ex = task.example(seed, split, i)
    check_contract(task, ex)
    tokens, targets = list(ex.tokens), list(ex.targets)
    assert len(tokens) == L == task.max_length and task.vocab_size == V
    read_answer(tokens, kv, V, targets)
    if not cfg["random_non_queries"]:
        # Without filler the query slots show in the tokens alone: every nonzero token after the prefix.
        table = dict(zip(tokens[0:2 * kv:2], tokens[1:2 * kv:2]))
        expected = [table[tok] if t >= 2 * kv and tok != 0 else IGNORE for t, tok in enumerate(tokens)]
        assert targets == expected
    m = ex.meta
    assert tokens[0:2 * kv:2] == m["keys"] and tokens[1:2 * kv:2] == m["values"]
    assert m["query_positions"] == [2 * kv + 2 * g for g in m["gaps"]]
    assert all(tokens[p] == key and targets[p] == value for p, key, value in zip(m["query_positions"], m["keys"],
                                                                               m["values"]))
    assert m["answer"] == [y for y in targets if y != IGNORE]


def test_purity():
    check_purity("mqar", {})
    check_purity("mqar", {"vocab_size": 256, "random_non_queries": False})


def test_defaults_are_zoologys():
    c = get_token_task("mqar").config
    assert (c.vocab_size, c.input_seq_len, c.num_kv_pairs, c.power_a, c.random_non_queries) == (8192, 64, 4, 0.01, True)


def test_zoologys_example_layout():
    # The docstring example of `multiquery_ar` (vocab 12, 2 pairs, length 16, no filler): pairs, then each key
    # once at an even offset after them, zeros elsewhere, and the value as the target at the query.
    task = get_token_task("mqar", vocab_size=17, num_kv_pairs=2, input_seq_len=16, random_non_queries=False)
    for i in range(200):
        ex = task.example(3, "train", i)
        k1, v1, k2, v2 = ex.tokens[:4]
        assert 1 <= min(k1, k2) and max(k1, k2) <= 7 and 8 <= min(v1, v2) and max(v1, v2) <= 16
        rest = ex.tokens[4:]
        assert sorted(t for t in rest if t) == sorted([k1, k2])
        assert all(tok == 0 for t, tok in enumerate(rest) if t % 2)
        assert {(ex.tokens[t], ex.targets[t]) for t in ex.scored} == {(k1, v1), (k2, v2)}


def slot_probabilities(slots: int, k: int, a: float) -> dict[tuple[int, ...], float]:
    """P(the k slots drawn in this order) for successive sampling with p_g proportional to (g + 1) ** (a - 1)."""
    p = [(g + 1) ** (a - 1) for g in range(slots)]
    total = sum(p)
    p = [x / total for x in p]
    out = {}
    for order in permutations(range(slots), k):
        prob, left = 1.0, 1.0
        for g in order:
            prob *= p[g] / left
            left -= p[g]
        out[order] = prob
    return out


def assert_frequencies(counts: Counter, probs: dict, n: int) -> None:
    for outcome, prob in probs.items():
        sd = math.sqrt(prob * (1 - prob) / n)
        assert abs(counts[outcome] / n - prob) < 5 * sd + 1e-3, (outcome, counts[outcome] / n, prob)


@pytest.mark.parametrize("a", [0.01, 0.5])
def test_query_slots_are_zoologys_power_law(a):
    # input_seq_len 12 with 2 pairs leaves 4 slots: the 12 ordered pairs of slots, key 1's slot first, against the
    # exact successive-sampling probabilities; and those against numpy's choice(replace=False, p), which Zoology
    # calls, so the test also pins down what that call samples.
    task = get_token_task("mqar", vocab_size=13, num_kv_pairs=2, input_seq_len=12, power_a=a)
    n = 12_000
    ours = Counter(tuple(task.example(1, "train", i).meta["gaps"]) for i in range(n))
    probs = slot_probabilities(4, 2, a)
    assert_frequencies(ours, probs, n)
    p = np.array([(g + 1) ** (a - 1) for g in range(4)])
    legacy = np.random.RandomState(0)
    zoology = Counter(tuple(legacy.choice(4, size=2, replace=False, p=p / p.sum()).tolist()) for _ in range(n))
    assert_frequencies(zoology, probs, n)


def test_early_gaps_are_more_frequent_at_the_defaults():
    task = get_token_task("mqar")
    n = 3000
    gaps = [task.example(0, "test", i).meta["gaps"] for i in range(n)]
    first = Counter(g[0] for g in gaps)
    slots = 28
    p0 = 1 / sum((g + 1) ** -0.99 for g in range(slots))  # the first draw is p itself
    assert abs(first[0] / n - p0) < 5 * math.sqrt(p0 * (1 - p0) / n)
    every = Counter(g for row in gaps for g in row)
    assert every[0] > every[1] > every[2] > every[4] > every[8] > every[16]
    assert all(len(set(row)) == 4 and all(0 <= g < slots for g in row) for row in gaps)


def test_filler_is_uniform_over_the_whole_vocabulary():
    task = get_token_task("mqar", vocab_size=16, num_kv_pairs=2, input_seq_len=14)
    counts = Counter()
    for i in range(3000):
        ex = task.example(2, "train", i)
        counts.update(tok for t, tok in enumerate(ex.tokens) if t >= 4 and ex.targets[t] == IGNORE)
    n = sum(counts.values())
    assert set(counts) == set(range(16))  # keys, values and 0 all appear as filler
    assert all(abs(counts[v] / n - 1 / 16) < 5 * math.sqrt(1 / 16 * 15 / 16 / n) for v in range(16))


def test_keys_and_values_are_uniform_over_their_halves():
    task = get_token_task("mqar", vocab_size=20, num_kv_pairs=1, input_seq_len=4)
    pairs = Counter(task.example(0, "train", i).tokens[:2] for i in range(4000))
    assert {k for k, _ in pairs} == set(range(1, 10)) and {v for _, v in pairs} == set(range(10, 20))
    keys = Counter(k for k, _ in pairs.elements())
    assert all(abs(keys[k] / 4000 - 1 / 9) < 0.025 for k in range(1, 10))


@pytest.mark.parametrize("params, message", [
    ({"input_seq_len": 63}, "even"),
    ({"vocab_size": 64}, "larger than input_seq_len"),
    ({"num_kv_pairs": 17}, "at least 4 \\* num_kv_pairs"),
    ({"num_kv_pairs": 0}, "task.num_kv_pairs"),
    ({"power_a": 0}, "task.power_a"),
    ({"power_a": "nan"}, "task.power_a"),
    ({"num_kv_pair": 3}, "did you mean 'task.num_kv_pairs'"),
])
def test_bad_knobs_are_refused(params, message):
    with pytest.raises(BadInput, match=message):
        get_token_task("mqar", **params)


def test_the_name_is_registered():
    with pytest.raises(BadInput, match="did you mean 'mqar'"):
        get_token_task("mqr")
