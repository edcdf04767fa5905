"""Trackers beside metrics.jsonl: none by default, TensorBoard and W&B (offline) mirror its numbers exactly."""

import json
import struct
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _metrics(out) if "loss" in r}


def test_default_run_tracks_nothing_and_needs_no_tracker_package(tmp_path, cli, monkeypatch):
    for package in ("tensorboard", "torch.utils.tensorboard", "wandb"):
        monkeypatch.setitem(sys.modules, package, None)  # importing any of them would fail
    out = tmp_path / "run"
    assert cli("train", *TINY, "--out", out, "--quiet")[0] == 0
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists() and not (out / "tracking.json").exists()
    assert json.loads((out / "config.json").read_text())["train"]["tracking"] == []


@pytest.mark.parametrize("value, want", [("tensorboard", ["tensorboard"]), ("tensorboard,wandb", ["tensorboard", "wandb"]),
                                         ("[wandb]", ["wandb"]), ('["wandb"]', ["wandb"]), ("none", [])])
def test_tracking_on_the_command_line(value, want):
    from seqlab.runs import make_config

    assert make_config({}, [f"train.tracking={value}"]).train.tracking == want


@pytest.mark.parametrize("backend, package", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_missing_tracker_package_is_one_line_and_exit_2(tmp_path, cli, monkeypatch, backend, package):
    monkeypatch.setitem(sys.modules, package, None)
    code, _, err = cli("train", *TINY, f"train.tracking={backend}", "--out", tmp_path / "run", "--quiet")
    assert code == 2
    assert err.strip().splitlines() == [f"error: train.tracking={backend} needs the {backend} package: "
                                        f"pip install 'seqlab[{backend}]'"]


def _tensorboard_losses(out: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))  # purges what a resumed run's purge_step hides
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("loss")}


def test_tensorboard_mirrors_metrics_and_a_resume_logs_no_step_twice(tmp_path, cli):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert cli("train", *TINY, "train.tracking=tensorboard", "--out", out, "--quiet")[0] == 0
    want = _losses(out)
    assert sorted(want) == [3, 6, 9, 12]
    assert _tensorboard_losses(out) == pytest.approx(want, rel=1e-6)  # event files hold float32

    # As if killed after the step-6 checkpoint: the resumed session trains steps 7-12 again.
    (out / "checkpoints" / "latest.json").write_text(json.dumps({"step": 6, "dir": "step_00000006"}))
    assert cli("train", "--out", out, "--quiet")[0] == 0
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert _tensorboard_losses(out) == pytest.approx(_losses(out), rel=1e-6)


def test_trackers_may_be_turned_on_when_a_run_resumes(tmp_path, cli):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert cli("train", *TINY, "--out", out, "--quiet")[0] == 0
    more = [a if not a.startswith("train.steps") else "train.steps=18" for a in TINY]
    code, _, err = cli("train", *more, "train.tracking=tensorboard", "--out", out, "--quiet")
    assert code == 0, err
    assert sorted(_tensorboard_losses(out)) == [15, 18]
    assert json.loads((out / "config.json").read_text())["train"]["tracking"] == ["tensorboard"]


def _wandb_history(path: Path) -> list[dict]:
    """History rows of an offline run's .wandb file: a 7-byte header (":W&B", magic, version), then
    LevelDB-log records (crc32c, length, type) in 32 KiB blocks, each a wandb_internal Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, rows, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:  # zeroed padding
            pos += block - pos % block
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
    return rows


def _sessions(out: Path, run_id: str) -> list[Path]:
    """The offline folders of run `run_id`, one per session: offline-run-<time>-<id>, and -<id>-1, -2 ...
    where a session starts within the same second as the one before."""
    import re

    pattern = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?")
    return sorted(d for d in (out / "wandb").iterdir() if pattern.fullmatch(d.name))


def _settled_history(out: Path, run_id: str, losses: dict, timeout: float = 60.0) -> list[dict]:
    """The history rows of every offline session of `run_id`, read again until they hold a loss for each
    step of `losses` or `timeout` s pass: wandb's service process may still be writing the last records
    when run.finish() has returned (a process that exits waits for it; a test reading at once may not)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = [r for d in _sessions(out, run_id) for r in _wandb_history(d / f"run-{run_id}.wandb")]
        except Exception:  # a record cut off where the writer is
            if time.monotonic() > deadline:
                raise
            rows = []
        if {r["_step"] for r in rows if "loss" in r} >= set(losses) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@pytest.mark.slow
def test_wandb_offline_logs_the_metrics_and_a_resume_keeps_the_run_id(tmp_path, cli, monkeypatch):
    pytest.importorskip("wandb")
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)  # no key: the default mode is offline and nothing logs in
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no settings of this machine's user
    out = tmp_path / "run"
    assert cli("train", *TINY, "train.tracking=wandb", "train.wandb_project=tests", "--out", out, "--quiet")[0] == 0
    run_id = json.loads((out / "tracking.json").read_text())["wandb_id"]
    assert len(_sessions(out, run_id)) == 1
    rows = _settled_history(out, run_id, _losses(out))
    assert {r["_step"]: r["loss"] for r in rows if "loss" in r} == _losses(out)
    assert any("eval_exact_match" in r for r in rows)

    more = [a if not a.startswith("train.steps") else "train.steps=18" for a in TINY]
    assert cli("train", *more, "train.tracking=wandb", "train.wandb_project=tests", "--out", out, "--quiet")[0] == 0
    assert json.loads((out / "tracking.json").read_text())["wandb_id"] == run_id  # `wandb sync` joins the sessions
    rows = _settled_history(out, run_id, _losses(out))
    resumed = {r["_step"]: r["loss"] for r in rows if "loss" in r and r["_step"] > 12}
    assert resumed == {k: v for k, v in _losses(out).items() if k > 12} and sorted(resumed) == [15, 18]
