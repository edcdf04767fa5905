"""metrics.jsonl on resume: keep the history a checkpoint stands on, never lose a line without saying so.

A resumed run logs again every step after its checkpoint, so the lines an earlier session logged after
that step are dropped (a resumed run's file then equals an uninterrupted run's). Everything else is
history and is kept line for line. A torn last line is what a killed writer leaves and is dropped; a
line that cannot be read anywhere else was damaged by something other than seqlab: the file is copied
aside whole (`metrics.jsonl.unreadable-N`) before the readable lines are kept, and one line on stderr
says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

from seqlab.core.io import atomic_write_bytes, atomic_write_text, jsonl_lines


def _step(record: dict | None) -> int | None:
    step = record.get("step") if record is not None else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def quarantine_name(path: Path) -> Path:
    n = 1
    while path.with_name(f"{path.name}.unreadable-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}.unreadable-{n}")


def keep_metrics_up_to(path: Path, step: int) -> None:
    """Rewrite `path` to its readable lines of steps up to `step`, only where that changes it."""
    path = Path(path)
    lines = jsonl_lines(path)
    if not lines:
        return
    torn = not lines[-1][0].endswith("\n") and _step(lines[-1][1]) is None
    if torn:
        lines = lines[:-1]
    bad = [i + 1 for i, (text, record) in enumerate(lines) if _step(record) is None and text.strip()]
    kept = [text if text.endswith("\n") else text + "\n"
            for text, record in lines if _step(record) is not None and _step(record) <= step]
    new = "".join(kept)
    old = path.read_bytes()
    if new.encode() == old:
        return
    if bad:
        aside = quarantine_name(path)
        atomic_write_bytes(aside, old)  # a copy first: killed here, the original is still in place
        sys.stderr.write(f"note: {path} has {len(bad)} unreadable line(s) (line {bad[0]} first); the file is "
                         f"kept whole as {aside.name} and its {len(kept)} readable line(s) up to step {step} stay\n")
    atomic_write_text(path, new)
