"""Batches of token tasks: the task writes token ids and targets itself (IGNORE where nothing is scored)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.core.targets import IGNORE
from seqlab.data.text import Stream
from seqlab.tasks.token_base import TokenTask


@dataclass
class TokenBatch:
    tokens: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B, L), IGNORE where nothing is scored

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.tokens.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))

    def model_args(self) -> tuple:
        return (self.tokens, self.targets)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def n_scored(self) -> int:
        """The positions the model's mean loss is over (multi-process training weighs ranks by it)."""
        return int((self.targets != IGNORE).sum())


class TokenStream(Stream):
    """Training batch `step` holds train examples step * B .. step * B + B - 1."""

    def __init__(self, task: TokenTask, seed: int, batch_size: int):
        self.task, self.seed, self.batch_size = task, seed, batch_size

    def batch(self, step: int) -> TokenBatch:
        tokens, targets = self.task.batch(self.seed, "train", step * self.batch_size, self.batch_size)
        return TokenBatch(torch.from_numpy(tokens), torch.from_numpy(targets))
