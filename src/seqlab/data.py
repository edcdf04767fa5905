"""Batches: examples from a task, encoded by a format, padded into tensors.

Training batch `step` holds examples `step * B ... step * B + B - 1` of the train split, so the data
cursor is just the step number and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from seqlab.formats import Encoded, Format
from seqlab.tasks import Example, Task
from seqlab.tokenizer import PAD

IGNORE = -100  # target value that the loss skips


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, L) inputs
    targets: torch.Tensor  # (B, L) next tokens, IGNORE outside the answer
    pos_ids: torch.Tensor  # (B, L) the format's position ids

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.tokens, self.targets, self.pos_ids)))

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())


def collate(encoded: list[Encoded]) -> Batch:
    """Right-padded inputs and targets with the loss mask on the answer (and its EOS) only."""
    seqs, poss, masks = [], [], []
    for e in encoded:
        seq = e.prompt + e.answer
        pos = e.prompt_pos + [e.answer_pos_base + j for j in range(len(e.answer))]
        seqs.append(seq)
        poss.append(pos)
        masks.append(len(e.prompt))
    L = max(len(s) for s in seqs) - 1
    tokens = torch.full((len(seqs), L), PAD, dtype=torch.long)
    targets = torch.full((len(seqs), L), IGNORE, dtype=torch.long)
    pos_ids = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, (seq, pos, n_prompt) in enumerate(zip(seqs, poss, masks)):
        n = len(seq) - 1
        tokens[r, :n] = torch.tensor(seq[:-1])
        pos_ids[r, :n] = torch.tensor(pos[:-1])
        # Input position k predicts token k + 1; answer tokens start at index n_prompt.
        targets[r, n_prompt - 1 : n] = torch.tensor(seq[n_prompt:])
    return Batch(tokens, targets, pos_ids)


class TrainStream:
    """Deterministic training batches: batch(step) depends only on (task, format, seed, step)."""

    def __init__(self, task: Task, fmt: Format, seed: int, batch_size: int):
        self.task, self.fmt, self.seed, self.batch_size = task, fmt, seed, batch_size

    def encoded(self, i: int) -> Encoded:
        ex = self.task.example(self.seed, "train", i)
        # Random position/hint offsets are drawn per example, so they are a pure function of i too.
        return self.fmt.encode(ex, random.Random(f"offset:{self.seed}:{i}"))

    def batch(self, step: int) -> Batch:
        start = step * self.batch_size
        return collate([self.encoded(i) for i in range(start, start + self.batch_size)])


def test_examples(task: Task, fmt: Format, seed: int, n: int) -> list[tuple[Example, Encoded]]:
    """The first n examples of the test split, encoded without random offsets."""
    out = []
    for ex in task.examples(seed, "test", n):
        out.append((ex, fmt.encode(ex)))
    return out
