"""A run killed with SIGKILL and resumed ends with the same metrics as an uninterrupted run (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

ARGS = [a for a in TINY if not a.startswith(("train.steps", "train.checkpoint_every", "train.eval_every", "train.log_every"))]
ARGS += ["train.steps=300", "train.checkpoint_every=20", "train.eval_every=50", "train.log_every=10"]


def _train(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "seqlab", "train", *ARGS, "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _latest_step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # Wall-clock figures differ between runs; everything else must be identical.
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p = _train(killed)
    deadline = time.time() + 120
    while _latest_step(killed) < 40 and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    step_at_kill = _latest_step(killed)
    assert 0 < step_at_kill < 300, "the run must be killed part-way"

    resumed = _train(killed)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    reference = _train(ref)
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    got, want = _metrics(killed), _metrics(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert got == want
    assert any("eval_exact_match" in r for r in got)


def test_finished_run_is_not_trained_again(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("train", *TINY, "--out", out, "--quiet")[0] == 0
    before = (out / "metrics.jsonl").read_text()
    code, _, err = cli("train", "--out", out, "--quiet")
    assert code == 0
    assert (out / "metrics.jsonl").read_text() == before


def test_more_steps_extend_a_finished_run(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("train", *TINY, "--out", out, "--quiet")[0] == 0
    more = [a if not a.startswith("train.steps") else "train.steps=18" for a in TINY]
    assert cli("train", *more, "--out", out, "--quiet")[0] == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 18 and steps == sorted(steps)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):

    from seqlab.core.errors import RunFailed
    from seqlab.models.decoder import Decoder
    from seqlab.runs import make_config, train

    real = Decoder.loss
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        calls["n"] += 1
        loss = real(self, *a, **k)
        return loss * float("nan") if calls["n"] > 8 else loss

    monkeypatch.setattr(Decoder, "loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(RunFailed, match="loss became nan at step 9"):
        train(out, make_config({}, TINY), quiet=True)
    assert _latest_step(out) == 6
    state = json.loads((out / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert state["step"] == 6


def test_a_changed_mixer_setting_is_named_by_its_dotted_key(cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", *TINY, "model.mixers=mamba", "model.mamba.d_state=4", "--out", run, "--quiet")
    assert code == 0, err
    code, _, err = cli("train", *TINY, "model.mixers=mamba", "model.mamba.d_state=8", "--out", run, "--quiet")
    assert code == 2 and "holds a different run (model.mamba.d_state: 4 there, 8 here)" in err
