"""The rich consoles seqlab prints with: a usable width whatever COLUMNS says, and a closed pipe taken as
its reader being done (`seqlab tasks | head -1` exits 0), not as an error."""

from __future__ import annotations

import os
import sys

from rich.console import Console

FALLBACK_WIDTH = 80  # rich's own width where the output is not a terminal


def width_from_env() -> int | None:
    """None where COLUMNS is unset or a positive number (rich reads it then); a fallback where it is 0,
    negative or not a number, which rich would take as a width of nothing and print empty lines."""
    cols = os.environ.get("COLUMNS")
    if cols is None:
        return None
    try:
        return None if int(cols) > 0 else FALLBACK_WIDTH
    except ValueError:
        return FALLBACK_WIDTH


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into a closed pipe fails quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (a test's capture): nothing will be flushed to a pipe
        pass


class SeqlabConsole(Console):
    def on_broken_pipe(self) -> None:  # rich exits 1 here; a reader that stopped early is not a failure
        silence_stdout()
        raise SystemExit(0)


def console(stderr: bool = False, **kwargs) -> Console:
    return SeqlabConsole(stderr=stderr, width=width_from_env(), **kwargs)
