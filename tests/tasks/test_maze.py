"""Maze: every example checked by an independent computation. The tree is rebuilt from the prompt
alone, checked to be a tree on the right number of distinct labels, and the path is found by
breadth-first search from the start; it must equal the answer. `valid_answer` is checked against
the same search, on the true path and on broken ones.

Hypothesis draws one 64-bit case number per example and a seeded PRNG turns it into the knobs
(seed, split, index, sampling mode, hops, nodes, labels).
"""

import functools
import itertools
import math
import random
import string
from collections import Counter, deque

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from seqlab.core.errors import BadInput
from seqlab.tasks import get
from tests.tasks.checks_common import assert_repeated_calls_agree


def bfs_path(adjacency: dict[str, list[str]], start: str, end: str) -> list[str] | None:
    parent = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for u in adjacency[v]:
            if u not in parent:
                parent[u] = v
                queue.append(u)
    if end not in parent:
        return None
    path = [end]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]


def read_prompt(prompt: str) -> tuple[str, str, dict[str, list[str]]]:
    """(start, end, adjacency) read back from the prompt text, without the task's own parser."""
    assert prompt.endswith("=") and prompt.count("=") == 1 and prompt.count("#") == 1
    head, body = prompt[:-1].split("#")
    start, end = head.split(">")
    adjacency = {}
    for item in body.split("-"):
        node, nbrs = item.split(":")
        assert node not in adjacency  # each node listed once
        adjacency[node] = nbrs.split(",") if nbrs else []
    return start, end, adjacency


def case(number: int) -> dict:
    r = random.Random(number)
    labels = r.choice([None, "".join(r.sample(string.ascii_letters, r.randint(2, 52))), "xy"])
    n_labels = len(labels) if labels else 62
    n_nodes = r.randint(2, n_labels)
    lo, hi = r.randint(1, n_nodes - 1), r.randint(1, n_nodes - 1)
    sampling = r.choice(["independent", "pairs", "fixed"])
    cfg = dict(sampling=sampling, min_len=min(lo, hi), max_len=max(lo, hi), n_nodes=n_nodes)
    if labels:
        cfg["labels"] = labels
    index = r.randrange(r.choice([50, 10**9]))
    return dict(cfg=cfg, seed=r.getrandbits(32), split=r.choice(["train", "test"]), index=index)


def trees(n: int):
    """Every labelled tree on nodes 0 .. n-1 (n >= 2), as adjacency lists, from its Prüfer sequence."""
    for code in itertools.product(range(n), repeat=n - 2):
        degree = [1] * n
        for v in code:
            degree[v] += 1
        adjacency = {v: [] for v in range(n)}
        for v in code:
            leaf = min(u for u in range(n) if degree[u] == 1)
            adjacency[leaf].append(v)
            adjacency[v].append(leaf)
            degree[leaf] -= 1
            degree[v] -= 1
        u, w = [v for v in range(n) if degree[v] == 1]
        adjacency[u].append(w)
        adjacency[w].append(u)
        yield adjacency


@functools.cache
def mazes_by_enumeration(n_labels: int, n_nodes: int, hops: int) -> int:
    """(start, end, tree) with `hops` between start and end, counted tree by tree on n_nodes nodes, times the
    ways to pick the labels (which node gets which label is the tree's numbering)."""
    per_set = sum(1 for adj in trees(n_nodes) for s in adj for e in adj
                  if s != e and len(bfs_path({str(k): [str(v) for v in vs] for k, vs in adj.items()}, str(s), str(e))) - 1 == hops)
    return math.comb(n_labels, n_nodes) * per_set


def too_few_mazes(cfg: dict) -> bool:
    """Whether some hop count of the config has fewer than 64 mazes (refused). From 6 nodes on there are
    at least 6! orders of the labels on the longest path alone."""
    n, n_labels = cfg["n_nodes"], len(cfg.get("labels", string.digits + string.ascii_letters))
    if n > 5:
        return False
    hops = [cfg["max_len"]] if cfg["sampling"] == "fixed" else range(cfg["min_len"], cfg["max_len"] + 1)
    return any(mazes_by_enumeration(n_labels, n, h) < 64 for h in hops)


@functools.cache
def shared_task(cfg_items: tuple):
    return get("maze", **dict(cfg_items))


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, derandomize=True)
@given(st.integers(0, 2**64 - 1).map(case))
def test_every_example_is_answered_correctly(c):
    note(f"knobs: {c}")
    cfg = c["cfg"]
    if too_few_mazes(cfg):
        with pytest.raises(BadInput, match="too few to split into train and test"):
            get("maze", **cfg)
        return
    task = shared_task(tuple(sorted(cfg.items())))
    try:
        ex = task.example(c["seed"], c["split"], c["index"])
    except BadInput as e:  # 64 mazes or a few more: a split may still come out empty, 1 seed in 5000
        assert cfg["n_nodes"] <= 4 and "too small" in str(e)
        return
    start, end, adjacency = read_prompt(ex.prompt)
    labels = cfg.get("labels", string.digits + string.ascii_letters)

    # A tree on n_nodes distinct labels: n - 1 edges, symmetric, connected.
    assert len(adjacency) == cfg["n_nodes"] and set(adjacency) <= set(labels)
    edges = {frozenset((a, b)) for a, nbrs in adjacency.items() for b in nbrs}
    assert all(a in adjacency[b] for a, nbrs in adjacency.items() for b in nbrs)
    assert sum(len(n) for n in adjacency.values()) == 2 * len(edges) == 2 * (cfg["n_nodes"] - 1)
    assert all(bfs_path(adjacency, start, v) is not None for v in adjacency)

    path = bfs_path(adjacency, start, end)
    hops = len(path) - 1
    assert ex.answer == ex.meta["path"] == ">".join(path)
    assert ex.meta["hops"] == hops and ex.meta["start"] == start and ex.meta["end"] == end
    if cfg["sampling"] == "fixed":
        assert hops == cfg["max_len"]
    else:
        assert cfg["min_len"] <= hops <= cfg["max_len"]
    assert {frozenset(e) for e in ex.meta["edges"]} == edges

    # valid_answer agrees with the search: the path passes; a path with a node dropped or changed fails.
    assert task.valid_answer(ex, ex.answer)
    if hops >= 2:
        assert not task.valid_answer(ex, ">".join(path[:1] + path[2:]))
    stranger = next((v for v in adjacency if v not in path), None)
    if stranger is not None:
        assert not task.valid_answer(ex, ">".join(path[:-1] + [stranger]))

    assert get("maze", **cfg).example(c["seed"], c["split"], c["index"]) == ex


@pytest.mark.parametrize("split", ["train", "test"])
def test_pairs_visits_every_hop_count_equally_often(split):
    task = get("maze", sampling="pairs", min_len=3, max_len=9, n_nodes=20)
    counts = Counter(task.example(2, split, i).meta["hops"] for i in range(7 * 4))
    assert counts == {h: 4 for h in range(3, 10)}


def test_repeated_calls_agree():
    assert_repeated_calls_agree("maze")


@pytest.mark.parametrize("n_labels, n_nodes", [(2, 2), (5, 2), (3, 3), (4, 3), (6, 4), (5, 5), (7, 5)])
def test_maze_counts_agree_with_enumeration(n_labels, n_nodes):
    from seqlab.tasks.maze import count_mazes

    for hops in range(1, n_nodes):
        assert count_mazes(n_labels, n_nodes, hops) == mazes_by_enumeration(n_labels, n_nodes, hops)


def test_a_maze_with_too_few_problems_is_refused_in_one_line():
    # 2 nodes from 8 labels: 56 (start, end) pairs; from 9 labels, 72 split.
    with pytest.raises(BadInput, match="only 56 distinct mazes of 2 nodes from 8 labels have 1 hops, too few") as e:
        get("maze", labels="abcdefgh", n_nodes=2, max_len=1)
    assert "\n" not in str(e.value)
    task = get("maze", labels="abcdefghi", n_nodes=2, max_len=1)
    assert task.example(0, "test", 0).prompt and task.example(0, "train", 0).prompt


def test_bad_maze_configs_are_refused_with_a_reason():
    with pytest.raises(BadInput, match="needs 11 nodes"):
        get("maze", max_len=10, n_nodes=10)
    with pytest.raises(BadInput, match="labels"):
        get("maze", labels="ab>c", n_nodes=3, max_len=2)
    with pytest.raises(BadInput, match="n_nodes"):
        get("maze", labels="abc", n_nodes=5, max_len=2)
