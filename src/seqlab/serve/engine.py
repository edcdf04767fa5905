"""The serving loop: requests arrive, a scheduler (seqlab.serve.schedulers) decides which to admit, an executor
prefills and steps them. One loop for the real engine and the simulator; only the executor differs:

  ModelExecutor      the decoder on this machine (SlotBatch); time advances by each call's measured wall time
  SimulatedExecutor  a fitted service-time model (seqlab.serve.simulator); time advances by what it predicts

Arrivals are replayed on the same clock: a request that arrives while a step runs waits for the step to end. The
loop never sleeps, so a simulated hour of Poisson arrivals takes only the compute it needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from seqlab.core.errors import BadInput
from seqlab.serve.slots import Request, SlotBatch


@dataclass
class Completion:
    id: int
    tokens: list[int] | None  # greedy output up to and including the end token (None from the simulator)
    n_tokens: int
    arrival: float
    admitted: float
    finished: float

    @property
    def latency(self) -> float:
        return self.finished - self.arrival


class ModelExecutor:
    """The real engine: a SlotBatch, timed."""

    def __init__(self, model, n_slots: int, max_len: int):
        self.batch = SlotBatch(model, n_slots, max_len)
        self.n_slots = n_slots

    def admit(self, pairs: list[tuple[int, Request]]) -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        done = self.batch.admit(pairs)
        return time.perf_counter() - t0, done

    def step(self) -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        done = self.batch.step()
        return time.perf_counter() - t0, done

    def release(self, slot: int) -> tuple[list[int] | None, int]:
        tokens = self.batch.release(slot)
        return tokens, len(tokens)


def serve(executor, requests: list[Request], scheduler) -> list[Completion]:
    """Every request served under `scheduler`; completions in the order they finished."""
    if getattr(scheduler, "batch", executor.n_slots) > executor.n_slots:
        raise BadInput(f"the scheduler's batch of {scheduler.batch} does not fit {executor.n_slots} slots")
    pending = sorted(requests, key=lambda r: (r.arrival, r.id))
    now, i, waiting, done = 0.0, 0, [], []
    running: dict[int, tuple[Request, float]] = {}  # slot -> (request, when admitted)
    free = list(range(executor.n_slots))

    def finish(slots: list[int]) -> None:
        for s in slots:
            r, admitted = running.pop(s)
            tokens, n = executor.release(s)
            done.append(Completion(r.id, tokens, n, r.arrival, admitted, now))
            free.append(s)
        free.sort()

    while i < len(pending) or waiting or running:
        while i < len(pending) and pending[i].arrival <= now:
            waiting.append(pending[i])
            i += 1
        batch = scheduler.take(waiting, len(free), len(running), more_coming=i < len(pending))
        if batch:
            taken = {r.id for r in batch}
            waiting = [r for r in waiting if r.id not in taken]
            pairs = [(free.pop(0), r) for r in batch]
            for s, r in pairs:
                running[s] = (r, now)
            seconds, finished = executor.admit(pairs)
            now += seconds
            finish(finished)
        if running:
            seconds, finished = executor.step()
            now += seconds
            finish(finished)
        elif not batch:
            if i == len(pending):
                raise BadInput(f"the {scheduler.name} scheduler left {len(waiting)} requests waiting with nothing running")
            now = max(now, pending[i].arrival)  # idle until the next request comes
    return done


def summary(completions: list[Completion]) -> dict:
    """Throughput (requests and tokens per second over the whole run) and latency (mean, p95)."""
    if not completions:
        raise BadInput("no requests were served")
    lat = np.array([c.latency for c in completions])
    start = min(c.arrival for c in completions)
    span = max(c.finished for c in completions) - start
    tokens = sum(c.n_tokens for c in completions)
    return {"requests": len(completions), "seconds": span, "requests_per_s": len(completions) / span,
            "tokens_per_s": tokens / span, "latency_mean": float(lat.mean()),
            "latency_p95": float(np.percentile(lat, 95))}


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """n arrival times of a Poisson process of `rate` requests per second (rate inf: all at 0)."""
    if rate == float("inf"):
        return [0.0] * n
    if rate <= 0:
        raise BadInput(f"an arrival rate must be positive, got {rate}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    return np.cumsum(gaps).tolist()
