"""Experiment trackers beside metrics.jsonl: TensorBoard and Weights & Biases, chosen by `train.tracking`.

metrics.jsonl is always written (by the trainer) and is what seqlab itself reads; a tracker only mirrors
its scalar values elsewhere, so no tracker is needed to run, resume or evaluate anything. Each backend
imports its package when it is opened: a run that does not ask for it never needs it installed.

    RUN_DIR/tensorboard/     TensorBoard event files (`tensorboard --logdir RUN_DIR/tensorboard`)
    RUN_DIR/wandb/           W&B's own folder: offline runs land here until `wandb sync`
    RUN_DIR/tracking.json    the W&B run id, so a resumed run appends to the same W&B run
"""

from __future__ import annotations

import numbers
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from seqlab.core.errors import BadInput
from seqlab.core.io import read_json, write_json
from seqlab.train.config import TrainConfig


class Tracker(Protocol):
    def log(self, step: int, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics record, without its step (a tracker takes the step apart)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _missing(backend: str, package: str) -> BadInput:
    return BadInput(f"train.tracking={backend} needs the {package} package: pip install 'seqlab[{backend}]'")


def check_trackers(c: TrainConfig) -> None:
    """Refuse, before anything is written, a tracker whose package is not installed."""
    import importlib.util

    for backend in c.tracking:
        if importlib.util.find_spec(backend) is None:  # the package of each backend has its name
            raise _missing(backend, backend)


class TensorBoardTracker:
    def __init__(self, run_dir: Path, start_step: int):
        try:  # torch's writer raises ImportError when the tensorboard package is absent
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        # purge_step: a resumed run hides the points an earlier session logged after the checkpoint it
        # resumes from (metrics.jsonl drops the same lines), so no step is shown twice. A run restarted
        # from step 0 purges everything after step 0 alike.
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, record: dict[str, Any]) -> None:
        for k, v in scalars(record).items():
            self.writer.add_scalar(k, v, global_step=step)

    def close(self) -> None:
        self.writer.close()


def wandb_mode(setting: str) -> str | None:
    """"auto": WANDB_MODE where it is set, else online with a WANDB_API_KEY and offline without one (None
    lets wandb read WANDB_MODE itself)."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbTracker:
    def __init__(self, run_dir: Path, c: TrainConfig):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        run_dir = Path(run_dir)
        ids = run_dir / "tracking.json"
        stored = read_json(ids) if ids.is_file() else {}
        run_id = stored.get("wandb_id") or secrets.token_hex(4)  # W&B ids: lower-case letters and digits
        if "wandb_id" not in stored:
            write_json(ids, {**stored, "wandb_id": run_id})
        config = run_dir / "config.json"  # written before training starts; the train section is all a bare Trainer has
        self.run = wandb.init(
            project=c.wandb_project, dir=str(run_dir), mode=wandb_mode(c.wandb_mode), name=run_dir.name,
            config=read_json(config) if config.is_file() else {"train": c.to_json()},
            id=run_id, resume="allow",
            # The console is seqlab's progress bar; the metrics go through log().
            settings=wandb.Settings(console="off"),
        )

    def log(self, step: int, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Every tracker a run asked for, as one: the trainer logs and closes this."""

    def __init__(self, trackers: list[Tracker] | None = None):
        self.trackers = list(trackers or [])

    def log(self, step: int, record: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(step, record)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []


def open_trackers(c: TrainConfig, run_dir: Path, start_step: int) -> Trackers:
    """The trackers `c.tracking` names, for a run in `run_dir` that continues after `start_step`."""
    opened = Trackers()
    try:
        for backend in c.tracking:
            opened.trackers.append(TensorBoardTracker(run_dir, start_step) if backend == "tensorboard"
                                   else WandbTracker(run_dir, c))
    except BaseException:
        opened.close()
        raise
    return opened
