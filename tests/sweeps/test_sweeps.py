"""Sweeps: a sweep file's configs trained on a local pool of processes (or Ray), skipped when finished,
resumed when not; a failing run listed while the others finish; bad input refused before anything is
written; the summary's CSV and plot."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

# A text task that trains in about a second (tests/conftest.py's TINY, as sections).
TINY = {"task": {"name": "addition", "max_len": 3},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
        "train": {"batch_size": 16, "steps": 12, "eval_every": 6, "eval_n": 8, "log_every": 3,
                  "checkpoint_every": 6, "warmup": 2, "threads": 1}}


def write_sweep(path: Path, configs: list[dict], out: Path | None = None, extra: str = "") -> Path:
    text = f"CONFIGS = {json.dumps(configs)}\n" + (f"OUT = {str(out)!r}\n" if out else "") + extra
    path.write_text(text.replace("true", "True").replace("false", "False").replace("null", "None"))
    return path


def tiny(**sections) -> dict:
    return {k: {**TINY[k], **sections.get(k, {})} for k in TINY}


def checkpoint_step(run_dir: Path) -> int | None:
    latest = run_dir / "checkpoints" / "latest.json"
    return json.loads(latest.read_text())["step"] if latest.exists() else None


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """2 sizes x 2 seeds on a pool of 2 workers."""
    from seqlab.sweeps.sweep import load_sweep, run_sweep

    d = tmp_path_factory.mktemp("sweep")
    configs = [tiny(model={"d_model": dm}, train={"seed": s}) for dm in (16, 32) for s in (0, 1)]
    file = write_sweep(d / "grid.py", configs, d / "out")
    result = run_sweep(load_sweep(file), workers=2)
    return file, d / "out", result


@pytest.mark.slow
def test_local_pool_trains_every_config(grid):
    file, out, result = grid
    assert len(result["finished"]) == 4 and not result["failed"] and not result["skipped"]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["file"] == str(file.resolve()) and meta["varying"] == ["model.d_model", "train.seed"]
    labels = [r["label"] for r in meta["runs"]]
    assert labels[0].startswith("d_model=16,seed=0-") and len(set(labels)) == 4
    for r in meta["runs"]:
        run = out / "runs" / r["label"]
        assert checkpoint_step(run) == 12
        stored = json.loads((run / "config.json").read_text())
        assert stored["model"]["d_model"] == r["config"]["model"]["d_model"]
        assert any("eval_exact_match" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    assert not (out / "failures.json").exists()


@pytest.mark.slow
def test_rerun_skips_finished_runs(grid, cli):
    file, out, _ = grid
    before = snapshot(out / "runs")
    code, _, err = cli("sweep", file)
    assert code == 0, err
    assert "0 finished now, 4 finished before, 0 failed" in err
    assert snapshot(out / "runs") == before  # no new metrics lines, no checkpoint rewritten


@pytest.mark.slow
def test_summary_writes_csv_table_and_plot(grid, cli):
    file, out, _ = grid
    code, stdout, err = cli("sweep", file, "--summary")
    assert code == 0, err
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert list(rows[0])[:5] == ["label", "status", "model.d_model", "train.seed", "exact_match"]
    assert {(r["model.d_model"], r["train.seed"]) for r in rows} == {("16", "0"), ("16", "1"), ("32", "0"), ("32", "1")}
    assert all(r["status"] == "finished" and r["step"] == "12" and 0 <= float(r["exact_match"]) <= 1 for r in rows)
    assert (out / "plots" / "exact_match.png").stat().st_size > 1000
    assert "exact_match over seeds" in stdout  # seeds vary: the pooled table
    code, _, err = cli("sweep", file, "--summary", "--metric", "loss", "--by", "seed", "--spread", "std")
    assert code == 0, err
    assert (out / "plots" / "loss.png").is_file()
    code, _, err = cli("sweep", file, "--summary", "--metric", "bleu")
    assert code == 2 and "no run reports 'bleu'" in err


@pytest.mark.slow
def test_failing_run_is_listed_and_the_others_finish_then_resume(cli, tmp_path):
    """train.lr=1e30 diverges at step 2 (RunFailed, as `seqlab train` exits 1); the other run finishes.
    Raising train.steps and rerunning resumes the finished run where it stopped."""
    good, bad = tiny(train={"steps": 6}), tiny(train={"steps": 6, "lr": 1e30, "warmup": 0})
    file = write_sweep(tmp_path / "fails.py", [good, bad], tmp_path / "out")
    code, _, err = cli("sweep", file, "--workers", "2")
    assert code == 1, err
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert [(f["index"], f["type"]) for f in failures] == [(1, "RunFailed")] and "loss became nan" in failures[0]["message"]
    assert f"failed: {failures[0]['label']}" in err and "1 finished now" in err and "Traceback" not in err
    good_dir = next(p for p in (tmp_path / "out" / "runs").iterdir() if p.name != failures[0]["label"])
    assert checkpoint_step(good_dir) == 6
    # the same configs with more steps: the same run directories, resumed
    file = write_sweep(tmp_path / "fails.py", [tiny(), {**bad, "train": {**bad["train"], "steps": 12}}], tmp_path / "out")
    code, _, err = cli("sweep", file, "--workers", "2")
    assert code == 1 and "0 new, 2 to resume" in err, err
    assert checkpoint_step(good_dir) == 12
    steps = [json.loads(line)["step"] for line in (good_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # continued, not restarted


@pytest.mark.parametrize("body, needle", [
    (f"CONFIGS = [{TINY!r}, {{'model': {{'n_layer': 2}}}}]",
     "CONFIGS[1]: unknown key 'model.n_layer' (did you mean 'model.n_layers'?)"),
    (f"CONFIGS = [{TINY!r}, 'addition']", "CONFIGS[1] is a str, not a mapping"),
    ("def configs():\n    return [{'task': 'mqar', 'train': {'steps': 0}}]", "configs()[0]: invalid value for 'train'"),
    ("CONFIGS = []", "must be a non-empty list"),
    ("X = 1", "defines neither CONFIGS"),
    ("CONFIGS = [{'task': 'addition'}] * 2", "CONFIGS[0] and CONFIGS[1] have the same label"),
    (f"CONFIGS = [{TINY!r}]\ndef label(c):\n    return 'a/b'", "label(CONFIGS[0]) gave 'a/b'"),
    ("import nonexistent_module_xyz", "line 2: ModuleNotFoundError"),
])
def test_bad_sweep_file_exits_2_and_writes_nothing(cli, tmp_path, body, needle):
    file = tmp_path / "bad.py"
    file.write_text(f"OUT = {str(tmp_path / 'out')!r}\n{body}\n")
    code, _, err = cli("sweep", file)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not (tmp_path / "out").exists()


def test_bad_options_and_folders_exit_2(cli, tmp_path):
    file = write_sweep(tmp_path / "s.py", [tiny()], tmp_path / "out")
    for args, needle in ((["--backend", "slurm"], "unknown --backend 'slurm'"), (["--workers", "0"], "at least 1"),
                         (["--ray-address", "auto"], "goes with --backend ray"), (["--metric", "loss"], "go with --summary"),
                         (["--summary"], "no sweep in"), ([tmp_path / "missing.py"], "does not exist")):
        target = [] if args and isinstance(args[0], Path) else [file]
        code, _, err = cli("sweep", *target, *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _, err = cli("sweep", file)
    assert code == 2 and "is not a sweep directory" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_ray_backend_without_ray_says_how_to_install_it(cli, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    file = write_sweep(tmp_path / "r.py", [tiny()], tmp_path / "out")
    code, _, err = cli("sweep", file, "--backend", "ray")
    assert code == 2 and "pip install -e '.[ray]'" in err and not (tmp_path / "out").exists(), err


@pytest.mark.slow
def test_ray_backend_runs_the_same_sweep(cli, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray backend is an optional extra: pip install -e '.[ray]'")
    file = write_sweep(tmp_path / "r.py", [tiny(train={"seed": s}) for s in (0, 1)], tmp_path / "out")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local instance, two workers
    try:
        code, _, err = cli("sweep", file, "--backend", "ray")
    finally:
        ray.shutdown()
    assert code == 0, err
    assert "2 finished now" in err and "Ray, 1 CPU per run" in err
    assert [checkpoint_step(p) for p in sorted((tmp_path / "out" / "runs").iterdir())] == [12, 12]


def _pool_workers(parent: int) -> list[int]:
    """The pids of the spawned pool workers that are children of `parent` (not Python's resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmd:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the pool's workers through /proc")
def test_a_killed_worker_fails_no_run(tmp_path):
    """SIGKILL one pool worker mid-sweep (as the out-of-memory killer would): the broken pool's runs are
    tried again, those under way each alone from their checkpoints, and every run finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    steps = 400
    configs = [tiny(train={"seed": s, "steps": steps, "checkpoint_every": 20, "eval_every": steps}) for s in (0, 1)]
    file = write_sweep(tmp_path / "kill.py", configs, tmp_path / "out")
    sweep = subprocess.Popen([sys.executable, "-m", "seqlab", "sweep", str(file), "--workers", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and sweep.poll() is None and time.monotonic() < deadline:
        started = [p for p in (tmp_path / "out" / "runs").glob("*") if checkpoint_step(p)] \
            if (tmp_path / "out" / "runs").exists() else []
        workers = _pool_workers(sweep.pid)
        if started and workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, err = sweep.communicate(timeout=600)
    assert killed is not None, "the sweep ended before a worker could be killed"
    assert sweep.returncode == 0, err
    assert "a worker process died" in err and "Traceback" not in err
    assert "2 finished now, 0 finished before, 0 failed" in err
    for run in (tmp_path / "out" / "runs").iterdir():
        assert checkpoint_step(run) == steps
        logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert logged == sorted(set(logged)) and logged[-1] == steps  # resumed, no step logged twice


def test_pool_retry_rules(monkeypatch):
    """The scheduling of run_pool with the pool faked: a run under way when the pool broke is tried again
    alone and is failed only if it dies alone; runs not begun go on; a pool that keeps breaking before any
    run begins fails what is left instead of looping."""
    from seqlab.sweeps import backends as sweeps_backends

    def fake(script):
        calls = []

        def batch(jobs, width, threads, record):
            calls.append(([j[0] for j in jobs], width))
            unfinished, started, n_done = script(jobs, width)
            for job in jobs:
                if job not in unfinished:
                    record({"label": job[0], "status": "finished"})
            return unfinished, started, n_done
        return batch, calls

    jobs = [(label,) for label in "abc"]

    def a_dies_once(batch, width):  # the first pool breaks while "a" runs; alone, it finishes
        if len(batch) == 3:
            return batch, {"a"}, 0
        return [], {b[0] for b in batch}, len(batch)
    batch, calls = fake(a_dies_once)
    monkeypatch.setattr(sweeps_backends, "_pool_batch", batch)
    results, said = [], []
    sweeps_backends.run_pool(jobs, 2, 1, results.append, said.append)
    assert calls == [(["a", "b", "c"], 2), (["b", "c"], 2), (["a"], 1)]
    assert sorted(r["label"] for r in results) == ["a", "b", "c"] and all(r["status"] == "finished" for r in results)
    assert "tried again alone: a" in said[0]

    def a_kills_its_worker(batch, width):
        if any(b[0] == "a" for b in batch):
            return batch, {"a"}, 0
        return [], {b[0] for b in batch}, len(batch)
    batch, calls = fake(a_kills_its_worker)
    monkeypatch.setattr(sweeps_backends, "_pool_batch", batch)
    results = []
    sweeps_backends.run_pool(jobs, 2, 1, results.append)
    assert {r["label"]: r["status"] for r in results} == {"a": "failed", "b": "finished", "c": "finished"}

    def never_starts(batch, width):
        return batch, set(), 0
    batch, calls = fake(never_starts)
    monkeypatch.setattr(sweeps_backends, "_pool_batch", batch)
    results = []
    sweeps_backends.run_pool(jobs, 2, 1, results.append)
    assert len(calls) == 2 and [r["status"] for r in results] == ["failed"] * 3


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the pool's workers through /proc")
def test_workers_die_with_a_killed_sweep(tmp_path):
    """SIGKILL the `seqlab sweep` process itself mid-sweep: its pool workers stop within seconds, rather
    than train on, unseen, into the run directories."""
    import os
    import signal
    import subprocess
    import sys
    import time

    steps = 100_000
    configs = [tiny(train={"seed": s, "steps": steps, "checkpoint_every": 20, "eval_every": steps}) for s in (0, 1)]
    file = write_sweep(tmp_path / "orphans.py", configs, tmp_path / "out")
    sweep = subprocess.Popen([sys.executable, "-m", "seqlab", "sweep", str(file), "--workers", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        runs = tmp_path / "out" / "runs"
        while time.monotonic() < deadline and sweep.poll() is None:
            workers = _pool_workers(sweep.pid)
            if len(workers) == 2 and runs.exists() and sum(checkpoint_step(p) is not None for p in runs.iterdir()) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2 and sweep.poll() is None, "the workers never started training"
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "pool workers outlived the killed sweep"
    finally:
        if sweep.poll() is None:
            sweep.kill()
        for w in workers:  # where they did outlive it: leave no trainer running
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_a_label_longer_than_a_folder_name_may_be_is_refused_up_front(tmp_path):
    from seqlab.core.errors import BadInput
    from seqlab.sweeps.sweep import load_sweep

    file = write_sweep(tmp_path / "long.py", [tiny()], tmp_path / "out", extra="def label(c):\n    return 'x' * 300\n")
    with pytest.raises(BadInput, match="300 bytes long, and a folder name may have at most 255") as e:
        load_sweep(file)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    ok = write_sweep(tmp_path / "ok.py", [tiny()], tmp_path / "out", extra="def label(c):\n    return 'x' * 255\n")
    assert load_sweep(ok).runs[0].label == "x" * 255


def test_a_sweep_folder_holding_only_seqlab_leftovers_is_a_new_sweep(tmp_path):
    """The lock file of a sweep killed before it wrote sweep.json, and its half-written sweep.json, are
    seqlab's own: the folder is taken as new, not refused as a stranger's."""
    from seqlab.sweeps.sweep import check_sweep_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / ".seqlab.lock").write_text("123\n")
    (out / ".sweep.json.abcd1234.tmp").write_text('{"na')
    check_sweep_dir(out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not a sweep directory"):
        check_sweep_dir(out)
