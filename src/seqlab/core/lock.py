"""An exclusive lock on a folder, so two seqlab processes never write one run directory at once.

The lock is an OS file lock (`flock`) on `FOLDER/.seqlab.lock`: the kernel releases it when the holding
process dies, however it dies, so a SIGKILL never leaves a stale lock behind. The holder writes its PID
into the file, which is how a refused process can say who holds the folder.

A lock is re-entrant within one process (a recipe's folder is locked, then each run directory inside it;
a sweep run in a worker locks its own run directory), and released when the last `with` leaves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from seqlab.core.errors import BadInput

LOCK_NAME = ".seqlab.lock"

_held: dict[Path, list] = {}  # folder -> [open lock file, depth]: the locks this process holds


def holder(folder: str | Path) -> int | None:
    """The PID written by the process that holds (or last held) `folder`'s lock; None where unknown."""
    try:
        return int((Path(folder) / LOCK_NAME).read_text().strip() or "x")
    except (OSError, ValueError):
        return None


def is_locked_here(folder: str | Path) -> bool:
    return Path(folder).absolute() in _held


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "run directory") -> Iterator[None]:
    """Hold the exclusive lock of `folder` (made if missing) for the `with` block; one line naming the
    holder's PID where another process holds it."""
    key = Path(folder).absolute()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        key.mkdir(parents=True, exist_ok=True)
        f = open(key / LOCK_NAME, "a+")
    except OSError as e:
        raise BadInput(f"cannot write to {folder} ({e.strerror or e})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        pid = holder(key)
        who = f"process {pid}" if pid is not None else "another process"
        raise BadInput(f"{folder} is in use by {who} (another seqlab command is writing this {what}); "
                       f"wait for it to end or choose another --out") from None
    except OSError as e:  # a file system without locks: say so rather than write unguarded
        f.close()
        raise BadInput(f"cannot lock {folder} ({e.strerror or e})") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
    except OSError:  # read-only: the lock holds all the same; the PID is only for the message
        pass
    _held[key] = [f, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            f.close()  # closing the last descriptor releases the lock
