"""Batches of vector-valued prompts for in-context learning, with Garg's curriculum.

Training batch `step` holds prompts `step * B ... step * B + B - 1` of the train split, drawn at the
curriculum's active dimensions and number of points for that step, so a resumed run sees exactly
the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import model_validator

from seqlab.core.configs import Config
from seqlab.data.text import Stream
from seqlab.tasks.function_classes import FunctionClass


class Ramp(Config):
    """A value that starts at `start` and grows by `inc` every `interval` steps up to `end`."""

    start: int
    end: int
    inc: int = 1
    interval: int = 2000

    @model_validator(mode="after")
    def _check(self):
        if self.start < 1 or self.end < self.start or self.inc < 1 or self.interval < 1:
            raise ValueError("a ramp needs 1 <= start <= end, inc >= 1 and interval >= 1")
        return self

    def at(self, step: int) -> int:
        return min(self.end, self.start + self.inc * (step // self.interval))


class Curriculum(Config):
    """What grows during training. Garg et al. 2022 (d = 20): dims 5 -> 20 by +1 and points 11 -> 41 by
    +2, every 2,000 steps. Yang et al. 2024 grow the number of loops the same way. A missing ramp means
    the full value from the first step (all dims, the task's n_points, the model's loops)."""

    dims: Ramp | None = None
    points: Ramp | None = None
    loops: Ramp | None = None

    def at(self, step: int) -> dict[str, int | None]:
        return {k: (r.at(step) if r is not None else None) for k, r in
                (("active_dims", self.dims), ("n_points", self.points), ("loops", self.loops))}


def garg_curriculum(n_dims: int, n_points: int, interval: int = 2000, dims_start: int = 5, points_start: int = 11) -> Curriculum:
    """Garg's schedule, scaled to any d: dims from min(5, d) to d by +1, points from 11 to n_points by +2."""
    return Curriculum(dims=Ramp(start=min(dims_start, n_dims), end=n_dims, inc=1, interval=interval),
                      points=Ramp(start=min(points_start, n_points), end=n_points, inc=2, interval=interval))


def curriculum_ramps(cur: dict | None, n_dims: int, n_points: int) -> dict:
    """A recipe's curriculum settings ({"dims_start", "points_start", "interval", "points_inc"?}) as
    the `curriculum` section of a run config: dims +1 and points +points_inc (2) every interval."""
    if not cur:
        return {}
    return {"dims": {"start": min(cur["dims_start"], n_dims), "end": n_dims, "inc": 1, "interval": cur["interval"]},
            "points": {"start": min(cur["points_start"], n_points), "end": n_points, "inc": cur.get("points_inc", 2),
                       "interval": cur["interval"]}}


@dataclass
class PromptBatch:
    xs: torch.Tensor  # (B, k, d)
    ys: torch.Tensor  # (B, k)
    loops: int | None = None  # looped models: loops to train this step with
    scored: torch.Tensor | None = None  # (B, k) bool: the points the loss reads (Park's outliers are not); None: all

    def to(self, device) -> "PromptBatch":
        scored = None if self.scored is None else self.scored.to(device, non_blocking=True)
        return PromptBatch(self.xs.to(device, non_blocking=True), self.ys.to(device, non_blocking=True), self.loops, scored)

    def model_args(self) -> tuple:
        return (self.xs, self.ys, self.loops, self.scored)

    @property
    def n_tokens(self) -> int:
        return 2 * self.xs.shape[0] * self.xs.shape[1]

    @property
    def n_scored(self) -> int:
        """The points the model's mean squared error is over (multi-process training weighs ranks by it)."""
        return int(self.scored.sum()) if self.scored is not None else int(self.ys.numel())


class PromptStream(Stream):
    """Train-split prompts of one function class, following a curriculum."""

    def __init__(self, fc: FunctionClass, seed: int, batch_size: int, curriculum: Curriculum | None = None):
        self.fc, self.seed, self.batch_size = fc, seed, batch_size
        self.curriculum = curriculum or Curriculum()

    def batch(self, step: int) -> PromptBatch:
        at = self.curriculum.at(step)
        p = self.fc.prompts(self.seed, "train", step * self.batch_size, self.batch_size,
                            n_points=at["n_points"], active_dims=at["active_dims"])
        scored = getattr(p, "scored", None)
        return PromptBatch(torch.from_numpy(p.xs), torch.from_numpy(p.ys), at["loops"],
                           None if scored is None else torch.from_numpy(scored))
