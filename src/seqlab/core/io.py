"""Atomic file writes and JSON helpers: a killed process never leaves a half-written file."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which is not safe once threads run.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, then a rename. The file gets
    the mode a plain `open` would give (0644 under the usual umask), not mkstemp's private 0600, so reports
    and runs stay readable by others on a shared machine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# The name `atomic_write_bytes` gives the temporary file of FILE (mkstemp's 8 characters in the middle).
PARTIAL_WRITE = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


def is_partial_write(name: str) -> bool:
    """Whether a file name is one `atomic_write_bytes` gives its temporary file: what a write killed before
    its rename leaves beside the file it was writing."""
    return PARTIAL_WRITE.fullmatch(name) is not None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float as None: JSON has no NaN, and other tools' parsers
    (JavaScript's, jq) refuse the `NaN` that Python's json writes."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def jsonl_lines(path: str | Path) -> list[tuple[str, dict | None]]:
    """Each line of a JSONL file as (its text, its record), the record None where the line is not a JSON
    object: the raw text lets a caller keep or set aside a line exactly as it was written."""
    if not Path(path).exists():
        return []
    with open(path, "rb") as f:
        raw = f.read()
    out = []
    for line in raw.decode("utf-8", errors="replace").splitlines(keepends=True):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            record = None
        out.append((line, record if isinstance(record, dict) else None))
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSONL file. A line that is not a JSON object (a torn last line from a killed
    writer, a line damaged by hand) is skipped: a reader never loses the good lines after a bad one."""
    return [record for _, record in jsonl_lines(path) if record is not None]
