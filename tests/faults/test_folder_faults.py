"""Folders under concurrent and killed commands: a second `seqlab sweep`, `reproduce` or `self-improve` on a
folder another process holds is refused with one line naming that process; a command SIGKILLed inside a
write (of a sweep's state, an export, a report, a recipe's results.json) leaves its folder valid, and
running it again ends as an uninterrupted run does.

Kills are injected in a child Python process that runs the CLI with one write function replaced: on its
k-th matching call it writes half of the data to a temporary file, as a writer cut short would, or stops
before a rename, and sends itself SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

HOLD = """
import sys, time
from seqlab.core.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""

# argv: write|replace, match, k, seqlab's args...: SIGKILL on the k-th matching write (half written) or
# rename (not done). A match "=PATH" is the exact destination; anything else a substring of it.
KILL_AT = r"""
import os, signal, sys, tempfile
mode, match, k, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
hits = [0]

def matches(path):
    path = os.fspath(path)
    return path == match[1:] if match.startswith("=") else match in path

def hit(path):
    if matches(path):
        hits[0] += 1
        return hits[0] == k
    return False

if mode == "write":
    import seqlab.core.io as io
    real = io.atomic_write_bytes

    def write(path, data):
        if hit(path):
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, _ = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
            os.write(fd, data[: len(data) // 2])
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data)

    io.atomic_write_bytes = write
else:
    real = os.replace

    def replace(src, dst, *a, **kw):
        if hit(dst):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *a, **kw)

    os.replace = replace
sys.argv = ["seqlab", *args]
from seqlab.cli import main
main()
"""

TINY_SECTIONS = {"task": {"name": "addition", "max_len": 3}, "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
                 "train": {"batch_size": 8, "steps": 6, "eval_every": 6, "eval_n": 4, "log_every": 3,
                           "checkpoint_every": 6, "warmup": 2, "threads": 1}}
SELF_IMPROVE = ["task.name=copy", "task.max_len=3", "format.reverse_output=false", "model.n_layers=1",
                "model.d_model=32", "model.n_heads=2", "model.position=abacus", "train.steps=10", "train.batch_size=8",
                "train.eval_every=10", "train.eval_n=4", "self_improve.rounds=1", "self_improve.n_per_length=4",
                "self_improve.steps_per_round=4", "self_improve.decay_steps=2", "self_improve.eval_n=2"]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _one_line_error(code, out, err) -> str:
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def killed_run(mode: str, match: str, k: int, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`seqlab ARGS` in a child process that SIGKILLs itself at the k-th matching write or rename."""
    done = subprocess.run([sys.executable, "-c", KILL_AT, mode, match, str(k), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=CHILD_ENV)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-3000:])
    return done


def snapshot(d: Path, hidden: bool = True) -> dict[str, str]:
    """Every file under `d` by its hash (seqlab's lock file aside, which only holds a PID)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".seqlab.lock" and (hidden or not p.name.startswith("."))}


def leftovers(d: Path) -> list[str]:
    """Temporary files (half-written by a killed writer) anywhere under `d`."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.tmp"))


# -- a folder in use -----------------------------------------------------------------------------
class Holder:
    """Another process holding `folder`'s lock, as a running seqlab command would."""

    def __init__(self, folder: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                                     env=CHILD_ENV)
        assert self.proc.stdout.readline().strip() == "locked"

    def __enter__(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def _sweep_file(tmp_path: Path, out: Path, configs: list[dict] | None = None) -> Path:
    file = tmp_path / "grid.py"
    file.write_text(f"CONFIGS = {configs or [TINY_SECTIONS]!r}\nOUT = {str(out)!r}\n")
    return file


def test_a_sweep_on_a_folder_in_use_is_refused(cli, tmp_path):
    out = tmp_path / "out"
    file = _sweep_file(tmp_path, out)
    with Holder(out) as pid:
        line = _one_line_error(*cli("sweep", file))
    assert f"process {pid}" in line and "in use" in line
    assert sorted(p.name for p in out.iterdir()) == [".seqlab.lock"]  # nothing written


def test_a_recipe_on_a_folder_in_use_is_refused(cli, tmp_path):
    out = tmp_path / "out"
    with Holder(out) as pid:
        line = _one_line_error(*cli("reproduce", "addition", "--budget", "smoke", "--out", out, "--quiet"))
    assert f"process {pid}" in line and "in use" in line
    assert sorted(p.name for p in out.iterdir()) == [".seqlab.lock"]


def test_self_improvement_on_a_folder_in_use_is_refused(cli, tmp_path):
    out = tmp_path / "out"
    with Holder(out) as pid:
        line = _one_line_error(*cli("self-improve", *SELF_IMPROVE, "--out", out, "--quiet"))
    assert f"process {pid}" in line and "in use" in line
    assert sorted(p.name for p in out.iterdir()) == [".seqlab.lock"]


# -- killed inside a write -----------------------------------------------------------------------
def _runs_state(out: Path) -> dict[str, tuple]:
    """Each run directory of a sweep by its finished step and its files (not their timings)."""
    state = {}
    for run in sorted((out / "runs").iterdir()):
        latest = json.loads((run / "checkpoints" / "latest.json").read_text())
        state[run.name] = (latest["step"], sorted(snapshot(run, hidden=False)))
    return state


@pytest.mark.slow
def test_a_sweep_killed_writing_its_state_resumes_as_if_whole(cli, tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "out"
    file = _sweep_file(tmp_path, out)
    code, _, err = cli("sweep", file, "--workers", "1", "--out", whole)
    assert code == 0, err

    killed_run("write", "sweep.json", 1, "sweep", file, "--workers", "1")  # the first write of a new sweep
    assert not (out / "sweep.json").exists() and leftovers(out)
    code, _, err = cli("sweep", file, "--workers", "1")  # the half-written file is no stranger's: it resumes
    assert code == 0, err
    assert "1 finished now" in err
    assert (out / "sweep.json").read_text() == (whole / "sweep.json").read_text()
    assert _runs_state(out) == _runs_state(whole) and not leftovers(out)

    before = (out / "sweep.json").read_bytes()
    killed_run("write", "sweep.json", 1, "sweep", file, "--workers", "1")  # a rerun killed: the old state stays
    assert (out / "sweep.json").read_bytes() == before
    code, _, err = cli("sweep", file, "--workers", "1")
    assert code == 0 and "1 finished before" in err, err
    assert (out / "sweep.json").read_bytes() == before and not leftovers(out)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny Llama-shaped runs: an export of `a` is replaced by one of `b`."""
    from seqlab.runs import make_config, train

    root = tmp_path_factory.mktemp("fault-runs")
    llama = ["model.mlp=swiglu", "model.norm=rmsnorm", "model.position=rope"]
    train(root / "a", make_config({}, TINY + llama), quiet=True)
    train(root / "b", make_config({}, TINY + llama + ["model.tie_embeddings=false"]), quiet=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mode, match, k", [
    ("write", "config.json", 1),  # the export's first file, in its temporary folder
    ("write", "seqlab_export.json", 1),  # its last
    ("replace", "=OUT", 1),  # between the two renames: the previous export moved aside, the new one not in
])
def test_an_export_killed_midway_leaves_the_previous_one_and_reruns_whole(cli, two_runs, tmp_path, mode, match, k):
    whole, parent = tmp_path / "whole" / "hf", tmp_path / "exports"
    out = parent / "hf"
    parent.mkdir()
    assert cli("export", two_runs / "b", "--to", "hf", whole)[0] == 0
    assert cli("export", two_runs / "a", "--to", "hf", out)[0] == 0
    previous = snapshot(out)

    killed_run(mode, match.replace("OUT", str(out.resolve())), k, "export", two_runs / "b", "--to", "hf", out)
    if mode == "replace":  # the previous export waits beside OUT_DIR; the next export, even one that
        assert not out.exists()  # fails (this run has no weights), puts it back first
        no_weights = tmp_path / "no-weights"
        no_weights.mkdir()
        shutil.copy(two_runs / "b" / "config.json", no_weights / "config.json")
        assert "no checkpoint" in _one_line_error(*cli("export", no_weights, "--to", "hf", out))
    assert snapshot(out) == previous

    killed_run(mode, match.replace("OUT", str(out.resolve())), k, "export", two_runs / "b", "--to", "hf", out)
    code, _, err = cli("export", two_runs / "b", "--to", "hf", out)
    assert code == 0, err
    assert snapshot(out) == snapshot(whole)
    assert [p.name for p in parent.iterdir()] == ["hf"]  # nothing the killed exports left beside it


@pytest.mark.slow
def test_a_report_killed_midway_reruns_whole(cli, two_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_runs / "a", run)
    code, _, err = cli("report", run)
    assert code == 0, err
    whole = snapshot(run, hidden=False)
    (run / "report.md").unlink()
    (run / "report.html").unlink()

    killed_run("write", "report.html", 1, "report", run)  # report.md written, report.html half
    assert (run / "report.md").is_file() and not (run / "report.html").exists()
    code, _, err = cli("report", run)
    assert code == 0, err
    assert snapshot(run, hidden=False) == whole


def _results(out: Path) -> dict:
    """results.json without what a second run measures anew (times) or says about this machine."""
    data = json.loads((out / "results.json").read_text())
    for k in ("wall_seconds", "platform"):
        data.pop(k)
    for k in ("wall_seconds", "train_seconds"):
        data["metrics"].pop(k, None)
    return data


@pytest.mark.slow
def test_a_recipe_killed_writing_results_resumes_as_if_whole(cli, tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "out"
    args = ("reproduce", "addition", "--budget", "smoke", "--quiet")
    code, _, err = cli(*args, "--out", whole)
    assert code == 0, err

    killed_run("write", "results.json", 1, *args, "--out", out)
    assert not (out / "results.json").exists() and (out / "recipe.json").is_file()
    code, _, err = cli(*args, "--out", out)  # its own recipe's folder: resumed, not refused
    assert code == 0, err
    assert _results(out) == _results(whole) and not leftovers(out)
    assert sorted(snapshot(out, hidden=False)) == sorted(snapshot(whole, hidden=False))

    before = (out / "results.json").read_bytes()
    killed_run("write", "results.json", 1, *args, "--out", out)  # a rerun killed: the previous results stay
    assert (out / "results.json").read_bytes() == before
