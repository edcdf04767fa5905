"""Sweeps: many training runs from one Python file, on a local pool of processes or as Ray tasks.

A sweep file is Python the researcher wrote, run like a config: it defines `CONFIGS` (a list of
configs shaped as `seqlab train` takes them, `{"task": ..., "model": ..., "train": ...}`, of any kind
of run) or a function `configs()` returning one, and optionally `NAME`, `OUT` (the sweep directory,
default `runs/sweeps/<file stem>`) and `label(config) -> str` (the run directory's name).

    SWEEP_DIR/sweep.json       the resolved configs and their labels, the file, the seqlab version
    SWEEP_DIR/runs/<label>/    one standard run directory per config
    SWEEP_DIR/failures.json    the runs that raised, after a sweep where some did

Every config is resolved and checked before anything is written. A rerun skips finished runs and
resumes unfinished ones (each run directory resumes as `seqlab train --out` does). A run that raises is
recorded and the others go on. A sweep holds its directory's lock (seqlab.core.lock) while it trains, so a
second `seqlab sweep` on the same directory is refused with the PID of the first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import runpy
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seqlab.core.version import __version__
from seqlab.runs import check_startable, get_kind, kind_of_config, resolve
from seqlab.core.errors import BadInput
from seqlab.core.io import write_json
from seqlab.core.console import console as make_console
from seqlab.core.lock import folder_lock
from seqlab.train.checkpoint import read_state
from seqlab.sweeps.folder import STATE_FILES, check_label_lengths, check_sweep_dir, clear_leftovers
from seqlab.sweeps.backends import available_cores, connect_ray, run_pool, run_ray

LABEL_OK = re.compile(r"[A-Za-z0-9_.,=+-]+")
SEED_KEY = "train.seed"
HASH_SKIPS = ("train.steps",)  # raising steps and rerunning continues the runs, as `seqlab train` does
# How a run is watched is not what it is (seqlab.train.config.TRACKING_KEYS): turning a tracker on keeps
# the run directories, and the names of sweeps made before these keys existed.
HASH_SKIPS += ("train.tracking", "train.wandb_project", "train.wandb_mode")


@dataclass
class SweepRun:
    index: int
    label: str
    kind: str  # the name of its kind of run (seqlab.runs.KINDS)
    config: Any  # the typed config of its kind
    run_dir: Path

    @property
    def flat(self) -> dict[str, Any]:
        return flatten(self.config.to_json())


@dataclass
class Sweep:
    file: Path
    name: str
    out: Path
    runs: list[SweepRun]
    varying: list[str]  # dotted config keys whose value differs between runs


# -- reading a sweep file ----------------------------------------------------------------------
def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 32}} -> {"model.d_model": 32}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _file_error(path: Path, e: BaseException) -> BadInput:
    """One line for an exception raised while running the sweep file, at the file's own line."""
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    for frame in traceback.extract_tb(e.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    where = f"{path}" + (f", line {line}" if line else "")
    msg = str(e).splitlines()[0] if str(e).strip() else ""
    return BadInput(f"sweep file {where}: {type(e).__name__}" + (f": {msg}" if msg else ""))


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"sweep file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return runpy.run_path(str(path), run_name="__seqlab_sweep__")
    except (Exception, SystemExit) as e:  # the user's code: any error is theirs to fix
        raise _file_error(path, e) from None


def _call(path: Path, fn: Callable, *args) -> Any:
    try:
        return fn(*args)
    except Exception as e:
        raise _file_error(path, e) from None


def value_text(v: Any) -> str:
    """A config value as a folder name may hold it: 0.001 -> 0.001, [1, 2] -> 1_2, "a/b" -> a_b."""
    if isinstance(v, bool) or v is None:
        text = json.dumps(v)
    elif isinstance(v, float):
        text = f"{v:g}"
    elif isinstance(v, str):
        text = v
    else:
        text = json.dumps(v, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "_"


def varying_keys(flats: list[dict[str, Any]], kinds: list[str]) -> list[str]:
    """Dotted keys whose value differs between configs, seed last: keys every config has, and among
    configs of one kind, keys only some have (an optional section set in some). A key that only
    another kind of run has (an in-context run's curriculum beside a text run) is not a difference."""
    def differ(k: str, group: list[dict[str, Any]]) -> bool:
        return len({json.dumps(f.get(k, "<absent>"), sort_keys=True) for f in group}) > 1

    keys = list(dict.fromkeys(k for f in flats for k in f))
    by_kind = [[f for f, kd in zip(flats, kinds) if kd == kind] for kind in dict.fromkeys(kinds)]
    varying = [k for k in keys if (all(k in f for f in flats) and differ(k, flats)) or any(differ(k, g) for g in by_kind)]
    return sorted(varying, key=lambda k: k == SEED_KEY)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part where that is unambiguous among `keys` (d_model, seed)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def config_hash(flat: dict[str, Any]) -> str:
    kept = {k: v for k, v in flat.items() if k not in HASH_SKIPS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]


def default_label(flat: dict[str, Any], varying: list[str]) -> str:
    """key=value for what varies between the sweep's configs, then a short hash of the whole config."""
    names = short_names(varying)
    readable = ",".join(f"{names[k]}={value_text(flat.get(k))}" for k in varying)[:80]
    return f"{readable}-{config_hash(flat)}" if readable else config_hash(flat)


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Run the sweep file and resolve and check every config; writes nothing. `out` overrides OUT."""
    path = Path(path)
    ns = _read_file(path)
    source = "CONFIGS"
    if callable(ns.get("configs")):
        if "CONFIGS" in ns:
            raise BadInput(f"sweep file {path} defines both CONFIGS and configs(); keep one")
        configs, source = _call(path, ns["configs"]), "configs()"
    elif "CONFIGS" in ns:
        configs = ns["CONFIGS"]
    else:
        raise BadInput(f"sweep file {path} defines neither CONFIGS (a list of configs) nor configs()")
    if not isinstance(configs, (list, tuple)) or not configs:
        raise BadInput(f"{source} in {path} must be a non-empty list of configs, got {type(configs).__name__}"
                       + (" (empty)" if isinstance(configs, (list, tuple)) else ""))
    name = ns.get("NAME", path.stem)
    if not isinstance(name, str) or not name:
        raise BadInput(f"NAME in {path} must be a non-empty string")
    if out is None:
        out = ns.get("OUT") or Path("runs") / "sweeps" / path.stem
        if not isinstance(out, (str, os.PathLike)):
            raise BadInput(f"OUT in {path} must be a folder path, got {type(out).__name__}")
    out = Path(out)

    kinds, typed = [], []
    for i, c in enumerate(configs):
        if not isinstance(c, dict):
            raise BadInput(f"{source}[{i}] is a {type(c).__name__}, not a mapping of sections (task, model, train, ...)")
        kind = kind_of_config(c).name
        try:
            typed.append(resolve(get_kind(kind), c))
        except BadInput as e:
            raise BadInput(f"{source}[{i}]: {e}") from None
        kinds.append(kind)
    flats = [flatten(t.to_json()) for t in typed]
    varying = varying_keys(flats, kinds)
    labels = [_label(path, ns.get("label"), t, f, varying, f"{source}[{i}]") for i, (t, f) in enumerate(zip(typed, flats))]
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if lab in seen:
            j = seen[lab]
            same = " (the same config twice)" if flats[i] == flats[j] else ""
            raise BadInput(f"{source}[{j}] and {source}[{i}] have the same label '{lab}'{same}")
        seen[lab] = i
    check_label_lengths(out, labels, source)
    runs = [SweepRun(i, lab, k, t, out / "runs" / lab) for i, (lab, k, t) in enumerate(zip(labels, kinds, typed))]
    check_sweep_dir(out)
    for r in runs:
        try:
            check_startable(get_kind(r.kind), r.config, r.run_dir)
        except BadInput as e:
            raise BadInput(f"{source}[{r.index}] ({r.label}): {e}") from None
    return Sweep(path, name, out, runs, varying)


def _label(path: Path, fn, typed, flat: dict[str, Any], varying: list[str], where: str) -> str:
    if fn is None:
        return default_label(flat, varying)
    lab = _call(path, fn, typed.to_json())
    if not isinstance(lab, str) or not LABEL_OK.fullmatch(lab) or lab.startswith("."):
        raise BadInput(f"label({where}) gave {lab!r}: a label names a folder, so letters, digits and . _ , = + - only")
    return lab


# -- the state of a run ------------------------------------------------------------------------
def run_state(run: SweepRun) -> str:
    """"finished" (steps done or stopped early), "started" (a run directory to resume) or "new"."""
    from seqlab.runs.directory import is_run_dir
    from seqlab.train.checkpoint import latest_checkpoint

    if not is_run_dir(run.run_dir):
        return "new"
    try:
        ckpt = latest_checkpoint(run.run_dir)
        state = read_state(ckpt) if ckpt is not None else {}
    except (BadInput, OSError, ValueError):
        return "started"  # the worker's resume reports what is wrong, as a failure of this run
    done = state.get("step", 0) >= run.config.train.steps or state.get("stopped_early", False)
    return "finished" if done else "started"


# -- running a sweep ---------------------------------------------------------------------------
def plan_workers(n_pending: int, backend: str, workers: int | None, threads: int | None,
                 configs: list[Any]) -> tuple[int, int]:
    """(workers, torch threads per run): workers x threads <= cores unless asked otherwise."""
    cores = available_cores()
    asked = [c.train.threads for c in configs if c.train.threads]
    threads = threads or (max(asked) if asked else None)
    if backend == "ray":
        return 0, threads or 1
    workers = workers or max(1, min(n_pending, cores // (threads or 1)))
    return workers, threads or max(1, cores // workers)


def check_options(backend: str, workers: int | None, threads: int | None, ray_address: str | None) -> None:
    if backend not in ("local", "ray"):
        raise BadInput(f"unknown --backend '{backend}' (local or ray)")
    if ray_address and backend != "ray":
        raise BadInput("--ray-address goes with --backend ray")
    if backend == "ray" and workers:
        raise BadInput("--workers sizes the local pool; Ray places tasks by --threads (CPUs per run)")
    for flag, v in (("--workers", workers), ("--threads", threads)):
        if v is not None and v < 1:
            raise BadInput(f"{flag} must be at least 1")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise BadInput("--backend ray needs Ray: pip install -e '.[ray]'")


def run_sweep(sweep: Sweep, backend: str = "local", workers: int | None = None, threads: int | None = None,
              ray_address: str | None = None, console=None) -> dict[str, Any]:
    """Train every run of the sweep that is not finished; returns the labels finished, skipped and
    failed (with type and message). Writes sweep.json first and failures.json last."""
    from seqlab.runs.directory import check_writable

    check_options(backend, workers, threads, ray_address)
    check_writable(sweep.out)
    with folder_lock(sweep.out, what="sweep directory"):  # for the whole sweep: a second one is refused
        check_sweep_dir(sweep.out)  # again, under the lock: another sweep may have written it since load_sweep
        clear_leftovers(sweep.out, STATE_FILES)
        return _run_locked(sweep, backend, workers, threads, ray_address,
                           console or make_console(stderr=True, soft_wrap=True))


def _run_locked(sweep: Sweep, backend: str, workers: int | None, threads: int | None, ray_address: str | None,
                console) -> dict[str, Any]:
    states = {r.label: run_state(r) for r in sweep.runs}
    pending = [r for r in sweep.runs if states[r.label] != "finished"]
    workers, threads = plan_workers(len(pending), backend, workers, threads, [r.config for r in sweep.runs])
    ray_started = connect_ray(ray_address) if backend == "ray" and pending else False
    try:
        write_sweep_json(sweep)
        n_new = sum(states[r.label] == "new" for r in pending)
        where = f"{workers} worker{'s' * (workers != 1)} x {threads} thread{'s' * (threads != 1)}" \
            if backend == "local" else f"Ray, {threads} CPU{'s' * (threads != 1)} per run"
        console.print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(pending)} already finished, "
                      f"{n_new} new, {len(pending) - n_new} to resume" + (f" ({where})" if pending else ""))
        jobs = [(r.label, r.kind, r.config.to_json(), str(r.run_dir.resolve()), threads) for r in pending]
        results = _run_jobs(sweep, jobs, backend, workers, threads, console)
    finally:
        if ray_started:
            import ray

            ray.shutdown()
    index = {r.label: r.index for r in sweep.runs}
    failed = sorted(({**r, "index": index[r["label"]]} for r in results if r["status"] == "failed"), key=lambda r: r["index"])
    write_failures(sweep.out, failed)
    todo = {r.label for r in pending}
    return {"out": str(sweep.out), "n": len(sweep.runs), "skipped": [r.label for r in sweep.runs if r.label not in todo],
            "finished": [r["label"] for r in results if r["status"] == "finished"], "failed": failed}


def write_sweep_json(sweep: Sweep) -> None:
    from seqlab.runs.directory import git_commit

    write_json(sweep.out / "sweep.json", {
        "name": sweep.name, "file": str(sweep.file.resolve()), "seqlab_version": __version__,
        "git_commit": git_commit(), "varying": sweep.varying,
        "runs": [{"label": r.label, "kind": r.kind, "config": r.config.to_json()} for r in sweep.runs]})


def write_failures(out: Path, failed: list[dict[str, Any]]) -> None:
    """failures.json lists the failures of the latest sweep: written where there are some, else removed."""
    if failed:
        write_json(out / "failures.json", [{k: r[k] for k in ("index", "label", "type", "message", "traceback")}
                                           for r in failed])
    elif (out / "failures.json").exists():
        (out / "failures.json").unlink()


def _run_jobs(sweep: Sweep, jobs: list[tuple], backend: str, workers: int, threads: int, console) -> list[dict[str, Any]]:
    """Every job on the backend, with a progress bar and one line per run as it ends."""
    results: list[dict[str, Any]] = []
    if not jobs:
        return results
    with _progress(console) as bar:
        task = bar.add_task(sweep.name, total=len(jobs), done=0, failed=0)

        def record(result: dict[str, Any]) -> None:
            results.append(result)
            bar.console.print(result_line(result, sweep), highlight=False)
            failed = sum(r["status"] == "failed" for r in results)
            bar.update(task, advance=1, done=len(results) - failed, failed=failed)

        if backend == "local":
            run_pool(jobs, workers, threads, record, say=lambda line: bar.console.print(line, highlight=False))
        else:
            run_ray(jobs, threads, record)
    return results


def result_line(result: dict[str, Any], sweep: Sweep) -> str:
    if result["status"] == "failed":
        return f"[red]failed[/red]   {result['label']}: {result['type']}: {result['message']}"
    kind = next(r.kind for r in sweep.runs if r.label == result["label"])
    metric = get_kind(kind).main_metric
    value = result["final_eval"].get(metric)
    shown = f"  {metric} {value:.4f}" if isinstance(value, (int, float)) else ""
    return f"[green]finished[/green] {result['label']}: step {result['step']}{shown}  ({result['seconds']:.1f} s)"


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("finished {task.fields[done]}, failed {task.fields[failed]}"), TimeElapsedColumn(),
                    console=console)
