"""The three kinds of training run, and how a config says which it is.

A config whose task is an in-context function class trains an "icl" run (icl_runs.py), one whose task
is a token task a "token" run (token_runs.py), and any other a "text" run: a task rendered in a text
format (runs.py). Sweeps pick the kind of each config here, and resolve, check and train it through
the same functions `seqlab train` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KINDS = ("text", "token", "icl")
# What a kind's periodic evaluation reports and a summary reads first (metrics.jsonl's eval_<metric>).
MAIN_METRIC = {"text": "exact_match", "token": "accuracy", "icl": "error"}


def kind_of_task(name: str | None) -> str:
    from seqlab.tasks.function_classes import FUNCTIONS
    from seqlab.tasks.token_base import TOKEN_TASKS

    return "icl" if name in FUNCTIONS else "token" if name in TOKEN_TASKS else "text"


def kind_of_config(data: dict[str, Any]) -> str:
    """The kind of run a config (a mapping of sections) describes: its "kind" where it names one (as a
    run's config.json does), else from its task's name; no task is the default text task."""
    if data.get("kind") in KINDS:
        return data["kind"]
    task = data.get("task")
    return kind_of_task(task if isinstance(task, str) else task.get("name") if isinstance(task, dict) else None)


def _functions(kind: str):
    """(resolve, prepare, train) of a kind: config from sections, the read-only check of a run
    directory against a config, and training (or resuming) it."""
    if kind == "icl":
        from seqlab.runs.icl import prepare_icl_run, resolve_icl_config, train_icl_run

        return resolve_icl_config, prepare_icl_run, train_icl_run
    if kind == "token":
        from seqlab.runs.token import prepare_token_run, resolve_token_config, train_token_run

        return resolve_token_config, prepare_token_run, train_token_run
    from seqlab.runs.text import prepare_run, resolve_config, train_run

    return resolve_config, prepare_run, train_run


def resolve(kind: str, data: dict[str, Any]):
    """The typed config of `kind` for a mapping of sections (BadInput naming the first problem). A run's
    config.json reads back too: its seqlab version and commit are not config."""
    from seqlab.runs.text import CONFIG_META_KEYS

    data = {k: v for k, v in data.items() if k not in CONFIG_META_KEYS and not (kind == "text" and k == "kind")}
    return _functions(kind)[0](data, [])


def resolve_args(kind: str, base: dict[str, Any] | None, overrides: list[str]):
    """The typed config of `kind` from `seqlab train`'s arguments: a config file's sections (or None) and
    key=value overrides."""
    return _functions(kind)[0](base, overrides)


def check_startable(kind: str, config, run_dir: Path) -> None:
    """Everything `train` would refuse before it writes: the config's own cross-checks (position tables
    long enough) and a run directory holding another run or something else. Writes nothing."""
    if kind == "text":
        from seqlab.formats.format import Format
        from seqlab.runs.text import check_positions_fit

        task = config.make_task()
        check_positions_fit(config, Format(config.format, task, config.format_position_ids), [task.config.max_len])
    _functions(kind)[1](Path(run_dir), config)


def train(kind: str, run_dir: Path, config, quiet: bool = True) -> dict[str, Any]:
    """Train (or resume) a run of `kind` in `run_dir`; the summary `seqlab train` prints from."""
    return _functions(kind)[2](Path(run_dir), config, quiet=quiet)
