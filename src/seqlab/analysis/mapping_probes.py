"""Probes of a decoder trained on `icl-map` prompts ("x → y , x → y , ... , x_q → y_q , <eos>").

  map_prompts         tokens, targets and meta of prompts of one configuration
  task_vector_of      the task vector of one map: states after every block at the query's "→", averaged
  injected_accuracy   zero-shot queries "x_q →" with a vector written over one block's output at the "→":
                      the share answered exactly (teacher-forced argmax of every answer token)
  answer_probs        P(answer string of each map) for the same prompts, the answer's tokens and the ","
                      that ends it scored by teacher forcing (the product of the conditional probabilities,
                      as the superposition study's `get_probs`)

Positions: a prompt's query "→" is meta["query_arrow"]; in a zero-shot query "x_q → ..." it is word_len.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqlab.analysis.task_vectors import injecting, task_vectors, teacher_forced
from seqlab.tasks.icl_maps import LETTERS
from seqlab.tasks.token_base import IGNORE, get_token_task


def map_prompts(params: dict[str, Any], seed: int, split: str, n: int, **changes: Any):
    """(task, tokens (n, L), targets (n, L), metas) for examples 0 .. n-1 of icl-map with `params` and `changes`."""
    task = get_token_task("icl-map", **{**params, **changes})
    examples = [task.example(seed, split, i) for i in range(n)]
    L = max(len(ex.tokens) for ex in examples)
    tokens = np.full((n, L), task.pad_id, dtype=np.int64)
    targets = np.full((n, L), IGNORE, dtype=np.int64)
    for j, ex in enumerate(examples):
        tokens[j, : len(ex.tokens)] = ex.tokens
        targets[j, : len(ex.targets)] = ex.targets
    return task, torch.from_numpy(tokens), torch.from_numpy(targets), [ex.meta for ex in examples]


def query_arrows(metas: list[dict]) -> torch.Tensor:
    return torch.tensor([m["query_arrow"] for m in metas])


def task_vector_of(model, params: dict[str, Any], name: str, seed: int, n: int, offset: int = 0) -> torch.Tensor:
    """(n_layers, D): the mean over n prompts of map `name` of the states after each block at the query's "→"
    (offset 0) or `offset` tokens before it (the query word's symbols)."""
    _, tokens, _, metas = map_prompts(params, seed, "test", n, task=name, mix=None, score="query")
    return task_vectors(model, tokens, query_arrows(metas) - offset)


def with_answer(task, tokens: torch.Tensor, metas: list[dict], name: str):
    """Each prompt cut after its query's "→" and completed with map `name`'s answer and the "," that ends an
    answer; targets on both (what the model must write after the "→")."""
    rows = []
    for row, meta in zip(tokens.tolist(), metas):
        head = row[: meta["query_arrow"] + 1]
        rows.append((head, [LETTERS.index(ch) + 1 for ch in meta["answers"][name]] + [task.comma]))
    L = max(len(h) + len(a) for h, a in rows)
    out = torch.full((len(rows), L), task.pad_id, dtype=torch.long)
    tgt = torch.full((len(rows), L), IGNORE, dtype=torch.long)
    for j, (head, answer) in enumerate(rows):
        seq = head + answer
        out[j, : len(seq)] = torch.tensor(seq)
        tgt[j, len(head) - 1: len(seq) - 1] = torch.tensor(answer)  # predicted from the "→" on
    return out, tgt


@torch.no_grad()
def answer_probs(model, task, tokens: torch.Tensor, metas: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Per prompt, P(map `name`'s answer) for each name: exp of the answer's summed log-probability."""
    out = {}
    for name in names:
        seqs, tgts = with_answer(task, tokens, metas, name)
        _, logprob = teacher_forced(model, seqs, tgts)
        out[name] = logprob.exp().numpy()
    return out


@torch.no_grad()
def injected_accuracy(model, params: dict[str, Any], name: str, layer: int | None, vector: torch.Tensor | None,
                      seed: int, n: int, offset: int = 0) -> float:
    """The share of n zero-shot queries of map `name` answered exactly with `vector` written over block `layer`'s
    output at the "→" or `offset` tokens before it (no injection when layer is None)."""
    task, tokens, targets, metas = map_prompts(params, seed, "test", n, task=name, mix=None, n_demos=0,
                                               n_demos_min=None, score="query")
    arrows = query_arrows(metas)
    if layer is None:
        right, _ = teacher_forced(model, tokens, targets)
    else:
        with injecting(model, layer, vector, arrows - offset):
            right, _ = teacher_forced(model, tokens, targets)
    return float(right.float().mean())


@torch.no_grad()
def icl_accuracy(model, params: dict[str, Any], name: str, seed: int, n: int, **changes: Any) -> float:
    """The share of n prompts of map `name` whose query is answered exactly (the demonstrations in context)."""
    _, tokens, targets, _ = map_prompts(params, seed, "test", n, task=name, mix=None, score="query", **changes)
    right, _ = teacher_forced(model, tokens, targets)
    return float(right.float().mean())
