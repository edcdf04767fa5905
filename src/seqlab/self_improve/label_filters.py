"""Filters for self-generated labels (Lee, Cai et al. 2025). Each is a pure function of the labels
(and of the problems' prompts), never of the true answers, and returns which labels to keep.

- `length_filter`: drop a label at least `threshold` characters shorter than the longest label in
  its batch (the paper's filter for forward addition, where a model that stops early is wrong).
- `majority_vote`: over M models' labels for the same problems, keep the most common label where
  at least `fraction` of the models wrote exactly it (the paper: 4 of 5 for multiplication).
- `validity_filter`: keep labels the task's own check accepts (a maze path must follow edges).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from seqlab.tasks import Example, Task


def length_filter(labels: Sequence[str], threshold: int, batch_size: int) -> list[bool]:
    """Keep each label unless it is `threshold` or more characters shorter than the longest label
    in its batch (batches of `batch_size` consecutive labels, as they were decoded)."""
    keep = []
    for start in range(0, len(labels), batch_size):
        chunk = labels[start : start + batch_size]
        longest = max(len(s) for s in chunk)
        keep += [longest - len(s) < threshold for s in chunk]
    return keep


def majority_vote(votes: Sequence[Sequence[str]], fraction: float) -> tuple[list[str], list[bool]]:
    """`votes[m][i]` is model m's label for problem i. Returns the most common label per problem and
    whether at least `fraction` of the models agree on it exactly."""
    n_models = len(votes)
    winners, keep = [], []
    for labels in zip(*votes, strict=True):
        label, count = Counter(labels).most_common(1)[0]
        winners.append(label)
        keep.append(count >= fraction * n_models - 1e-9)
    return winners, keep


def validity_filter(task: Task, problems: Sequence[Example], labels: Sequence[str]) -> list[bool]:
    return [task.valid_answer(p, s) for p, s in zip(problems, labels, strict=True)]
