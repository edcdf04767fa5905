"""Batches: examples from a task, encoded by a format, padded into tensors.

Training batch `step` holds examples `step * B ... step * B + B - 1` of the train split, so the data
cursor is just the step number and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass
from typing import Iterator

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
    rows_tok, rows_tgt, rows_pos = [], [], []
    L = max(len(e.prompt) + len(e.answer) for e in encoded) - 1
    for e in encoded:
        seq = e.prompt + e.answer
        pos = e.prompt_pos + [e.answer_pos_base + j for j in range(len(e.answer))]
        pad = L - (len(seq) - 1)
        # Input k predicts token k + 1, so the targets are the answer tokens, from index len(prompt) - 1.
        rows_tok.append(seq[:-1] + [PAD] * pad)
        rows_pos.append(pos[:-1] + [0] * pad)
        rows_tgt.append([IGNORE] * (len(e.prompt) - 1) + e.answer + [IGNORE] * pad)
    return Batch(torch.tensor(rows_tok), torch.tensor(rows_tgt), torch.tensor(rows_pos))


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

    def prefetch(self, start: int, stop: int, depth: int = 2) -> Iterator[Batch]:
        """Batches start..stop-1, made in a background thread while the model trains on the last one.

        Generation is Python and holds the GIL, but torch's kernels release it, so the two overlap.
        The batches are the same as `batch(step)` in order: prefetching changes timing, not data.
        """
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop_flag = threading.Event()

        def work():
            try:
                for step in range(start, stop):
                    if stop_flag.is_set():
                        return
                    q.put(self.batch(step))
            except BaseException as e:  # surfaced in the consumer
                q.put(e)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            for _ in range(start, stop):
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop_flag.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


def test_examples(task: Task, fmt: Format, seed: int, n: int) -> list[tuple[Example, Encoded]]:
    """The first n examples of the test split, encoded without random offsets."""
    out = []
    for ex in task.examples(seed, "test", n):
        out.append((ex, fmt.encode(ex)))
    return out
