"""Key-value retrieval (Xiong et al. 2024): the token sequence parsed back into dictionaries and a query by a
small reader written here, the query looked up in every dictionary (exactly one key must match: equal in the
simple variant, holding every queried subkey in multi-subkey), and the answer written out again and compared
with the targets; sizes, digit counts and the gold key's uniqueness checked against the knobs."""

import math
import random
from collections import Counter

import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.token_base import IGNORE, get_token_task
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where


class Reader:
    """Reads `Dict [ d ] { key : value , ... } <nl>` lines, then `Q query =` and the answer."""

    def __init__(self, names: list[str]):
        self.names, self.pos = names, 0

    def peek(self) -> str:
        return self.names[self.pos]

    def expect(self, name: str) -> None:
        assert self.peek() == name, (self.pos, self.peek(), name)
        self.pos += 1

    def number(self) -> str:
        start = self.pos
        while self.peek() in "0123456789":
            self.pos += 1
        text = "".join(self.names[start:self.pos])
        assert text and text[0] != "0", (start, text)  # a positive integer without leading zeros
        return text

    def numbers(self) -> list[str]:
        out = [self.number()]
        while self.peek() == ",":
            self.expect(",")
            out.append(self.number())
        return out

    def key(self):
        if self.peek() != "(":
            return self.number()
        self.expect("(")
        out = tuple(self.numbers())
        self.expect(")")
        return out

    def read(self):
        dicts = []
        while self.peek() == "Dict":
            self.expect("Dict")
            self.expect("[")
            assert int(self.number()) == len(dicts) + 1  # dictionaries are named 1, 2, ... in order
            self.expect("]")
            self.expect("{")
            pairs = []
            while self.peek() != "}":
                if pairs:
                    self.expect(",")
                key = self.key()
                self.expect(":")
                pairs.append((key, self.number()))
            self.expect("}")
            self.expect("<nl>")
            dicts.append(pairs)
        self.expect("Q")
        query = self.numbers()
        self.expect("=")
        return dicts, query, self.pos - 1


def as_int(key):
    return int(key) if isinstance(key, str) else [int(s) for s in key]


def knobs(r: random.Random) -> dict:
    if r.random() < 0.04:
        return {}  # the paper's 85 dictionaries
    lo = r.randint(0, 4)
    kd = r.randint(1, 4)
    cfg = {"num_dicts": r.choice([1, 2, r.randint(1, 12), r.randint(1, 40)]), "gold_dict_size": r.randint(1, 5),
           "dict_size_min": lo, "dict_size_max": r.randint(lo, 6),
           "key_digits_min": kd, "key_digits_max": r.randint(kd, kd + 2),
           "value_digits_min": (vd := r.randint(1, 4)), "value_digits_max": r.randint(vd, vd + 2)}
    if r.random() < 0.3:
        cfg["gold_dict"] = r.randint(1, cfg["num_dicts"])
    if r.random() < 0.5:
        common = r.randint(0, 2)
        sk = r.randint(common + 1, common + 3)
        cfg |= {"variant": "multi-subkey", "common_subkeys": common, "gold_subkeys": r.randint(common + 1, common + 3),
                "subkeys_min": sk, "subkeys_max": r.randint(sk, sk + 2),
                "p_share": r.choice([0.0, 1.0, 0.5, r.random()]), "p_share_each": r.choice([0.0, 1.0, r.random()]),
                "shuffle_query": r.random() < 0.7}
    return cfg


def matches(key, query: list[str], multi: bool) -> bool:
    return set(query) <= set(key) if multi else [key] == query


@pytest.mark.slow
@settings(max_examples=1800, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_the_answer_is_the_only_key_that_matches_the_query(number):
    r = random.Random(number)
    cfg = knobs(r)
    seed, split, i = where(r)
    note(f"cfg={cfg} at {(seed, split, i)}")
    task = task_of("kv-retrieval", cfg)
    c = task.config
    multi = c.variant == "multi-subkey"
    ex = task.example(seed, split, i)
    scored = check_contract(task, ex)
    names = [task.token_name(t) for t in ex.tokens]
    dicts, query, eq = Reader(names).read()
    assert len(dicts) == c.num_dicts
    found = [(d + 1, key, value) for d, pairs in enumerate(dicts) for key, value in pairs if matches(key, query, multi)]
    assert len(found) == 1, found
    gold_dict, gold_key, gold_value = found[0]
    answer = [*gold_value, "[", *str(gold_dict), "]", "<eos>"]
    assert names[eq + 1:] == answer  # the answer follows the "=" and ends the sequence
    assert scored == list(range(eq, len(names) - 1))
    assert [task.token_name(ex.targets[t]) for t in scored] == answer
    assert all(ex.targets[t] == ex.tokens[t + 1] for t in scored)

    # The knobs: sizes, digit counts, the gold pair's uniqueness.
    if c.gold_dict is not None:
        assert gold_dict == c.gold_dict
    for d, pairs in enumerate(dicts, start=1):
        if d == gold_dict:
            assert len(pairs) == c.gold_dict_size
        else:
            assert c.dict_size_min <= len(pairs) <= c.dict_size_max
        keys = [frozenset(k) if multi else k for k, _ in pairs]
        assert len(set(keys)) == len(keys)  # distinct keys within a dictionary
    pairs = [pair for ds in dicts for pair in ds]
    assert [value for _, value in pairs].count(gold_value) == 1
    assert all(c.value_digits_min <= len(value) <= c.value_digits_max for _, value in pairs)
    if multi:
        assert len(gold_key) == c.gold_subkeys and sorted(query) == sorted(gold_key)
        if not c.shuffle_query:
            assert query == list(gold_key)
        for key, _ in pairs:
            assert len(set(key)) == len(key) and all(c.key_digits_min <= len(s) <= c.key_digits_max for s in key)
            assert key is gold_key or c.subkeys_min <= len(key) <= c.subkeys_max
        common = [str(s) for s in ex.meta["common_subkeys"]]
        assert len(common) == c.common_subkeys and set(common) <= set(gold_key)
    else:
        assert [key for key, _ in pairs].count(gold_key) == 1
        assert all(c.key_digits_min <= len(key) <= c.key_digits_max for key, _ in pairs)

    m = ex.meta
    assert m["dictionaries"] == [[[as_int(k), int(v)] for k, v in ds] for ds in dicts]
    assert m["gold_key"] == as_int(gold_key) and m["query"] == as_int(query if multi else query[0])
    assert m["gold_value"] == int(gold_value) and m["gold_dict"] == gold_dict
    assert m["answer"] == {"value": int(gold_value), "dictionary": gold_dict}


def test_defaults_are_the_papers_simple_dictionaries():
    c = get_token_task("kv-retrieval").config
    assert (c.variant, c.num_dicts, c.gold_dict_size, c.dict_size_min, c.dict_size_max) == ("simple", 85, 3, 3, 4)
    assert (c.key_digits_min, c.key_digits_max, c.value_digits_min, c.value_digits_max, c.gold_dict) == (3, 4, 3, 4, None)


def test_a_sequence_reads_like_the_papers_prompt():
    task = get_token_task("kv-retrieval", num_dicts=2, gold_dict_size=1, dict_size_min=1, dict_size_max=1,
                             key_digits_min=2, key_digits_max=2, value_digits_min=2, value_digits_max=2, gold_dict=2)
    prompt, target = task.render(task.example(0, "train", 0))
    shape = "".join("9" if ch.isdigit() else ch for ch in prompt)
    assert shape == "Dict [ 9 ] { 9 9 : 9 9 } <nl> Dict [ 9 ] { 9 9 : 9 9 } <nl> Q 9 9 = 9 9 [ 9 ] <eos>"
    assert prompt.startswith("Dict [ 1 ] {") and "<nl> Dict [ 2 ] {" in prompt and prompt.endswith("[ 2 ] <eos>")
    assert "".join("9" if ch.isdigit() else ch for ch in target) == "9 9 [ 9 ] <eos>" and target.endswith("[ 2 ] <eos>")


@pytest.mark.parametrize("variant", ["simple", "multi-subkey"])
def test_max_length_is_reached_when_every_size_is_fixed(variant):
    fixed = {"num_dicts": 7, "gold_dict_size": 2, "dict_size_min": 3, "dict_size_max": 3, "key_digits_min": 3,
             "key_digits_max": 3, "value_digits_min": 4, "value_digits_max": 4, "variant": variant,
             "gold_subkeys": 3, "subkeys_min": 3, "subkeys_max": 3}
    task = get_token_task("kv-retrieval", **fixed)
    lengths = {len(task.example(0, "train", i).tokens) for i in range(20)}
    assert max(lengths) <= task.max_length  # the gold dictionary is smaller than the bound allows for
    wide = get_token_task("kv-retrieval", **(fixed | {"gold_dict_size": 3}))
    assert {len(wide.example(0, "train", i).tokens) for i in range(20)} == {wide.max_length}


def test_gold_dictionary_and_gold_slot_are_uniform():
    task = get_token_task("kv-retrieval", num_dicts=4, gold_dict_size=3, key_digits_min=2, key_digits_max=2)
    n = 4000
    exs = [task.example(1, "train", i) for i in range(n)]
    where_gold = Counter(ex.meta["gold_dict"] for ex in exs)
    slot = Counter([k for k, _ in ex.meta["dictionaries"][ex.meta["gold_dict"] - 1]].index(ex.meta["gold_key"])
                   for ex in exs)
    assert all(abs(where_gold[d] / n - 1 / 4) < 5 * math.sqrt(3 / 16 / n) for d in range(1, 5))
    assert all(abs(slot[s] / n - 1 / 3) < 5 * math.sqrt(2 / 9 / n) for s in range(3))


def test_digit_counts_are_uniform_before_the_number():
    # build_dicts draws the digit count first: half the keys of 1-2 digits have one digit (not 9 in 99).
    task = get_token_task("kv-retrieval", num_dicts=10, key_digits_min=1, key_digits_max=2,
                             value_digits_min=1, value_digits_max=2)
    keys = [k for i in range(300) for ds in task.example(2, "test", i).meta["dictionaries"] for k, _ in ds]
    share = sum(k < 10 for k in keys) / len(keys)
    assert abs(share - 0.5) < 0.04


def test_common_subkeys_are_shared_as_the_knobs_say():
    base = {"variant": "multi-subkey", "num_dicts": 10, "common_subkeys": 2, "gold_subkeys": 3}
    always = get_token_task("kv-retrieval", **base, p_share=1.0, p_share_each=1.0)
    never = get_token_task("kv-retrieval", **base, p_share=0.0)
    for task, expect in ((always, 1.0), (never, 0.0)):
        shares = []
        for i in range(100):
            m = task.example(0, "train", i).meta
            common = set(m["common_subkeys"])
            shares += [common <= set(k) for ds in m["dictionaries"] for k, _ in ds if k != m["gold_key"]]
        assert abs(sum(shares) / len(shares) - expect) < 0.02


def test_purity():
    check_purity("kv-retrieval", {"num_dicts": 6})
    check_purity("kv-retrieval", {"num_dicts": 6, "variant": "multi-subkey"})


@pytest.mark.parametrize("params, message", [
    ({"gold_dict": 86}, "gold_dict \\(86\\) must be at most num_dicts"),
    ({"gold_dict": 0}, "task.gold_dict"),
    ({"dict_size_min": 5}, "dict_size_min \\(5\\) is above dict_size_max"),
    ({"key_digits_min": 5}, "key_digits_min \\(5\\) is above key_digits_max"),
    ({"key_digits_min": 1, "key_digits_max": 1, "dict_size_max": 9}, "fewer than the 9 distinct keys"),
    ({"variant": "multi-subkey", "common_subkeys": 3}, "must both exceed common_subkeys"),
    ({"variant": "multi-subkey", "subkeys_min": 2, "common_subkeys": 2}, "must both exceed common_subkeys"),
    ({"variant": "multi-subkey", "key_digits_min": 1, "key_digits_max": 1, "subkeys_min": 9, "subkeys_max": 9},
     "cannot make"),
    ({"variant": "multi"}, "task.variant"),
    ({"p_share": 1.5}, "task.p_share"),
    ({"num_dict": 3}, "did you mean 'task.num_dicts'"),
])
def test_bad_knobs_are_refused(params, message):
    with pytest.raises(BadInput, match=message):
        get_token_task("kv-retrieval", **params)


def test_targets_are_ignored_before_the_answer():
    ex = get_token_task("kv-retrieval", num_dicts=3).example(0, "test", 9)
    eq = ex.tokens.index(get_token_task("kv-retrieval").vocab_size - 2)  # "=" is the second-to-last symbol
    assert set(ex.targets[:eq]) == {IGNORE} and ex.targets[-1] == IGNORE
