"""A discrete-event simulator of the serving loop: seqlab.serve.engine.serve with an executor that advances the
clock by a service-time model instead of running the decoder.

The service-time model is fitted to the real engine on this machine (`measure_service`, `ServiceModel.fit`):
    step(B, T)    = s0 + s1 * B + s2 * B * T    one token for B slots whose longest row holds T tokens
    prefill(n, L) = p0 + p1 * n * L             n prompts of L tokens, read together
A step's time grows with the batch (more rows through every matmul) and with the context (more keys to read), so
throughput is not B / step time for every B, which is what a model constant in B would assume. The paper's model
(one time unit per step whatever the batch, no prefill) is `ServiceModel.constant()`, under which the simulator
must reproduce the closed forms below.

Closed forms (Guldogan et al. 2024, uniform output lengths on [l_min, l_max], saturated server):
    one bin:  E[batch time] = l_min + (l_max - l_min) * B / (B + 1)     (the mean of the largest of B uniforms)
    k bins of equal width w = (l_max - l_min) / k, each equally likely: bin i's batch takes l_min + i w + w B/(B+1),
    so throughput = B / (l_min + (l_max - l_min) * ((k - 1) / (2k) + B / ((B + 1) k))) requests per time unit.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from seqlab.core.errors import BadInput
from seqlab.serve.slots import Request, SlotBatch


@dataclass
class ServiceModel:
    s0: float
    s1: float
    s2: float
    p0: float = 0.0
    p1: float = 0.0

    @classmethod
    def constant(cls, per_step: float = 1.0) -> "ServiceModel":
        """The paper's: every step one unit, whatever the batch and context; prefills free."""
        return cls(per_step, 0.0, 0.0)

    def step(self, batch: int, context: int) -> float:
        return self.s0 + self.s1 * batch + self.s2 * batch * context

    def prefill(self, n: int, length: int) -> float:
        return self.p0 + self.p1 * n * length

    @classmethod
    def fit(cls, steps: list[tuple[int, int, float]], prefills: list[tuple[int, int, float]]) -> "ServiceModel":
        """Least squares on measured (B, T, seconds) steps and (n, L, seconds) prefills, each time weighted by its
        inverse (a relative error), coefficients clipped at 0 (no time is negative)."""
        def lsq(X, y):
            w = 1.0 / np.asarray(y)
            coef, *_ = np.linalg.lstsq(X * w[:, None], np.asarray(y) * w, rcond=None)
            return np.clip(coef, 0.0, None)

        S = np.array([[1.0, b, b * t] for b, t, _ in steps])
        s = lsq(S, [sec for *_, sec in steps])
        P = np.array([[1.0, n * L] for n, L, _ in prefills])
        p = lsq(P, [sec for *_, sec in prefills])
        return cls(*map(float, s), *map(float, p))

    def relative_errors(self, steps, prefills) -> dict:
        """The fit's error on the measurements it came from: the mean and largest |predicted / measured - 1|."""
        errs = [abs(self.step(b, t) / sec - 1) for b, t, sec in steps]
        errs_p = [abs(self.prefill(n, L) / sec - 1) for n, L, sec in prefills]
        return {"step_mean": float(np.mean(errs)), "step_max": float(np.max(errs)),
                "prefill_mean": float(np.mean(errs_p)), "prefill_max": float(np.max(errs_p))}


def measure_service(model, batches: list[int], contexts: list[int], eos: int, vocab: int, reps: int = 5,
                    seed: int = 0) -> tuple[list, list]:
    """Time the real engine's steps at each (batch, context) and its prefills at each (batch, prompt length): the
    median of `reps` calls each, random prompts (a step's time does not depend on the tokens)."""
    rng = np.random.default_rng(seed)
    steps, prefills = [], []
    warm = SlotBatch(model, max(batches), max(contexts) + 2)  # the first calls pay for allocation, not for work
    warm.admit([(i, Request(i, [0] * max(contexts), list(range(max(contexts))), max(contexts), 2, -1))
                for i in range(max(batches))])
    warm.step()
    for B in batches:
        for T in contexts:
            slots = SlotBatch(model, B, T + reps + 2)
            reqs = [Request(i, rng.integers(0, vocab, T).tolist(), list(range(T)), T, reps + 2, -1) for i in range(B)]
            t0 = time.perf_counter()
            slots.admit(list(enumerate(reqs)))
            prefills.append((B, T, time.perf_counter() - t0))
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                slots.step()
                times.append(time.perf_counter() - t0)
            steps.append((B, T + reps // 2, statistics.median(times)))
    return steps, prefills


class SimulatedExecutor:
    """The serving loop's executor on a service-time model: each request writes `true_length` tokens (the first at
    its prefill, as the engine does), and every step costs step(n_slots, longest row)."""

    def __init__(self, service: ServiceModel, n_slots: int):
        self.service, self.n_slots = service, n_slots
        self.slots: list[list | None] = [None] * n_slots  # [tokens left, tokens held, written]

    def admit(self, pairs: list[tuple[int, Request]]) -> tuple[float, list[int]]:
        seconds = 0.0
        for L, group in groupby(sorted(pairs, key=lambda p: len(p[1].prompt)), key=lambda p: len(p[1].prompt)):
            group = list(group)
            seconds += self.service.prefill(len(group), L)
            for slot, r in group:
                if r.true_length is None or r.true_length < 1:
                    raise BadInput(f"request {r.id} has no true output length: the simulator needs one")
                self.slots[slot] = [r.true_length - 1, L + 1, 1]
        return seconds, [s for s, _ in pairs if self.slots[s][0] == 0]

    def step(self) -> tuple[float, list[int]]:
        busy = [i for i, s in enumerate(self.slots) if s is not None]
        context = max(self.slots[i][1] for i in busy) + 1  # as RowKVCache: keys up to the longest row, and the new one
        done = []
        for i in busy:
            s = self.slots[i]
            if s[0] > 0:  # a row already done waits for release (never: the loop releases at once)
                s[0], s[1], s[2] = s[0] - 1, s[1] + 1, s[2] + 1
                if s[0] == 0:
                    done.append(i)
        return self.service.step(self.n_slots, context), done

    def release(self, slot: int) -> tuple[None, int]:
        s, self.slots[slot] = self.slots[slot], None
        return None, s[2]


def one_bin_batch_time(l_min: float, l_max: float, batch: int) -> float:
    return l_min + (l_max - l_min) * batch / (batch + 1)


def multi_bin_throughput(l_min: float, l_max: float, batch: int, bins: int) -> float:
    """Requests per time unit with k equal-width bins, saturated, one step per time unit."""
    k = bins
    return batch / (l_min + (l_max - l_min) * ((k - 1) / (2 * k) + batch / ((batch + 1) * k)))
