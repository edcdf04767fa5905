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

from seqlab.core.targets import IGNORE
from seqlab.formats.format import Encoded, Format
from seqlab.tasks import Example, Task
from seqlab.formats.tokenizer import PAD


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, L) inputs
    targets: torch.Tensor  # (B, L) next tokens, IGNORE outside the answer
    pos_ids: torch.Tensor  # (B, L) the format's position ids

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.tokens, self.targets, self.pos_ids)))

    def model_args(self) -> tuple:
        """The arguments of the model's `loss`."""
        return (self.tokens, self.targets, self.pos_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def n_scored(self) -> int:
        """The target tokens the model's mean loss is over (multi-process training weighs ranks by it)."""
        return int((self.targets != IGNORE).sum())


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


class Stream:
    """Deterministic training batches: `batch(step)` is a pure function of the stream and the step."""

    def batch(self, step: int) -> Batch:
        raise NotImplementedError

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


class TrainStream(Stream):
    """Batches of the task's train split: batch(step) depends only on (task, format, seed, step)."""

    def __init__(self, task: Task, fmt: Format, seed: int, batch_size: int):
        self.task, self.fmt, self.seed, self.batch_size = task, fmt, seed, batch_size

    def encoded(self, i: int) -> Encoded:
        ex = self.task.example(self.seed, "train", i)
        # Random position/hint offsets are drawn per example, so they are a pure function of i too.
        return self.fmt.encode(ex, random.Random(f"offset:{self.seed}:{i}"))

    def batch(self, step: int) -> Batch:
        start = step * self.batch_size
        return collate([self.encoded(i) for i in range(start, start + self.batch_size)])


@dataclass
class Labelled:
    """A problem with a label a model wrote (as the format writes answers); no true answer."""

    problem: Example  # its `answer` is empty: the true one never gets here
    label: str


class MixtureStream(Stream):
    """Each row drawn from one of several sources with fixed weights: the task's own train split
    (true answers, for the starting range) or a list of model-labelled problems.

    Row j of batch `step` picks its source and its example with a PRNG seeded by (seed, step, j), so
    batches stay a pure function of the step and a resumed run sees the same data.
    """

    def __init__(self, sources: list[tuple[float, Task | list[Labelled]]], fmt: Format, seed: int, batch_size: int):
        if not sources or any(w <= 0 for w, _ in sources):
            raise ValueError("a mixture needs at least one source, each with a positive weight")
        self.sources, self.fmt, self.seed, self.batch_size = sources, fmt, seed, batch_size
        self.weights = [w for w, _ in sources]

    def encoded(self, step: int, j: int) -> Encoded:
        rng = random.Random(f"mix:{self.seed}:{step}:{j}")
        _, source = rng.choices(self.sources, weights=self.weights)[0]
        if isinstance(source, Task):
            ex = source.example(self.seed, "train", step * self.batch_size + j)
            return self.fmt.encode(ex, rng)
        item = source[rng.randrange(len(source))]
        return self.fmt.encode(item.problem, rng, answer_text=item.label)

    def batch(self, step: int) -> Batch:
        return collate([self.encoded(step, j) for j in range(self.batch_size)])


def test_examples(task: Task, fmt: Format, seed: int, n: int) -> list[tuple[Example, Encoded]]:
    """The first n examples of the test split, encoded without random offsets."""
    out = []
    for ex in task.examples(seed, "test", n):
        out.append((ex, fmt.encode(ex)))
    return out
