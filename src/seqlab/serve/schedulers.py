"""Who decodes next: the batching policies, as pure rules over the waiting queue. The same rule drives the real
engine (seqlab.serve.engine) and the simulator (seqlab.serve.simulator), so the two differ only in how long a
prefill and a step take.

  static      a batch of B requests in arrival order; the next batch starts when every request of this one is
              done, so a batch takes as long as its longest request
  multi-bin   Guldogan et al. 2024: k bins by predicted output length; a bin emits a batch when it holds B
              requests (the full bin whose oldest request came first), so a batch's requests have similar lengths
  continuous  iteration-level (Orca, vLLM): a finished request's slot takes the oldest waiting request at once

When no more requests will arrive, static and multi-bin emit what they hold in partial batches, so every request
is served.
"""

from __future__ import annotations

import bisect

from seqlab.core.errors import BadInput
from seqlab.serve.slots import Request


class Static:
    name = "static"

    def __init__(self, batch: int):
        if batch < 1:
            raise BadInput(f"a batch holds at least one request, got {batch}")
        self.batch = batch

    def take(self, waiting: list[Request], free: int, running: int, more_coming: bool) -> list[Request]:
        if running or not waiting or (len(waiting) < self.batch and more_coming):
            return []
        return waiting[: self.batch]


class MultiBin:
    name = "multi-bin"

    def __init__(self, batch: int, boundaries: list[float]):
        """`boundaries`: the k - 1 predicted lengths between the k bins, increasing (bin i holds
        boundaries[i-1] <= predicted < boundaries[i])."""
        if batch < 1:
            raise BadInput(f"a batch holds at least one request, got {batch}")
        if list(boundaries) != sorted(boundaries):
            raise BadInput(f"bin boundaries must increase, got {boundaries}")
        self.batch, self.boundaries = batch, list(boundaries)
        self.bins = len(boundaries) + 1

    def bin_of(self, r: Request) -> int:
        if r.predicted is None:
            raise BadInput(f"request {r.id} has no predicted length: multi-bin batching needs a length predictor")
        return bisect.bisect_right(self.boundaries, r.predicted)

    def take(self, waiting: list[Request], free: int, running: int, more_coming: bool) -> list[Request]:
        if running or not waiting:
            return []
        bins: dict[int, list[Request]] = {}
        for r in waiting:  # waiting is in arrival order, so each bin's list is too
            bins.setdefault(self.bin_of(r), []).append(r)
        full = [b for b in bins.values() if len(b) >= self.batch]
        if full:
            return min(full, key=lambda b: b[0].arrival)[: self.batch]
        if more_coming:
            return []
        return min(bins.values(), key=lambda b: b[0].arrival)[: self.batch]


class Continuous:
    name = "continuous"

    def __init__(self, batch: int):
        if batch < 1:
            raise BadInput(f"continuous batching needs at least one slot, got {batch}")
        self.batch = batch

    def take(self, waiting: list[Request], free: int, running: int, more_coming: bool) -> list[Request]:
        return waiting[:free]


def equal_width(lo: float, hi: float, k: int) -> list[float]:
    """k bins of equal width over [lo, hi]: the paper's choice for uniform lengths."""
    return [lo + (hi - lo) * i / k for i in range(1, k)]


def equal_mass(lengths: list[float], k: int) -> list[float]:
    """k bins holding equal shares of `lengths` (predicted lengths of past requests): for a long tail."""
    s = sorted(lengths)
    if not s:
        raise BadInput("equal-mass bins need some lengths to split")
    return [s[min(len(s) - 1, (len(s) * i) // k)] for i in range(1, k)]
