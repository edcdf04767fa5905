"""Where a sweep's runs train: a local pool of spawned processes, or Ray tasks. Both run `run_one`, which
trains (or resumes) one run directory and returns what it evaluated or what it raised; a run's failure
is a result, never an exception that stops the sweep.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import traceback
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

from seqlab.runs import get_kind, resolve, train
from seqlab.core.errors import BadInput

_started = None  # in a pool worker: the queue that run_one tells which run it begins


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 0.5


def die_with_parent(parent: int) -> None:
    """End this process when its parent `parent` dies, however it dies: a SIGKILLed `seqlab sweep` must not
    leave workers training on, unseen, into its run directories (each run resumes from its last atomic
    checkpoint when the sweep is run again). On Linux the kernel sends SIGKILL (PR_SET_PDEATHSIG); on any
    platform a daemon thread also watches for the parent's PID to change (the process is re-parented)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watch below still ends the worker
            pass
    if os.getppid() != parent:  # the parent died before the request above was in place
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="seqlab-parent-watch", daemon=True).start()


def _init_worker(threads: int, started=None, parent: int | None = None) -> None:
    """A pool worker: torch's thread pools sized before torch loads; Ctrl-C is the parent's to handle; the
    worker dies with its parent."""
    global _started
    if parent is not None:
        die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    _started = started


def run_one(label: str, kind: str, config: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """Train (or resume) one run and return what its final evaluation said, or what it raised."""
    if _started is not None:
        _started.put(label)
    try:
        import torch

        t0 = time.perf_counter()  # after the import: a worker's first run should not pay for it
        torch.set_num_threads(threads)  # a config's own train.threads still wins, inside train
        k = get_kind(kind)
        summary = train(Path(run_dir), resolve(k, config), k, quiet=True)
        return {"label": label, "status": "finished", "step": summary["step"], "final_eval": summary["final_eval"],
                "seconds": time.perf_counter() - t0}
    except Exception as e:  # anything a run raises is this run's failure, not the sweep's
        return failure(label, e, traceback.format_exc())


def failure(label: str, e: BaseException, tb: str = "") -> dict[str, Any]:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return {"label": label, "status": "failed", "type": type(e).__name__, "message": msg, "traceback": tb}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1



def run_pool(jobs: list[tuple], workers: int, threads: int, record: Callable[[dict], None],
             say: Callable[[str], None] = lambda line: None) -> None:
    """Jobs on a pool of spawned processes. On Ctrl-C the workers are stopped where they are: every
    checkpoint is written atomically, so each run resumes from its last one.

    A worker that dies (killed, out of memory) breaks the whole pool, and every run in it with it. The runs
    that had not begun go on in a fresh pool; each that was under way is tried again alone afterwards,
    resuming from its checkpoint, so only a run whose own worker dies is marked failed."""
    queue, alone, stalls = list(jobs), [], 0
    while queue or alone:
        batch, width = (queue, workers) if queue else ([alone.pop(0)], 1)
        queue = []
        unfinished, started, n_done = _pool_batch(batch, width, threads, record)
        if not unfinished:
            continue
        labels = {job[0] for job in unfinished}
        # A run alone whose worker died killed it itself. A pool that broke twice running nothing (its
        # workers die as they start) will not run these either.
        stalls = 0 if n_done or started & labels else stalls + 1
        if width == 1 or stalls == 2:
            for job in unfinished:
                record(failure(job[0], BrokenProcessPool()) | {"message": "its worker process died (killed, or out of memory?)"})
            continue
        again = [job for job in unfinished if job[0] in started]
        alone += again
        queue += [job for job in unfinished if job[0] not in started]
        waiting = len(unfinished) - len(again)
        say(f"a worker process died (killed, or out of memory?): {waiting} run{'s' * (waiting != 1)} not begun go on "
            f"in a fresh pool" + (f"; tried again alone: {', '.join(job[0] for job in again)}" if again else ""))


def _pool_batch(jobs: list[tuple], workers: int, threads: int,
                record: Callable[[dict], None]) -> tuple[list[tuple], set[str], int]:
    """Run `jobs` on one pool; returns the jobs a dead worker left unfinished, the labels of every run
    that began, and how many runs ended (finished or failed by their own error)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    started = ctx.SimpleQueue()
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, started, os.getpid()))
    futures = {pool.submit(run_one, *job): job for job in jobs}
    unfinished, n_done = [], 0
    try:
        for fut in as_completed(futures):
            try:
                record(fut.result())
                n_done += 1
            except BrokenProcessPool:
                unfinished.append(futures[fut])
    except KeyboardInterrupt:
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    labels = set()
    while not started.empty():
        labels.add(started.get())
    return unfinished, labels, n_done


def connect_ray(address: str | None) -> bool:
    """Connect to Ray at `address`, or start a local instance on this machine's cores; True where this
    call started it (and so the sweep shuts it down at its end)."""
    import logging

    import ray

    if ray.is_initialized():  # a caller (a notebook, a test) already connected
        return False
    _probe(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=available_cores(), include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BadInput(f"cannot start or reach Ray{' at ' + address if address else ''} ({str(e).splitlines()[0]})") from None
    return True


def _probe(address: str | None) -> None:
    """A host:port that nothing answers at is refused at once; Ray itself retries for minutes."""
    import socket

    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address or "")
    if not m:
        return  # "auto", or no address: Ray says itself what it cannot find
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as e:
        raise BadInput(f"cannot reach Ray at {address} ({e.strerror or type(e).__name__})") from None


def run_ray(jobs: list[tuple], threads: int, record: Callable[[dict], None]) -> None:
    """The same jobs as Ray tasks of `threads` CPUs each. Paths are absolute; on a cluster every node
    needs seqlab installed and the sweep directory on a shared filesystem."""
    import ray

    remote = ray.remote(num_cpus=threads, max_retries=0)(run_one)
    refs = {remote.remote(*job): job[0] for job in jobs}
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                label = refs.pop(ref)
                try:
                    record(ray.get(ref))
                except Exception as e:  # the task's process died, or Ray lost it
                    record(failure(label, e))
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
