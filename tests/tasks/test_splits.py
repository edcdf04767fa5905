"""Train/test splits and the task registry.

- train and test never share a problem for a seed, and between them cover the whole space;
- example i is a pure function of (seed, split, i), whatever order examples are made in;
- different seeds give different streams;
- a problem space too small to split raises BadInput (after a bounded search, not a hang);
- unknown task names and config keys raise BadInput naming the nearest valid one.
"""

import itertools
import random

import pytest

from seqlab.core.errors import BadInput
from seqlab.tasks import TASKS, Task, get, names


def fields(task, seed, split, indices):
    return {task.example(seed, split, i).fields for i in indices}


@pytest.mark.parametrize("seed", [0, 1])
def test_addition_train_and_test_are_disjoint(seed):
    task = get("addition", sampling="pairs", min_len=1, max_len=2)
    train, test = fields(task, seed, "train", range(3000)), fields(task, seed, "test", range(3000))
    assert len(test) > 500 and len(train) > 1500  # the 1-digit pairs repeat; the rest mostly do not
    assert not train & test
    assert {(len(a), len(b)) for a, b in test} == {(1, 1), (1, 2), (2, 1), (2, 2)}


@pytest.mark.parametrize("seed", range(6))
def test_copy_splits_partition_the_problem_space(seed):
    # Strings over "ab" of length 1..3: 14 problems. With `pairs`, index i has length 1 + i % 3.
    task = get("copy", sampling="pairs", min_len=1, max_len=3, alphabet="ab")
    seen = {"train": set(), "test": set()}
    missing = {"train": set(), "test": set()}  # lengths for which a split has no problem
    for split, i in itertools.product(seen, range(300)):
        if 1 + i % 3 in missing[split]:
            continue  # known to fail, and each failure costs a bounded but long search
        try:
            seen[split].add(task.example(seed, split, i).fields[0])
        except BadInput:
            missing[split].add(1 + i % 3)
    assert not seen["train"] & seen["test"]
    space = {"".join(p) for n in (1, 2, 3) for p in itertools.product("ab", repeat=n)}
    assert seen["train"] | seen["test"] == space
    for split, other in (("train", "test"), ("test", "train")):
        for n in missing[split]:  # a split fails at a length only if the other split owns all of it
            assert {s for s in space if len(s) == n} <= seen[other]
            assert not any(len(s) == n for s in seen[split])


def test_example_is_a_pure_function_of_seed_split_index():
    keys = [(seed, split, i) for seed in (0, 7) for split in ("train", "test") for i in range(60)]
    for name, params in [("addition", dict(max_len=6)), ("sort", dict(min_len=3, max_len=6, alphabet="xyzw"))]:
        in_order = {k: get(name, **params).example(*k) for k in keys}
        shuffled = keys[:]
        random.Random(3).shuffle(shuffled)
        task = get(name, **params)
        assert {k: task.example(*k) for k in shuffled} == in_order
        assert task.examples(7, "test", 20, start=40) == [in_order[7, "test", i] for i in range(40, 60)]


def test_different_seeds_give_different_streams():
    task = get("addition", max_len=10)
    streams = [tuple(ex.fields for ex in task.examples(seed, "train", 30)) for seed in range(5)]
    assert len(set(streams)) == 5
    # Not merely shifted copies of each other either: few problems in common.
    assert len(set(streams[0]) & set(streams[1])) <= 1


def test_smallest_space_still_splits_into_two_disjoint_nonempty_parts():
    # "a" and "b" are the whole space: one goes to each split, for every seed.
    for seed in range(30):
        task = get("copy", alphabet="ab", sampling="fixed", max_len=1)
        got = {split: {task.example(seed, split, i).prompt for i in range(40)} for split in ("train", "test")}
        assert len(got["train"]) == len(got["test"]) == 1
        assert got["train"] | got["test"] == {"a=", "b="}


def test_small_space_test_share_is_one_eighth():
    task = get("addition", sampling="fixed", max_len=1)  # 100 problems
    test = {task.example(0, "test", i).prompt for i in range(2000)}
    train = {task.example(0, "train", i).prompt for i in range(2000)}
    assert len(test) == 12 and len(train) == 88 and not test & train


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_default_string_configs_have_test_examples_for_every_seed(name):
    task = get(name)
    for seed in range(100):  # with a plain hash split, about 3% of seeds had no one-letter test problem
        assert len(task.examples(seed, "test", 30)) == 30


def test_unknown_split_is_bad_input():
    with pytest.raises(BadInput, match="split"):
        get("addition").example(0, "valid", 0)


def test_registry_lists_the_tasks():
    assert names() == sorted(TASKS) and len(TASKS) > 0


@pytest.mark.parametrize("name", names())
def test_every_registered_task_keeps_the_contract(name):
    task = get(name)
    assert isinstance(task, Task) and type(task) is TASKS[name] and task.name == name
    assert task.describe() and "\n" not in task.describe()
    for split in ("train", "test"):
        ex = task.example(0, split, 0)
        assert ex.prompt.endswith("=") and ex.answer and get(name).example(0, split, 0) == ex


@pytest.mark.parametrize("typo, meant", [("additon", "addition"), ("multiplcation", "multiplication"),
                                         ("coppy", "copy"), ("revers", "reverse"), ("sortt", "sort")])
def test_unknown_task_suggests_the_nearest_name(typo, meant):
    with pytest.raises(BadInput, match=f"did you mean '{meant}'"):
        get(typo)


def test_unknown_task_without_a_near_name_lists_the_known_ones():
    with pytest.raises(BadInput) as e:
        get("nope")
    assert str(e.value) == f"unknown task 'nope' (known: {', '.join(sorted(TASKS))})"


@pytest.mark.parametrize("name, key, meant", [("addition", "max_lne", "max_len"), ("copy", "alphabt", "alphabet"),
                                              ("sort", "samplng", "sampling"), ("reverse", "minlen", "min_len")])
def test_unknown_config_key_names_the_nearest_valid_key(name, key, meant):
    with pytest.raises(BadInput, match=f"unknown key 'task.{key}'.*did you mean 'task.{meant}'"):
        get(name, **{key: 3})


@pytest.mark.parametrize("params", [dict(sampling="random"), dict(min_len=0), dict(min_len=5, max_len=4),
                                    dict(alphabet="a"), dict(alphabet="aab"), dict(alphabet="a=b"), dict(alphabet="a b")])
def test_invalid_config_values_are_bad_input(params):
    with pytest.raises(BadInput):
        get("copy", **params)


def test_example_at_given_operand_lengths():
    task = get("multiplication", max_len=3)
    for i in range(20):
        ex = task.example(4, "train", i, lengths=(2, 7))
        assert (ex.meta["n_digits_a"], ex.meta["n_digits_b"]) == (2, 7)
        assert task.example(4, "train", i, lengths=(2, 7)) == ex
        assert task.example(4, "test", i, lengths=(2, 7)) != ex
    with pytest.raises(BadInput, match="2 positive operand"):
        task.example(4, "train", 0, lengths=(3,))


# -- a knob declared as text takes an integer as its text (issue #18) --------------------------------------
@pytest.mark.parametrize("name, key, typed, text", [("copy", "alphabet", "12", "12"), ("sort", "alphabet", "907", "907"),
                                                     ("maze", "labels", "123456789", "123456789")])
def test_a_text_knob_given_as_a_number_on_the_command_line_is_its_text(name, key, typed, text):
    from seqlab.core.configs import parse_value

    params = {key: parse_value(typed)}  # as `seqlab sample copy alphabet=12` reads it: the number 12
    if name == "maze":
        params.update(n_nodes=9, max_len=3)
    task = get(name, **params)
    assert getattr(task.config, key) == text
    assert set(task.example(0, "train", 0).prompt) <= set(text + task.symbols() + ":,-")


def test_text_knobs_of_token_tasks_take_integers_too_but_not_booleans():
    from seqlab.tasks.token_base import get_token_task

    with pytest.raises(BadInput, match="unknown map '12'"):  # read as the text "12", then refused as a map
        get_token_task("icl-map", maps=12)
    with pytest.raises(BadInput, match="task.alphabet"):
        get("copy", alphabet=True)
