"""Learning-rate schedules: linear warmup, then cosine decay, warmup-stable-decay, or constant."""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, steps: int, warmup: int, schedule: str, min_lr_ratio: float, decay_frac: float) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    floor = lr * min_lr_ratio
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        t = (step - warmup) / max(1, steps - warmup)
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    # wsd: hold lr, then decay linearly to the floor over the last decay_frac of the steps
    decay_start = int(steps * (1 - decay_frac))
    if step < decay_start:
        return lr
    t = (step - decay_start) / max(1, steps - decay_start)
    return lr + (floor - lr) * min(t, 1.0)
