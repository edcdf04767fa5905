"""A sweep's folder: the checks made before anything is written in it (labels the file system can hold,
a folder that is a sweep's or new) and the leftovers of killed writers cleared under its lock."""

from __future__ import annotations

import os
from pathlib import Path

from seqlab.core.errors import BadInput
from seqlab.core.io import PARTIAL_WRITE
from seqlab.runs.directory import is_own_leftover


# Room under a run directory for the longest path seqlab writes there (a checkpoint's temporary file:
# checkpoints/step-NNNNNNNN/.model.safetensors.XXXXXXXX.tmp and the like), with a margin.
RUN_DIR_DEPTH = 128


def _limit(folder: Path, name: str, default: int) -> int:
    """os.pathconf's `name` (PC_NAME_MAX, PC_PATH_MAX) on the nearest existing folder of `folder`."""
    probe = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    try:
        value = os.pathconf(probe, name)
    except (OSError, ValueError, AttributeError):  # not POSIX, or the file system does not say
        return default
    return value if value and value > 0 else default


def check_label_lengths(out: Path, labels: list[str], source: str) -> None:
    """A label names a folder: refuse one longer than the file system allows (NAME_MAX bytes per name, 255
    almost everywhere), or a run directory too deep to write, before anything is written."""
    absolute = out.absolute()
    name_max = _limit(absolute, "PC_NAME_MAX", 255)
    path_max = _limit(absolute, "PC_PATH_MAX", 4096)
    for i, lab in enumerate(labels):
        n = len(os.fsencode(lab))
        if n > name_max:
            raise BadInput(f"{source}[{i}]: label '{lab[:40]}...' is {n} bytes long, and a folder name may have at "
                           f"most {name_max} here; give label() shorter names")
        depth = len(os.fsencode(str(absolute / "runs" / lab))) + RUN_DIR_DEPTH
        if depth > path_max:
            raise BadInput(f"{source}[{i}]: the run directory {absolute / 'runs' / lab[:40]}... is too deep for this "
                           f"file system (paths of at most {path_max} bytes); choose a shorter OUT or label")


STATE_FILES = ("sweep.json", "failures.json")  # written only under the sweep directory's lock


def _foreign_entries(out: Path) -> list[Path]:
    """What is in `out` besides seqlab's own lock file, write probes and killed writers' temporary files."""
    return [p for p in out.iterdir() if not is_own_leftover(p.name)]


def clear_leftovers(out: Path, names: tuple[str, ...]) -> None:
    """Remove the temporary files that killed writers of `names` left in `out`. Only under `out`'s lock,
    where no live writer of these files can be."""
    for p in out.iterdir():
        m = PARTIAL_WRITE.fullmatch(p.name)
        if m and m.group(1) in names and p.is_file():
            p.unlink(missing_ok=True)


def check_sweep_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory; set OUT (or --out) to a new folder")
    if out.is_dir() and _foreign_entries(out) and not (out / "sweep.json").is_file():
        raise BadInput(f"{out} exists and is not a sweep directory (no sweep.json); set OUT (or --out) to a new folder")
