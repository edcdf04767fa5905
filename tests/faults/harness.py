"""The fault suite's tools: a fork server (one seqlab import for every case), a small run to kill and
resume, and what of a run directory must equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.numpy import load_file

HERE = Path(__file__).parent

# A run that checkpoints four times, logs eight lines and evaluates twice, in about a second.
RUN = ["task.name=addition", "task.max_len=3", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
       "train.batch_size=16", "train.steps=24", "train.warmup=2", "train.log_every=3", "train.eval_every=12",
       "train.eval_n=8", "train.checkpoint_every=6", "train.keep_checkpoints=2", "train.threads=1"]
TIMING = ("tokens_per_s", "train_seconds")  # what may differ between two runs of one config


class ForkServer:
    def __init__(self, logs: Path):
        env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "120"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "forkserver.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.logs, self.n = logs, 0
        self.cases = 0  # every command the suite ran with a fault in it

    def run(self, *args: str, faults: list[dict] | None = None, kill_after: float | None = None) -> dict:
        """`seqlab ARGS` in a forked child; returns its exit code or signal, the faults that fired, and its
        output (stdout and stderr together)."""
        self.n += 1
        if faults or kill_after is not None:
            self.cases += 1
        log = self.logs / f"cmd-{self.n}.log"
        req = {"args": [str(a) for a in args], "log": str(log), "faults": faults or [], "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        reply["output"] = log.read_text()
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def snapshot(run_dir: Path) -> dict:
    """What of a finished run must not depend on how often it was killed: its config, its metrics without
    timings, and the newest checkpoint's weights, optimizer moments and step."""
    run_dir = Path(run_dir)
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    ckpt = run_dir / "checkpoints" / latest["dir"]
    config = json.loads((run_dir / "config.json").read_text())
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    state = json.loads((ckpt / "state.json").read_text())
    tensors = {f"model.{k}": v for k, v in load_file(ckpt / "model.safetensors").items()}
    tensors |= {f"opt.{k}": v for k, v in load_file(ckpt / "optimizer.safetensors").items()}
    return {"config": config, "metrics": metrics, "step": state["step"], "best_eval": state["best_eval"],
            "tensors": {k: v.tobytes() for k, v in tensors.items()}}


def assert_same_run(got: dict, want: dict) -> None:
    assert got["step"] == want["step"]
    assert got["config"] == want["config"]
    if got["metrics"] != want["metrics"]:  # name the first line that differs, not two whole files
        first = next((i for i, (a, b) in enumerate(zip(got["metrics"], want["metrics"])) if a != b),
                     min(len(got["metrics"]), len(want["metrics"])))
        line = lambda m: m[first] if first < len(m) else "(no line)"  # noqa: E731
        raise AssertionError(f"metrics.jsonl differs from the uninterrupted run at line {first + 1} "
                             f"({len(got['metrics'])} lines against {len(want['metrics'])}): "
                             f"got {line(got['metrics'])}, want {line(want['metrics'])}")
    assert got["best_eval"] == want["best_eval"]
    assert got["tensors"].keys() == want["tensors"].keys()
    differing = [k for k in want["tensors"] if got["tensors"][k] != want["tensors"][k]]
    assert not differing, f"tensors differ from the uninterrupted run: {differing[:5]}"
