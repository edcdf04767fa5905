"""The run lifecycle, written once for every kind: resolve a config, prepare the directory, seed, build the
parts, resume, fit, summarize. What differs between kinds is in their modules (text.py, token.py, icl.py).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from seqlab.core.configs import apply_overrides
from seqlab.core.lock import LOCK_NAME, folder_lock
from seqlab.runs.directory import CONFIG_META_KEYS, check_run_writable, is_run_dir, prepare, write_run_config
from seqlab.runs.kind import DEFAULT_KIND, KINDS, RunKind, kind_of_config, kind_of_task, stored_kind
from seqlab.train import Trainer, pick_device
from seqlab.train.config import check_fits_in_memory
from seqlab.train.distributed import world
from seqlab.train.tracking import check_trackers


def resolve(kind: RunKind, data: dict[str, Any]):
    """The typed config of `kind` for a mapping of sections. A run's config.json reads back too: its seqlab
    version and commit are not config, nor is the kind where the kind writes none."""
    drop = CONFIG_META_KEYS if kind.writes_kind else (*CONFIG_META_KEYS, "kind")
    return kind.resolve({k: v for k, v in (data or {}).items() if k not in drop})


def command_kind(base: dict[str, Any] | None, overrides: list[str], run_dir: Path) -> RunKind:
    """Which kind of run `seqlab train` is about: its task's, or that of the run it resumes where the
    command names no task."""
    if base is None and not overrides:
        return (stored_kind(run_dir) if is_run_dir(run_dir) else None) or KINDS.get(DEFAULT_KIND)
    task = apply_overrides(base or {}, list(overrides)).get("task", {})
    name = task if isinstance(task, str) else task.get("name") if isinstance(task, dict) else None
    if name is None and is_run_dir(run_dir):  # a resume that changes other settings only
        return stored_kind(run_dir) or KINDS.get(DEFAULT_KIND)
    return kind_of_task(name)


def resolve_command(base: dict[str, Any] | None, overrides: list[str], run_dir: Path):
    """(kind, typed config or None for a plain resume) of `seqlab train [CONFIG] [key=value ...] --out DIR`."""
    kind = command_kind(base, overrides, run_dir)
    if base is None and not overrides:
        return kind, None
    return kind, kind.resolve(apply_overrides(base or {}, list(overrides)))


def check_startable(kind: RunKind, config, run_dir: Path) -> None:
    """Everything `train` would refuse before it writes: the config's own cross-checks and a run directory
    holding another run or something else. Writes nothing."""
    kind.check(config)
    prepare(Path(run_dir), kind, config)
    check_fits_in_memory(config)


def train(run_dir: Path, config=None, kind: RunKind | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir`; returns its summary, the same keys for every kind. With no
    config the stored one is resumed; with no kind the config's (or the stored run's) is taken.

    Everything is checked before anything is written: the config, the run directory, the trackers, the
    model (built, so its memory is known), that every file to be written can be. Then the directory is
    locked for the whole run, so a second process writing the same run is refused."""
    out = Path(run_dir)
    if kind is None:
        kind = kind_of_config(config.to_json()) if config is not None else (stored_kind(out) or KINDS.get(DEFAULT_KIND))
    config = prepare(out, kind, config)
    check_trackers(config.train)
    torch.manual_seed(config.train.seed)  # before the model is built: its init depends on the seed
    device = pick_device(config.train.device)
    check_fits_in_memory(config, device.type)  # before a model too large for this machine is allocated
    parts = kind.build(config, device)
    check_run_writable(out)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    with run_lock(out):
        config = prepare(out, kind, config)  # again, now no other process can write `out`
        trainer = Trainer(parts.model, parts.stream, config.train, out, parts.evaluate, quiet=quiet, objective=parts.objective)
        resumed = trainer.resume()  # reads (and checks) the checkpoint before anything is written
        write_run_config(out, config, resumed)
        t0 = time.perf_counter()
        final = trainer.fit() if not trainer.finished else trainer.logged_eval()
    model = parts.model
    state_size = model.state_size(parts.sequence_length) if parts.sequence_length and hasattr(model, "state_size") else None
    return {"run_dir": str(out), "kind": kind.name, "resumed": resumed, "step": trainer.step, "final_eval": final,
            "stopped_early": trainer.state.get("stopped_early", False), "wall_seconds": time.perf_counter() - t0,
            "train_seconds": trainer.state.get("train_seconds"), "fit_seconds": trainer.state.get("fit_seconds"),
            "n_params": model.n_params(), "state_size": state_size}


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """The run directory's lock, held by rank 0 (under torchrun the other ranks are the same run). A folder
    this command made and leaves holding nothing but the lock, because the run stopped before its config
    was written, is removed again."""
    if not world().is_main:
        yield
        return
    made = not out.exists()
    try:
        with folder_lock(out):
            yield
    finally:
        if made and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(out, ignore_errors=True)
