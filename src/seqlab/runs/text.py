"""Run directories: create, resume, load and evaluate a training run.

This module wires the layers together (task -> format -> data -> model -> trainer -> evaluation) and
owns the run-directory layout of DESIGN.md. The CLI and the recipes call it.

Every check of the user's input happens before anything is written, so a bad command never changes
an existing run directory.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from seqlab.core.version import __version__
from seqlab.core.configs import apply_overrides, parse_config
from seqlab.data.text import TrainStream, test_examples
from seqlab.core.errors import BadInput
from seqlab.eval.decode import exact_match
from seqlab.eval.plots import accuracy_by_length
from seqlab.formats.format import Format
from seqlab.core.io import read_json, write_json
from seqlab.models import TABLE_POSITIONS
from seqlab.models import build as build_model
from seqlab.train import RunConfig, Trainer, pick_device
from seqlab.train.checkpoint import latest_checkpoint, load_checkpoint
from seqlab.train.config import TRACKING_KEYS
from seqlab.train.distributed import world

CONFIG_META_KEYS = ("seqlab_version", "git_commit")


# -- configs -----------------------------------------------------------------------------------
def load_config_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) if str(path).endswith((".yaml", ".yml")) else __import__("json").load(f)
    except FileNotFoundError:
        raise BadInput(f"config file {path} does not exist") from None
    except Exception as e:  # yaml or json syntax
        raise BadInput(f"config file {path} is not valid YAML/JSON ({type(e).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"config file {path} must hold a mapping of sections (task, format, model, train)")
    return data


def resolve_config(base: dict[str, Any] | None = None, overrides: list[str] = ()) -> RunConfig:
    return parse_config(RunConfig, apply_overrides(base or {}, list(overrides)))


# -- building the pieces ---------------------------------------------------------------------
def build_parts(config: RunConfig):
    """(task, format, model) for a config, with every cross-check done before training starts."""
    task = config.make_task()
    fmt = Format(config.format, task, config.format_position_ids)
    model = build_model(config.model, fmt.tokenizer.vocab_size)
    check_positions_fit(config, fmt, [task.config.max_len])
    return task, fmt, model


def check_positions_fit(config: RunConfig, fmt: Format, lengths: list[int]) -> None:
    """Position tables are finite: the longest example must fit in model.max_positions."""
    if config.model.position not in TABLE_POSITIONS:
        return
    task = config.make_task()
    for n in lengths:
        ex = task.at_length(n).example(0, "test", 0)
        top = fmt.max_position(ex)
        if top >= config.model.max_positions:
            raise BadInput(
                f"length {n} needs position ids up to {top}, beyond model.max_positions={config.model.max_positions}"
            )


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# -- run directories -------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def run_kind(run_dir: Path) -> str | None:
    """The kind a run directory's config.json declares: "icl", "token" or "text" (no kind: a text-task
    run); None where there is no readable config."""
    try:
        data = read_json(Path(run_dir) / "config.json")
    except (OSError, ValueError):
        return None
    return data.get("kind", "text") if isinstance(data, dict) else None


def read_config_as(run_dir: Path, cls):
    """config.json of a run as `cls` (the seqlab version and commit stripped)."""
    data = read_json(Path(run_dir) / "config.json")
    return parse_config(cls, {k: v for k, v in data.items() if k not in CONFIG_META_KEYS})


def read_run_config(run_dir: Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise BadInput(f"{run_dir} does not exist")
    if not is_run_dir(run_dir):
        raise BadInput(f"{run_dir} is not a seqlab run directory (no config.json)")
    try:
        data = read_json(run_dir / "config.json")
    except (OSError, ValueError):
        raise BadInput(f"{run_dir}/config.json is unreadable") from None
    if not isinstance(data, dict):
        raise BadInput(f"{run_dir}/config.json is not a run config")
    return parse_config(RunConfig, {k: v for k, v in data.items() if k not in CONFIG_META_KEYS})


WRITE_PROBE = ".seqlab-write-probe-"


def check_writable(path: Path) -> None:
    """Fail early, with one line, where `path` (or the folder it would be made in) cannot be written.

    A real probe file, not os.access: root passes permission checks but not a read-only mount or an
    immutable folder."""
    path = Path(path).absolute()
    probe_dir = path if path.exists() else next(p for p in path.parents if p.exists())
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=WRITE_PROBE)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInput(f"cannot write to {probe_dir} ({e.strerror or e})") from None


def _same_run(old, new) -> str | None:
    """The first difference that makes `new` a different experiment from `old` (train.steps may grow, and
    trackers may change)."""
    a, b = old.to_json(), new.to_json()
    for k in ("steps", *TRACKING_KEYS):
        a["train"].pop(k, None), b["train"].pop(k, None)
    for section in a:
        if not isinstance(a[section], dict):  # a top-level value such as an ICL run's "kind"
            if a[section] != b.get(section):
                return f"{section}: {a[section]!r} there, {b.get(section)!r} here"
            continue
        for k in sorted(set(a[section]) | set(b[section])):
            if a[section].get(k) != b[section].get(k):
                return f"{section}.{k}: {a[section].get(k)!r} there, {b[section].get(k)!r} here"
    return None


def prepare_run(out: Path, config, read=read_run_config, default=RunConfig):
    """Check that `out` can hold this run; returns the config to train (the stored one on resume).
    `read` and `default` give another kind of run (in-context learning) the same checks."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory")
    if out.exists() and is_run_dir(out):
        stored = read(out)
        if config is None:
            return stored
        diff = _same_run(stored, config)
        if diff:
            raise BadInput(f"{out} holds a different run ({diff}); choose a new --out")
        return config
    # Probe files aside: under torchrun another process of the same run may be probing `out` right now.
    if out.exists() and any(not p.name.startswith(WRITE_PROBE) for p in out.iterdir()):
        raise BadInput(f"{out} exists and is not a seqlab run directory; choose a new --out")
    return config if config is not None else default()


def write_run_config(out: Path, config, resumed: bool) -> None:
    """config.json for a new run, or its train section again when a run resumes with more steps or other trackers."""
    if not world().is_main:  # under torchrun, rank 0 writes
        return
    if not resumed and not is_run_dir(out):
        write_json(out / "config.json", {**config.to_json(), "seqlab_version": __version__, "git_commit": git_commit()})
        return
    stored = read_json(out / "config.json")
    if config.train.to_json() != stored["train"]:  # more steps, other trackers
        write_json(out / "config.json", {**stored, "train": config.train.to_json()})


def make_evaluator(config: RunConfig, task, fmt, device):
    """Exact match on a fixed set of test examples, for periodic evaluation during training.

    By default the set holds equally many problems at every length of the training range (all
    operands of that length), so early stopping waits for the short and the long problems alike;
    `train.eval_length` evaluates at one length instead.
    """
    t = config.train
    lengths = [t.eval_length] if t.eval_length else list(range(task.config.min_len, task.config.max_len + 1))
    per_length = max(1, t.eval_n // len(lengths))
    pairs = [p for L in lengths for p in test_examples(task.at_length(L), fmt, t.seed, per_length)]

    def evaluate(model):
        return exact_match(model, pairs, fmt, task.slice_key, device=device)

    return evaluate


def train_run(out: Path, config: RunConfig | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) the run in `out`. Returns a summary with the final evaluation."""
    out = Path(out)
    config = prepare_run(out, config)
    torch.manual_seed(config.train.seed)  # before the model is built: its init depends on the seed
    task, fmt, model = build_parts(config)
    check_writable(out)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = pick_device(config.train.device)
    stream = TrainStream(task, fmt, config.train.seed, config.train.batch_size)
    trainer = Trainer(model, stream, config.train, out, make_evaluator(config, task, fmt, device), quiet=quiet)
    resumed = trainer.resume()  # reads (and checks) the checkpoint before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, config, resumed)
    t0 = time.perf_counter()
    final = trainer.fit() if not trainer.finished else {}
    return {"run_dir": str(out), "resumed": resumed, "step": trainer.step, "final_eval": final,
            "stopped_early": trainer.state.get("stopped_early", False), "wall_seconds": time.perf_counter() - t0,
            "train_seconds": trainer.state.get("train_seconds"), "n_params": model.n_params()}


def load_run(run_dir: Path, device: str | torch.device | None = None):
    """(config, task, format, model) of a run, with the newest checkpoint's weights, on `device`
    (default: the run's own device setting)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    device = pick_device(device or config.train.device)
    task, fmt, model = build_parts(config)
    load_newest_weights(run_dir, model)
    return config, task, fmt, model.to(device).eval()


def load_newest_weights(run_dir: Path, model) -> None:
    """The newest checkpoint's weights into `model`; a run without one is bad input."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise BadInput(f"{run_dir} has no checkpoint yet")
    load_checkpoint(ckpt, model)


def parse_lengths(text: str) -> list[int]:
    """'1-50' or '5,10,20' or '12'."""
    try:
        out: list[int] = []
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise BadInput(f"--lengths expects A-B or a list like 5,10,20, got '{text}'") from None
    if not out or min(out) < 1:
        raise BadInput(f"--lengths must name positive lengths, got '{text}'")
    return out


def evaluate_by_length(run_dir: Path, lengths: list[int], n: int, seed: int | None = None,
                       label: str = "by_length", device: str | None = None) -> dict[str, Any]:
    """Exact match on n test problems at each length; writes eval/<label>.json and plots/accuracy_by_length.png."""
    run_dir = Path(run_dir)
    config, task, fmt, model = load_run(run_dir, device)
    dev = next(model.parameters()).device
    check_positions_fit(config, fmt, lengths)
    check_writable(run_dir)
    seed = config.train.seed if seed is None else seed
    per_length: dict[int, dict[str, Any]] = {}
    for L in lengths:
        r = exact_match(model, test_examples(task.at_length(L), fmt, seed, n), fmt, task.slice_key, device=dev)
        per_length[L] = {"exact_match": r["exact_match"], "n": r["n"]}
    train_range = (task.config.min_len, task.config.max_len)
    result = {"run_dir": str(run_dir), "task": task.name, "slice_key": task.slice_key, "n": n, "seed": seed,
              "train_range": list(train_range), "step": read_json(latest_checkpoint(run_dir) / "state.json")["step"],
              "exact_match_by_length": {str(k): v["exact_match"] for k, v in per_length.items()}}
    write_json(run_dir / "eval" / f"{label}.json", result)
    accuracy_by_length({config.model.position: {k: v["exact_match"] for k, v in per_length.items()}},
                       run_dir / "plots" / "accuracy_by_length.png", train_range, title=f"{task.name}: exact match by length")
    return result
