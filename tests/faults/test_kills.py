"""SIGKILL inside every kind of write a training run makes, then a rerun of the same command: the run must
end equal, bitwise, to one that was never interrupted. Also kills at random times (hypothesis), kills in a
resumed run that extends the steps, and kills inside `seqlab eval`."""

from __future__ import annotations

import json
import shutil

import pytest
from harness import RUN, assert_same_run, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

# Each point a run writes, with a kill where a half-done write would hurt most. `nth` picks an early and a
# late occurrence where the write recurs.
KILLS = [
    {"at": "before_replace", "path": "*/config.json"},
    {"at": "half_replace", "path": "*/config.json"},
    {"at": "metrics_line", "nth": 1},
    {"at": "metrics_line", "nth": 6},
    {"at": "safetensors", "path": "*/model.safetensors", "nth": 1},
    {"at": "safetensors", "path": "*/model.safetensors", "nth": 3},
    {"at": "safetensors", "path": "*/optimizer.safetensors", "nth": 2},
    {"at": "half_replace", "path": "*/state.json", "nth": 2},
    {"at": "before_replace", "path": "*/checkpoints/step_*", "nth": 1},
    {"at": "before_replace", "path": "*/checkpoints/step_*", "nth": 3},
    {"at": "before_replace", "path": "*/latest.json", "nth": 1},
    {"at": "half_replace", "path": "*/latest.json", "nth": 3},
    {"at": "after_replace", "path": "*/latest.json", "nth": 2},
    {"at": "after_replace", "path": "*/latest.json", "nth": 4},  # the last checkpoint, before old ones go
    {"at": "rmtree", "path": "*/checkpoints/step_*", "nth": 1},
    {"at": "rmtree", "path": "*/checkpoints/step_*", "nth": 2},
]


def kill_name(f: dict) -> str:
    return f"{f['at']}-{f.get('path', '*').split('/')[-1]}-{f.get('nth', 1)}"


@pytest.fixture(scope="module")
def uninterrupted(forks, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    assert forks.run("train", *RUN, "--quiet", "--out", out)["code"] == 0
    return snapshot(out)


@pytest.mark.parametrize("fault", KILLS, ids=kill_name)
def test_a_kill_inside_a_write_then_a_rerun_ends_as_an_uninterrupted_run(forks, uninterrupted, tmp_path, fault):
    out = tmp_path / "run"
    killed = forks.run("train", *RUN, "--quiet", "--out", out, faults=[fault])
    assert killed["signal"] == 9 and killed["fired"], f"the fault never fired: {killed}"
    rerun = forks.run("train", *RUN, "--quiet", "--out", out)
    assert rerun["code"] == 0, rerun["output"]
    assert "Traceback" not in rerun["output"]
    assert_same_run(snapshot(out), uninterrupted)


def test_two_kills_in_a_row_inside_checkpoint_writes(forks, uninterrupted, tmp_path):
    out = tmp_path / "run"
    for fault in ({"at": "half_replace", "path": "*/latest.json", "nth": 2},
                  {"at": "safetensors", "path": "*/optimizer.safetensors", "nth": 1}):
        assert forks.run("train", *RUN, "--quiet", "--out", out, faults=[fault])["signal"] == 9
    assert forks.run("train", *RUN, "--quiet", "--out", out)["code"] == 0
    assert_same_run(snapshot(out), uninterrupted)


# A run of 12 steps, resumed with train.steps=24: the resume rewrites config.json's train section and
# drops the metrics lines logged after its checkpoint; kills inside those rewrites.
FIRST = [a for a in RUN if not a.startswith("train.steps=")] + ["train.steps=12", "train.checkpoint_every=5"]
LONGER = [a for a in FIRST if not a.startswith("train.steps=")] + ["train.steps=24"]


@pytest.fixture(scope="module")
def extended(forks, tmp_path_factory):
    out = tmp_path_factory.mktemp("extended") / "run"
    assert forks.run("train", *FIRST, "--quiet", "--out", out)["code"] == 0
    assert forks.run("train", *LONGER, "--quiet", "--out", out)["code"] == 0
    return snapshot(out)


# Each chain: the resumed sessions killed one after another, each at its fault.
RESUME_CHAINS = {
    "config-before-rename": [{"at": "before_replace", "path": "*/config.json"}],
    "config-after-rename": [{"at": "after_replace", "path": "*/config.json"}],
    # killed at step 21 (checkpoint 20, a torn line), then inside the rewrite that drops the torn line
    "metrics-rewrite": [{"at": "metrics_line", "nth": 3}, {"at": "before_replace", "path": "*/metrics.jsonl"}],
    "metrics-lines": [{"at": "metrics_line", "nth": 3}, {"at": "metrics_line", "nth": 2}],
}


@pytest.mark.parametrize("chain", RESUME_CHAINS.values(), ids=RESUME_CHAINS.keys())
def test_kills_inside_a_resume_that_adds_steps(forks, extended, tmp_path, chain):
    out = tmp_path / "run"
    assert forks.run("train", *FIRST, "--quiet", "--out", out)["code"] == 0
    for fault in chain:
        killed = forks.run("train", *LONGER, "--quiet", "--out", out, faults=[fault])
        assert killed["signal"] == 9 and killed["fired"], killed
    assert forks.run("train", *LONGER, "--quiet", "--out", out)["code"] == 0
    assert_same_run(snapshot(out), extended)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(times=st.lists(st.floats(0.05, 1.2), min_size=1, max_size=3))
def test_kills_at_random_times_then_a_rerun_end_as_an_uninterrupted_run(forks, uninterrupted, tmp_path_factory, times):
    out = tmp_path_factory.mktemp("random") / "run"
    for t in times:
        r = forks.run("train", *RUN, "--quiet", "--out", out, kill_after=t)
        assert r["signal"] == 9 or r["code"] == 0, r["output"]
    final = forks.run("train", *RUN, "--quiet", "--out", out)
    assert final["code"] == 0, final["output"]
    assert_same_run(snapshot(out), uninterrupted)


@pytest.mark.parametrize("fault", [
    {"at": "before_replace", "path": "*/eval/by_length.json"},
    {"at": "half_replace", "path": "*/eval/by_length.json"},
    {"at": "half_replace", "path": "*/plots/*"},
], ids=kill_name)
def test_a_kill_inside_eval_then_a_rerun_writes_what_a_clean_eval_writes(forks, tmp_path, fault):
    clean, out = tmp_path / "clean", tmp_path / "run"
    assert forks.run("train", *RUN, "--quiet", "--out", clean)["code"] == 0
    shutil.copytree(clean, out)
    assert forks.run("eval", clean, "--lengths", "1-3", "--n", "20")["code"] == 0
    killed = forks.run("eval", out, "--lengths", "1-3", "--n", "20", faults=[fault])
    assert killed["signal"] == 9 and killed["fired"], killed
    assert forks.run("eval", out, "--lengths", "1-3", "--n", "20")["code"] == 0
    got, want = (json.loads((d / "eval" / "by_length.json").read_text()) for d in (out, clean))
    assert {**got, "run_dir": None} == {**want, "run_dir": None}
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(p.name for p in (clean / "plots").iterdir())
