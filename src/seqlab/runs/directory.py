"""The run directory of DESIGN.md, for every kind of run: config.json, checks before anything is written,
the newest checkpoint's weights.

Every check of the user's input happens before anything is written, so a bad command never changes an
existing run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from seqlab.core.errors import BadInput
from seqlab.core.io import is_partial_write, read_json, write_json
from seqlab.core.lock import LOCK_NAME
from seqlab.core.version import __version__
from seqlab.runs.kind import RunKind, stored_kind
from seqlab.train.checkpoint import latest_checkpoint, load_checkpoint
from seqlab.train.config import TRACKING_KEYS
from seqlab.train.distributed import world

CONFIG_META_KEYS = ("seqlab_version", "git_commit")
WRITE_PROBE = ".seqlab-write-probe-"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The sections of a YAML or JSON config file: one line of BadInput for a file that is none, nests too
    deep, or whose aliases expand it beyond MAX_CONFIG_NODES values (see BoundedYAMLLoader)."""
    from seqlab.core.configs import MAX_NESTING, check_nesting, int_digit_limit

    try:
        with open(path) as f:
            data = yaml.load(f, Loader=BoundedYAMLLoader) if str(path).endswith((".yaml", ".yml")) else json.load(f)
    except FileNotFoundError:
        raise BadInput(f"config file {path} does not exist") from None
    except BadInput as e:
        raise BadInput(f"config file {path} {e}") from None
    except RecursionError:
        raise BadInput(f"config file {path} nests lists or mappings more than {MAX_NESTING} levels deep; "
                       "no setting does") from None
    except Exception as e:  # yaml or json syntax
        if "integer string conversion" in str(e):  # int() of more digits than Python's limit
            raise BadInput(f"config file {path} holds a number of more than {int_digit_limit()} digits; "
                           "no setting takes a number that large") from None
        raise BadInput(f"config file {path} is not valid YAML/JSON ({type(e).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"config file {path} must hold a mapping of sections (task, format, model, train)")
    check_nesting(data, f"config file {path}")
    return data


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def stored_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run directory as a mapping, without the seqlab version and commit; one line for a
    folder that is not a run."""
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
    return {k: v for k, v in data.items() if k not in CONFIG_META_KEYS}


def read_config(run_dir: Path, kind: RunKind):
    """A run directory's config, typed as `kind`'s."""
    return kind.resolve(stored_config(run_dir))


def article(title: str) -> str:
    return f"an {title}" if title[0] in "aeiou" else f"a {title}"


def check_kind(run_dir: Path, kind: RunKind) -> None:
    """Refuse a run directory that holds another kind's run, naming the kind it holds."""
    held = stored_kind(run_dir) if is_run_dir(run_dir) else None
    if held is not None and held is not kind:
        raise BadInput(f"{run_dir} holds {article(held.title)} run, not {article(kind.title)} run; choose a new --out")


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


RUN_SUBFOLDERS = ("checkpoints", "eval", "tensorboard", "wandb")  # what a train command writes into


def check_run_writable(out: Path) -> None:
    """Everything `train` will write, checked before it writes anything: the run directory (config.json,
    the lock, files replaced atomically there), each of its folders that exists, and metrics.jsonl opened
    for appending, so a read-only part is found before config.json or metrics.jsonl change."""
    out = Path(out)
    check_writable(out)
    for name in RUN_SUBFOLDERS:
        if (out / name).is_dir():
            check_writable(out / name)
    for path in [out / "metrics.jsonl", *(out / "checkpoints").glob("step_*")]:
        if path.is_dir():
            check_writable(path)  # an older checkpoint folder is removed once a newer one is written
        elif path.exists():
            try:
                open(path, "a").close()
            except OSError as e:
                raise BadInput(f"cannot write to {path} ({e.strerror or e})") from None


def first_difference(old, new) -> str | None:
    """The first difference that makes `new` a different experiment from `old` (train.steps may grow, and
    trackers may change)."""
    a, b = old.to_json(), new.to_json()
    for k in ("steps", *TRACKING_KEYS):
        a["train"].pop(k, None), b["train"].pop(k, None)
    for section in a:
        if not isinstance(a[section], dict):  # a top-level value such as a run's "kind"
            if a[section] != b.get(section):
                return f"{section}: {a[section]!r} there, {b.get(section)!r} here"
            continue
        diff = _first_key_difference(a[section], b[section], section)
        if diff:
            return diff
    return None


def _first_key_difference(a: dict, b: dict, prefix: str) -> str | None:
    """The first dotted key (into nested sections such as model.mamba) whose values differ."""
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            diff = _first_key_difference(x, y, f"{prefix}.{k}")
            if diff:
                return diff
        elif x != y:
            return f"{prefix}.{k}: {x!r} there, {y!r} here"
    return None


def is_own_leftover(name: str) -> bool:
    """What seqlab itself may leave in a folder before it holds a run: a write probe (under torchrun another
    process of the same run may be probing it right now), the lock file, or the temporary file of a first
    config.json write that was killed before its rename."""
    return name.startswith(WRITE_PROBE) or name == LOCK_NAME or is_partial_write(name)


def prepare(out: Path, kind: RunKind, config):
    """Check that `out` can hold this run of `kind`; returns the config to train (the stored one on resume,
    the kind's default where none is given)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory")
    if out.exists() and is_run_dir(out):
        check_kind(out, kind)
        stored = read_config(out, kind)
        if config is None:
            return stored
        diff = first_difference(stored, config)
        if diff:
            raise BadInput(f"{out} holds a different run ({diff}); choose a new --out")
        return config
    if out.exists() and any(not is_own_leftover(p.name) for p in out.iterdir()):
        raise BadInput(f"{out} exists and is not a seqlab run directory; choose a new --out")
    return config if config is not None else kind.config_cls()


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


def newest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint folder; a run without one is bad input."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise BadInput(f"{run_dir} has no checkpoint yet")
    return ckpt


def load_newest_weights(run_dir: Path, model) -> int:
    """The newest checkpoint's weights into `model`; returns its step."""
    return load_checkpoint(newest_checkpoint(run_dir), model)["step"]


# The longest length (or in-context k) `seqlab eval --lengths` takes, and the most lengths at once. Evaluation
# generates --n problems at every length and decodes each answer token by token: a text length is operand
# digits (the longest a numeric task can even write is Python's 4,300-digit limit, and a sequence of three
# such operands is far past any model's context: model.max_positions defaults to 1,024 tokens), an in-context
# k is prompt points (2 tokens each; model.max_points defaults to 101). Beyond this an evaluation runs for
# hours without a line of output.
MAX_EVAL_LENGTH = 1000


def parse_lengths(text: str, most: int = MAX_EVAL_LENGTH, why: str = "") -> list[int]:
    """'1-50' or '5,10,20' or '12': at most `most` lengths, each at most `most`; `why` says where `most` comes
    from (a caller that knows the run passes its own bound, e.g. the model's context)."""
    from seqlab.core.configs import shown_value

    limit = f"at most {most} ({why or 'a longer evaluation would run for hours without output'})"

    def number(part: str) -> int:
        part = part.strip()
        if not part.isascii() or not part.isdigit():
            raise ValueError(part)
        if len(part) > len(str(most)) or int(part) > most:  # never int() of thousands of digits
            raise BadInput(f"--lengths goes beyond {most} (got {shown_value(part)}): lengths must be {limit}")
        return int(part)

    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = (number(x) for x in part.split("-"))
                out += range(a, b + 1)
            else:
                out.append(number(part))
            if len(out) > most:
                raise BadInput(f"--lengths names more than {most} lengths ({shown_value(text)}): name {limit}")
    except BadInput:
        raise
    except ValueError:
        raise BadInput(f"--lengths expects A-B or a list like 5,10,20, got {shown_value(text)}") from None
    if not out:
        raise BadInput(f"--lengths names no length (A-B needs A <= B), got {shown_value(text)}")
    if min(out) < 1:
        raise BadInput(f"--lengths must name positive lengths, got {shown_value(text)}")
    return out


# -- bounded YAML (load_config_file) ---------------------------------------------------------------
# A config file is a few dozen settings; a schedule or a list of lengths makes it a few thousand values at most.
# YAML aliases let a file of a few hundred bytes stand for billions of them ("billion laughs"), which hang
# whatever walks the result (overrides, validation, config.json).
MAX_CONFIG_NODES = 100_000


def expanded_size(root: yaml.Node) -> int:
    """How many nodes a composed YAML document holds with every alias expanded: each distinct node is counted
    once and its expanded size reused (so a bomb is measured without expanding it), without recursion. A
    document that contains itself (an alias inside its own anchor) is refused."""
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # nodes whose children are being counted: the path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, counted = stack.pop()
        if counted:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children(node))
            open_nodes.discard(id(node))
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise BadInput("contains itself (a YAML alias inside its own anchor)")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)]


class BoundedYAMLLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a document whose aliases expand it beyond MAX_CONFIG_NODES nodes."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            size = expanded_size(node)
            if size > MAX_CONFIG_NODES:
                raise BadInput(f"expands through its aliases to about {min(size, 10**300):.3g} values, more than the "
                               f"{MAX_CONFIG_NODES} a config may hold")
        return node
