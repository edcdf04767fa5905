"""Maze: the path between two nodes of a random tree (the maze task of Lee, Cai et al. 2025).

The difficulty knob is the number of hops between start and end (`min_len`..`max_len`); the tree
has `n_nodes` nodes whatever the hops. The prompt names start and end, then lists every node's
neighbours; the answer is the path, node by node::

    c>q#q:x,A-A:q,c-x:q-c:A=        ->   c>A>q

Each node is one character (one token), drawn without repetition from `labels`, as the paper's
tokenizer writes each node number 1-99 as one token. Nodes, and each node's neighbours, are listed
in random order, so neither the order nor the labels give the path away.

One maze has many listings, so the train/test split reads the problem, not the prompt (`problem_key`):
the start, the end and the set of edges, whatever order the listing writes nodes and neighbours in. A
hop count with fewer than 64 such problems (`count_mazes`: 2 nodes from 8 labels make 56) is refused.

The tree: the start-to-end path of `hops` edges first, then every other node hangs from a node
already placed, chosen uniformly. In a tree the path is unique, which makes exact match the right
score. `valid_answer` checks a proposed path against the prompt alone (it never reads the answer):
the self-improvement filter uses it.

meta: ``{"start", "end", "edges": [[u, v], ...], "path": str, "hops": int, "n_nodes": int}``.
"""

from __future__ import annotations

import math
import random
import string

from pydantic import field_validator, model_validator

from seqlab.tasks.base import MIN_HASHED_PROBLEMS, Example, Task, TaskConfig
from seqlab.tasks.registry import register

SEPARATORS = ">#:,-="
DEFAULT_LABELS = string.digits + string.ascii_lowercase + string.ascii_uppercase  # 62 nodes at most


class MazeConfig(TaskConfig):
    min_len: int = 1  # hops
    max_len: int = 9
    n_nodes: int = 30
    labels: str = DEFAULT_LABELS

    @field_validator("labels")
    @classmethod
    def _labels_ok(cls, v: str) -> str:
        if len(set(v)) != len(v):
            raise ValueError("labels must be distinct characters")
        bad = sorted(set(v) & set(SEPARATORS)) + sorted(ch for ch in v if ch.isspace())
        if bad:
            raise ValueError(f"labels may not contain {''.join(bad)!r}: the prompt uses them")
        return v

    @model_validator(mode="after")
    def _fits(self):
        if self.n_nodes > len(self.labels):
            raise ValueError(f"n_nodes ({self.n_nodes}) needs as many labels; labels has {len(self.labels)}")
        if self.max_len > self.n_nodes - 1:
            raise ValueError(f"a path of {self.max_len} hops needs {self.max_len + 1} nodes; n_nodes is {self.n_nodes}")
        hops = [self.max_len] if self.sampling == "fixed" else range(self.min_len, self.max_len + 1)
        fewest = min(hops, key=lambda h: count_mazes(len(self.labels), self.n_nodes, h))
        if (count := count_mazes(len(self.labels), self.n_nodes, fewest)) < MIN_HASHED_PROBLEMS:
            raise ValueError(f"only {count} distinct mazes of {self.n_nodes} nodes from {len(self.labels)} labels have "
                             f"{fewest} hops, too few to split into train and test ({MIN_HASHED_PROBLEMS} at least): "
                             f"use more labels or nodes")
        return self


def count_mazes(n_labels: int, n_nodes: int, hops: int) -> int:
    """Distinct problems (start, end, tree) with `hops` between start and end: the labels of the nodes, the
    path as an ordered sequence of hops + 1 nodes, and the trees that contain that path, (hops + 1) *
    n^(n - hops - 2) of them (the forests of n nodes rooted at the path's, by the generalised Cayley formula)."""
    n, h = n_nodes, hops
    trees = (h + 1) * n ** (n - h - 2) if h < n - 1 else 1
    return math.comb(n_labels, n) * math.perm(n, h + 1) * trees


def parse_adjacency(text: str) -> dict[str, list[str]]:
    """'q:x,A-A:q,c' -> {'q': ['x', 'A'], 'A': ['q', 'c']}."""
    out: dict[str, list[str]] = {}
    for item in text.split("-"):
        node, _, nbrs = item.partition(":")
        out[node] = nbrs.split(",") if nbrs else []
    return out


@register
class Maze(Task):
    """The path between two nodes of a random tree, node by node."""

    name = "maze"
    Config = MazeConfig
    slice_key = "hops"
    fixed_order = True

    def alphabet(self) -> str:
        return self.config.labels + ":,-"

    def symbols(self) -> str:
        return ">#="

    def space_size(self, lengths: tuple[int, ...]) -> int:
        # Far more trees than this exist; problem number k seeds the draw of one of them.
        return 2**64

    def problem(self, lengths: tuple[int, ...], k: int) -> Example:
        (hops,) = lengths
        n = self.config.n_nodes
        rng = random.Random(f"maze:{n}:{hops}:{k}")
        names = rng.sample(self.config.labels, n)  # names[i] labels node i; nodes 0..hops are the path
        nbrs: list[list[int]] = [[] for _ in range(n)]
        edges = [(i, i + 1) for i in range(hops)]
        edges += [(rng.randrange(v), v) for v in range(hops + 1, n)]
        for u, v in edges:
            nbrs[u].append(v)
            nbrs[v].append(u)
        order = list(range(n))
        rng.shuffle(order)
        items = []
        for v in order:
            listed = nbrs[v][:]
            rng.shuffle(listed)
            items.append(names[v] + ":" + ",".join(names[u] for u in listed))
        start, end = names[0], names[hops]
        path = ">".join(names[: hops + 1])
        meta = {"start": start, "end": end, "edges": [[names[u], names[v]] for u, v in edges],
                "path": path, "hops": hops, "n_nodes": n}
        return Example(fields=(start, end, "-".join(items)), ops=(">", "#", "="), answer=path, meta=meta)

    def problem_key(self, ex: Example) -> str:
        """Start, end and the tree's edges, each edge as its two labels in order and the edges sorted: the same
        for every listing of one maze (the order of the nodes and of each node's neighbours is noise)."""
        start, end, adjacency = ex.fields
        edges = sorted({"".join(sorted((a, b))) for a, nbrs in parse_adjacency(adjacency).items() for b in nbrs if b})
        return f"{start}>{end}#{','.join(edges)}"

    def valid_answer(self, ex: Example, output: str) -> bool:
        """Whether `output` walks from start to end along edges of the prompt's tree (no node twice).
        Reads the prompt only, never `ex.answer`."""
        start, end, adjacency = ex.fields
        graph = parse_adjacency(adjacency)
        path = output.split(">")
        if path[0] != start or path[-1] != end or len(set(path)) != len(path):
            return False
        return all(b in graph.get(a, ()) for a, b in zip(path, path[1:]))
