"""A run directory under faults other than a kill: a second writer, a damaged file of every kind a command
reads, a read-only or full folder, a missing tracker, a run that diverges before its first checkpoint.
Each is refused (or survived) with one line and no traceback, and leaves the run directory as it was."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import RUN, assert_same_run, snapshot

from seqlab.core.lock import LOCK_NAME


def files_of(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory with its bytes, the lock file aside (it holds the last writer's PID)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, forks):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert forks.run("train", *RUN, "--quiet", "--out", out)["code"] == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


# -- a second writer ---------------------------------------------------------------------------------

HOLD = "import sys, time; from seqlab.core.lock import folder_lock\nwith folder_lock(sys.argv[1]):\n" \
       "    print('held', flush=True); time.sleep(120)"


@contextlib.contextmanager
def holding(folder: Path):
    """Another process holding `folder`'s lock for the `with` block; yields it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_second_train_on_a_run_being_written_is_refused_naming_the_holder(run_copy, forks):
    before = files_of(run_copy)
    longer = [a for a in RUN if not a.startswith("train.steps=")] + ["train.steps=30"]
    with holding(run_copy) as holder:
        r = forks.run("train", *longer, "--quiet", "--out", run_copy)
        assert r["code"] == 2, r["output"]
        assert r["output"].count("\n") == 1 and f"in use by process {holder.pid}" in r["output"]
    assert files_of(run_copy) == before
    # The holder was killed: the kernel dropped its lock, and nothing stale is left to refuse the next run.
    assert forks.run("train", *longer, "--quiet", "--out", run_copy)["code"] == 0


@pytest.mark.slow
def test_two_train_processes_started_together_on_one_new_directory(tmp_path):
    """Both really start: one trains, the other is refused with one line; the run is one run's alone."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "seqlab", "train", *RUN, "train.steps=60", "--quiet", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by process" in refused and "Traceback" not in refused
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one run's lines, not two interleaved


# -- metrics.jsonl is history ----------------------------------------------------------------------------

def test_a_malformed_middle_line_of_metrics_is_set_aside_not_truncated(run_copy, cli):
    path = run_copy / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    damaged = "".join(lines[:2] + ['{"step": 7, "loss": \n'] + lines[2:])
    path.write_text(damaged)
    code, _, err = cli("train", "--quiet", "--out", run_copy)
    assert code == 0
    assert path.read_text() == "".join(lines)  # every good line kept, in order
    assert (run_copy / "metrics.jsonl.unreadable-1").read_text() == damaged
    note = [line for line in err.splitlines() if "unreadable" in line]
    assert len(note) == 1 and "metrics.jsonl.unreadable-1" in note[0] and "line 3" in note[0]


@pytest.mark.parametrize("bad", ["[1, 2]\n", '"text"\n', '{"loss": 1.0}\n', '{"step": "12"}\n'])
def test_metrics_lines_that_are_not_records_are_set_aside(run_copy, cli, bad):
    path = run_copy / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4] + [bad] + lines[4:]))
    code, _, _ = cli("train", "--quiet", "--out", run_copy)
    assert code == 0 and path.read_text() == "".join(lines)
    assert (run_copy / "metrics.jsonl.unreadable-1").exists()


def test_a_resume_with_nothing_to_drop_does_not_rewrite_metrics(run_copy, cli):
    path = run_copy / "metrics.jsonl"
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert cli("train", "--quiet", "--out", run_copy)[0] == 0
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_readers_keep_the_good_lines_after_a_bad_one(tmp_path):
    from seqlab.core.io import read_jsonl

    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n[3]\n{"step": 4}\n{"ste')
    assert read_jsonl(path) == [{"step": 1}, {"step": 4}]


# -- damaged files of every kind a command reads -----------------------------------------------------------

DAMAGE = {
    "config.json": ["", "{", "[]", "null", '{"task": 5}', "\xff\xfe"],
    "checkpoints/latest.json": ["", "{", "[]", '{"dir": 7}', '{"dir": "../../elsewhere"}', '{"dir": "step_99999999"}'],
    "checkpoints/step_00000024/state.json": ["", "{", "[]", '"x"', "{}", '{"step": "24"}', '{"step": -1}',
                                             '{"step": 24, "param_groups": []}',
                                             '{"step": 24, "loss_window": "x", "param_groups": []}'],
    "checkpoints/step_00000024/model.safetensors": [b"", b"\x00" * 10, "half", b"\x80\x04\x95 pickle"],
    "checkpoints/step_00000024/optimizer.safetensors": [b"", "half", b"{}"],
}
CASES = [(f, d) for f, ds in DAMAGE.items() for d in ds]


def damage(path: Path, how) -> None:
    if how == "half":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(how if isinstance(how, bytes) else how.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("name,how", CASES, ids=[f"{f.split('/')[-1]}-{i}" for i, (f, _) in enumerate(CASES)])
@pytest.mark.parametrize("command", ["resume", "longer", "eval"])
def test_a_damaged_file_gets_one_line_and_changes_nothing(run_copy, cli, name, how, command):
    damage(run_copy / name, how)
    before = files_of(run_copy)
    args = {"resume": ["train", "--quiet", "--out", run_copy],
            "longer": ["train", *[a for a in RUN if not a.startswith("train.steps=")], "train.steps=30", "--quiet",
                       "--out", run_copy],
            "eval": ["eval", run_copy, "--lengths", "1-2", "--n", "4"]}[command]
    code, _, err = cli(*args)
    if code == 0:
        # Only a damage the command never reads may pass: eval reads neither the optimizer moments nor the
        # trainer's entries of state.json, only its step.
        assert command == "eval" and (name.endswith("optimizer.safetensors") or '"step": 24,' in str(how)), err
        return
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert files_of(run_copy) == before


# -- read-only and full folders ----------------------------------------------------------------------------

@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """`mount OPTIONS target` for the block, or skip where this machine lets no test mount (not root)."""
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a test folder here ({r.stderr.strip() or 'mount failed'})")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def read_only(folder: Path):
    with mounted(folder, "--bind", str(folder)):
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make a read-only test folder here ({r.stderr.strip()})")
        yield folder


@pytest.mark.parametrize("part", ["checkpoints", "checkpoints/step_00000018", "."])
def test_a_resume_into_a_read_only_part_is_refused_before_anything_changes(run_copy, cli, part):
    before = files_of(run_copy)
    longer = [a for a in RUN if not a.startswith("train.steps=")] + ["train.steps=30"]
    with read_only(run_copy / part):
        code, _, err = cli("train", *longer, "--quiet", "--out", run_copy)
    assert code == 2 and "cannot write to" in err and "Read-only" in err, err
    assert files_of(run_copy) == before


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes_once_there_is_room(tmp_path, forks):
    clean = tmp_path / "clean"
    assert forks.run("train", *RUN, "--quiet", "--out", clean)["code"] == 0
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=200k", "tmpfs") as small:
        r = forks.run("train", *RUN, "--quiet", "--out", small / "run")
        assert r["code"] == 1, r["output"]
        assert "No space left on device" in r["output"] and "Traceback" not in r["output"]
        assert len(r["output"].strip().splitlines()) == 1
        assert not list((small / "run" / "checkpoints").glob(".tmp_*"))  # no half checkpoint left taking space
        subprocess.run(["mount", "-o", "remount,size=20m", str(small)], check=True)
        assert forks.run("train", *RUN, "--quiet", "--out", small / "run")["code"] == 0
        assert_same_run(snapshot(small / "run"), snapshot(clean))


# -- trackers and divergence -------------------------------------------------------------------------------

@pytest.fixture
def without(monkeypatch):
    """Make packages look uninstalled to the tracker check."""
    import importlib.util

    real = importlib.util.find_spec

    def hide(*names):
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n in names else real(n, *a, **k))
    return hide


def test_a_missing_tracker_on_a_finished_run_is_refused_and_config_json_stays(run_copy, cli, without):
    without("wandb")
    before = files_of(run_copy)
    code, _, err = cli("train", *RUN, "train.tracking=wandb", "--quiet", "--out", run_copy)
    assert code == 2 and "pip install 'seqlab[wandb]'" in err
    assert files_of(run_copy) == before


def test_a_missing_tracker_leaves_no_new_directory(tmp_path, cli, without):
    without("tensorboard")
    code, _, err = cli("train", *RUN, "train.tracking=tensorboard", "--quiet", "--out", tmp_path / "new")
    assert code == 2 and "tensorboard" in err
    assert not (tmp_path / "new").exists()


def test_a_run_that_diverges_before_its_first_checkpoint_says_none_was_kept(tmp_path, cli, monkeypatch):
    from seqlab.train import distributed

    real = distributed.global_mean
    monkeypatch.setattr(distributed, "global_mean", lambda *a: (real(*a)[0], float("nan")))
    code, _, err = cli("train", *RUN, "--quiet", "--out", tmp_path / "run")
    assert code == 1 and "No checkpoint was written yet" in err and "last good checkpoint" not in err


def test_a_run_that_diverges_later_names_the_checkpoint_it_keeps(tmp_path, cli, monkeypatch):
    from seqlab.train import distributed

    real, calls = distributed.global_mean, [0]

    def late_nan(*a):
        calls[0] += 1
        loss, value = real(*a)
        return loss, float("nan") if calls[0] > 8 else value
    monkeypatch.setattr(distributed, "global_mean", late_nan)
    code, _, err = cli("train", *RUN, "--quiet", "--out", tmp_path / "run")
    assert code == 1 and "The checkpoint of step 6 is kept" in err


# -- output into pipes and odd terminals ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args", [["tasks"], ["tasks", "--json"], ["models"], ["recipes"]])
def test_a_reader_that_stops_early_is_not_a_failure(args):
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "Exception" not in err


@pytest.mark.parametrize("columns", ["0", "-5", "abc"])
def test_an_unusable_columns_value_still_prints(columns, monkeypatch):
    from seqlab.core.console import console

    monkeypatch.setenv("COLUMNS", columns)
    c = console(record=True, file=open(os.devnull, "w"))
    c.print("addition  a + b for non-negative integers")
    assert "addition  a + b" in c.export_text()
