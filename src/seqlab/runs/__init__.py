"""The run lifecycle, written once for every kind of run: prepare, train, resume, load, evaluate, summarize.

    from seqlab import runs
    config = runs.make_config({"task": {"name": "addition", "max_len": 5}, "train": {"steps": 300}})
    summary = runs.train("runs/add5", config)      # the same keys for every kind
    run = runs.load("runs/add5")                    # = seqlab.load: model, config, generate, score, hooks

A kind of run (text.py, token.py, icl.py) holds only what differs; kind.py is its contract. Nothing outside
this folder names a kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqlab.core.configs import apply_overrides
from seqlab.runs import text, icl, token  # noqa: F401,I001  (registers the kinds in the order `seqlab tasks` lists them)
from seqlab.runs.directory import (
    is_run_dir, load_config_file, load_newest_weights, parse_lengths, read_config, stored_config,
)
from seqlab.runs.kind import KINDS, EvalRequest, RunKind, get_kind, kind_of_config, kind_of_task, stored_kind
from seqlab.runs.lifecycle import check_startable, resolve, resolve_command, train
from seqlab.runs.loaded import LoadedRun, Prompt
from seqlab.runs.text import evaluate_by_length
from seqlab.runs.token import evaluate_tokens
from seqlab.runs.icl import evaluate_icl


def make_config(data: dict[str, Any] | None = None, overrides: list[str] = ()):
    """The typed config of a mapping of sections (and key=value overrides), of the kind its task picks."""
    data = apply_overrides(data or {}, list(overrides)) if overrides else (data or {})
    return resolve(kind_of_config(data), data)


def load(run_dir: str | Path, device: str | None = None) -> LoadedRun:
    """A trained run of any kind, with the newest checkpoint's weights, on `device` (default: the run's own
    device setting), in eval mode."""
    from seqlab.train import pick_device

    run_dir = Path(run_dir)
    data = stored_config(run_dir)  # one line for a folder that is not a run
    k = stored_kind(run_dir)
    config = resolve(k, data)
    dev = pick_device(device or config.train.device)
    task, fmt, model = k.load_parts(config)
    step = load_newest_weights(run_dir, model)
    return LoadedRun(run_dir, k, config, task, model.to(dev).eval(), fmt, step)


__all__ = ["KINDS", "EvalRequest", "LoadedRun", "Prompt", "RunKind", "check_startable", "evaluate_by_length",
           "evaluate_icl", "evaluate_tokens", "get_kind", "is_run_dir", "kind_of_config", "kind_of_task", "load",
           "load_config_file", "make_config", "parse_lengths", "read_config", "resolve", "resolve_command",
           "stored_kind", "train"]
