"""Train and test never share a problem, for every registered task (issue #18).

- a maze is one problem however its listing is ordered: the split reads the tree, not the prompt;
- every task of every registry (character tasks, token tasks, function classes: a task added later is
  covered, and fails here until it states its smallest settings) shares no canonical problem between train
  and test at its smallest settings, with the canonical problem read back by the test itself;
- a setting with too few problems to split is refused in one line, or listed and ranked so that it splits;
- the split keeps every example a pure function of (seed, split, i).
"""

import itertools

import numpy as np
import pytest

from seqlab.core.errors import BadInput
from seqlab.tasks import TASKS, get
from seqlab.tasks.function_classes import FUNCTIONS, get_function
from seqlab.tasks.token_base import TOKEN_TASKS, get_token_task

# The smallest settings of every task: where a split is hardest. More than one where a knob changes how the
# split is made (a listed space, a hashed one, independent streams).
SMALLEST = {
    "addition": [dict(sampling="fixed", max_len=1), dict(sampling="pairs", min_len=1, max_len=2)],
    "multiplication": [dict(sampling="fixed", max_len=1), dict(sampling="pairs", min_len=1, max_len=2)],
    "multiplication-steps": [dict(sampling="fixed", max_len=1), dict(sampling="pairs", min_len=1, max_len=2)],
    "copy": [dict(alphabet="ab", sampling="fixed", max_len=1), dict(alphabet="ab", sampling="pairs", max_len=3)],
    "reverse": [dict(alphabet="ab", sampling="fixed", max_len=1), dict(alphabet="ab", sampling="pairs", max_len=3)],
    "sort": [dict(alphabet="ab", sampling="fixed", max_len=1), dict(alphabet="ab", sampling="pairs", max_len=3)],
    "maze": [dict(n_nodes=2, max_len=1), dict(n_nodes=3, max_len=2, labels="abcdef"),
             dict(n_nodes=4, sampling="pairs", min_len=1, max_len=3, labels="abcde")],
    "count3": [dict(length=2, seed_size=1, seed_max=2), dict(length=8, seed_size=3, seed_max=8),
               dict(length=16, seed_size=5, seed_max=16)],
    "mqar": [dict(vocab_size=9, input_seq_len=4, num_kv_pairs=1),
             dict(vocab_size=17, input_seq_len=16, num_kv_pairs=2, random_non_queries=False)],
    # The fewest symbols at the default states and concentration: a peaked language, split by hash.
    "hmm": [dict(n_symbols=2, length=16)],
    "kv-retrieval": [dict(num_dicts=1, gold_dict_size=1, dict_size_min=0, dict_size_max=0, key_digits_min=1,
                          key_digits_max=1, value_digits_min=1, value_digits_max=1)],
    # A mixture splits as its components do: one of each kind of split (listed, hashed), and one task twice.
    "token-mixture": [dict(components=[dict(name="count3", length=2, seed_size=1, seed_max=2),
                                       dict(name="mqar", vocab_size=9, input_seq_len=4, num_kv_pairs=1)]),
                      dict(components=[dict(name="icl-map", n_demos=0, maps="add1", n_symbols=2, word_len=1),
                                       dict(name="count3", length=8, seed_size=3, seed_max=8, weight=3),
                                       dict(name="count3", length=16, seed_size=5, seed_max=16)])],
    "icl-map": [dict(n_demos=0, maps="add1", n_symbols=2, word_len=1),
                dict(n_demos=0, maps="copy0,copy1,add1", n_symbols=3, word_len=2),
                dict(n_demos=0), dict(n_demos=1, maps="add1,reverse", n_symbols=3, word_len=2)],
    "linear-regression": [dict(n_dims=1, n_points=1)],
    "sparse-linear-regression": [dict(n_dims=1, n_points=1, sparsity=1)],
    "noisy-linear-regression": [dict(n_dims=1, n_points=1)],
    "linear-classification": [dict(n_dims=1, n_points=1)],
    "logistic-regression": [dict(n_dims=1, n_points=1)],
    "quadratic-regression": [dict(n_dims=1, n_points=1)],
    "relu-2nn-regression": [dict(n_dims=1, n_points=1, hidden=1)],
    "decision-tree": [dict(n_dims=1, n_points=1, depth=1)],
    "sparse-parity": [dict(n_dims=1, k=1, n_points=1), dict(n_dims=2, k=1, n_points=3), dict(n_dims=13, k=2, n_points=1)],
    "many-outlier-regression": [dict(n_dims=1, n_points=1), dict(n_dims=1, n_points=3)],
    "orthogonal-outlier-regression": [dict(n_dims=1, n_points=1), dict(n_dims=2, n_points=2)],
    "vector-mqar": [dict(n_dims=2, n_pairs=1), dict(n_dims=2, n_pairs=1, fresh_queries=False, n_points=4)],
}
N_TRAIN, N_TEST = 2000, 500


def every_task() -> list[tuple[str, str]]:
    return ([("character", n) for n in TASKS] + [("token", n) for n in TOKEN_TASKS]
            + [("function", n) for n in FUNCTIONS])


def maze_problem(prompt: str):
    """A maze read back from its prompt: (start, end, its edges as a set), whatever the listing's order."""
    head, body = prompt[:-1].split("#")
    start, end = head.split(">")
    edges = set()
    for item in body.split("-"):
        node, nbrs = item.split(":")
        edges |= {frozenset((node, v)) for v in nbrs.split(",") if v}
    return start, end, frozenset(edges)


def problems(kind: str, name: str, params: dict, seed: int, split: str, n: int) -> set:
    """The canonical problems of the first n examples of a split, read by the test, not by the task: a
    character task's operands (a maze's tree), a token task's tokens and targets, a function class's xs and ys
    as a model reads them (a prompt whose points are all unscored asks nothing, and is left out)."""
    if kind == "character":
        task = get(name, **params)
        exs = [task.example(seed, split, i) for i in range(n)]
        return {maze_problem(ex.prompt) if name == "maze" else ex.fields for ex in exs}
    if kind == "token":
        task = get_token_task(name, **params)
        return {(ex.tokens, ex.targets) for ex in (task.example(seed, split, i) for i in range(n))}
    fc = get_function(name, **params)
    p = fc.prompts(seed, split, 0, n)
    scored = getattr(p, "scored", np.ones(p.ys.shape, dtype=bool))
    return {(x.tobytes(), y.tobytes()) for x, y, s in zip(p.xs, p.ys, scored) if s.any()}


@pytest.mark.parametrize("kind, name", every_task())
def test_every_task_at_its_smallest_settings_shares_no_problem_between_train_and_test(kind, name):
    assert name in SMALLEST, f"{kind} task '{name}': add its smallest settings to SMALLEST"
    for params, seed in itertools.product(SMALLEST[name], (0, 1)):
        train = problems(kind, name, params, seed, "train", N_TRAIN)
        test = problems(kind, name, params, seed, "test", N_TEST)
        assert train and test, (params, seed)
        shared = train & test
        assert not shared, f"{name} {params} seed {seed}: {len(shared)} of {len(test)} test problems also in train"


@pytest.mark.parametrize("n_nodes", [2, 3, 4])
def test_a_maze_is_in_one_split_whatever_its_listing(n_nodes):
    # At 2 nodes the old split, by prompt, put 802 of 907 distinct test mazes in train too.
    task = get("maze", n_nodes=n_nodes, sampling="fixed", max_len=1)
    train = {maze_problem(ex.prompt) for ex in task.examples(0, "train", 4000)}
    test = {maze_problem(ex.prompt) for ex in task.examples(0, "test", 1000)}
    assert len(test) > 100 and not train & test


def test_one_maze_listed_two_ways_has_one_key():
    task = get("maze", n_nodes=6, max_len=3)
    ex = task.example(0, "train", 0)
    start, end, listing = ex.fields
    items = [item.split(":") for item in listing.split("-")]
    shuffled = "-".join(f"{v}:{','.join(reversed(nbrs.split(',')))}" for v, nbrs in reversed(items))
    assert shuffled != listing
    other = type(ex)(fields=(start, end, shuffled), ops=ex.ops, answer=ex.answer)
    assert task.problem_key(other) == task.problem_key(ex)
    assert task.valid_answer(other, ex.answer)


def test_other_character_tasks_keep_their_split():
    # Their problems are written one way only: the key is the operands, hashed as before issue #18.
    from seqlab.tasks.base import split_hash

    task = get("addition", max_len=6)
    ex = task.example(3, "test", 5)
    assert task.problem_key(ex) == "|".join(ex.fields)
    assert split_hash(3, task.problem_key(ex)) < 2**64 / 8


# -- settings too small to split -----------------------------------------------------------------------
@pytest.mark.parametrize("name, params, message", [
    ("count3", dict(length=4, seed_size=2, seed_max=1), "only 1 distinct sequence, too few to split"),
    ("mqar", dict(vocab_size=5, input_seq_len=4, num_kv_pairs=1), "only 15 distinct sequences, too few to split"),
    ("icl-map", dict(n_demos=1, maps="add1", n_symbols=2, word_len=1), "only 4 distinct prompts, too few to split"),
    ("hmm", dict(n_symbols=2, length=5), "only 32 distinct sequences, too few to split"),
])
def test_a_token_setting_with_too_few_problems_is_refused_in_one_line(name, params, message):
    with pytest.raises(BadInput, match=message) as e:
        get_token_task(name, **params)
    assert "\n" not in str(e.value) and ("(64 at least)" in str(e.value) or "(2 at least)" in str(e.value))


def test_vector_mqar_in_one_dimension_is_refused():
    with pytest.raises(BadInput, match="n_dims >= 2.*too few to split"):
        get_function("vector-mqar", n_dims=1)


@pytest.mark.parametrize("name, params, size", [
    ("count3", dict(length=3, seed_size=1, seed_max=2), 2),
    ("icl-map", dict(n_demos=0, maps="add1", n_symbols=2, word_len=1), 2),
])
def test_a_listed_space_splits_however_small(name, params, size):
    # Listed and ranked as the character tasks' small spaces: one problem in test, the rest in train.
    task = get_token_task(name, **params)
    assert task.small_space() == size
    for seed in range(20):
        train = {task.example(seed, "train", i).tokens for i in range(40)}
        test = {task.example(seed, "test", i).tokens for i in range(40)}
        assert len(test) == 1 and len(train) == size - 1 and not train & test


def test_sparse_parity_in_one_dimension_splits_by_its_first_input():
    fc = get_function("sparse-parity", n_dims=1, k=1, n_points=4)
    for seed in range(10):
        first = {split: set(fc.prompts(seed, split, 0, 50).xs[:, 0, 0].tolist()) for split in ("train", "test")}
        assert first["train"] | first["test"] == {-1.0, 1.0} and len(first["train"]) == len(first["test"]) == 1


# -- purity ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("count3", dict(length=8, seed_size=3, seed_max=8)),  # listed
    ("count3", dict(length=10, seed_size=5, seed_max=8)),  # hashed (32768 sequences)
    ("icl-map", dict(n_demos=2, n_symbols=4, word_len=3)),  # hashed
    ("mqar", {}),  # independent streams
])
def test_a_split_token_example_is_a_pure_function_of_seed_split_index(name, params):
    keys = [(seed, split, i) for seed in (0, 5) for split in ("train", "test") for i in range(30)]
    first = [get_token_task(name, **params).example(*k) for k in keys]
    task = get_token_task(name, **params)
    assert [task.example(*k) for k in reversed(keys)] == first[::-1]


def test_independent_streams_are_the_streams_they_were():
    # At 64 bits or more a token task draws example i from the stream (task, seed, split, i), as before the split.
    task = get_token_task("mqar")
    assert task.problem_bits() >= 64
    assert task.example(4, "test", 9) == task.draw(task._rng(4, "test", 9))
