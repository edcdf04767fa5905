"""Wall time of self-improvement rounds with the voting models in one process or in worker processes.

    python benchmarks/self_improve_workers.py                 # 3 models, workers 1 then 2
    python benchmarks/self_improve_workers.py --models 5 --workers 1,2 --json

Each setting runs round 0 and `--rounds` rounds of reverse addition (the recipe's cpu model: one
layer, d 128, abacus ids) from scratch in a fresh folder. One process uses every torch thread;
w workers get an equal share of them each. Prints the wall seconds of each setting and the speed-up
over the first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from seqlab.self_improve.rounds import self_improve
from seqlab.runs import make_config
from seqlab.self_improve.config import SelfImproveConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=300, help="round 0 training steps")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        settings = [int(w) for w in a.workers.split(",")]
    except ValueError:
        print(f"--workers expects a list like 1,2, got {a.workers!r}", file=sys.stderr)
        return 2
    run = make_config({
        "task": {"name": "addition", "min_len": 1, "max_len": 10},
        "format": {"reverse_output": True, "zero_pad": True, "reverse_operands": True, "max_offset": 20},
        "model": {"n_layers": 1, "d_model": 128, "n_heads": 4, "position": "abacus"},
        "train": {"steps": a.steps, "batch_size": 128, "lr": 2e-3, "warmup": 30, "schedule": "wsd",
                  "eval_every": a.steps, "eval_n": 50, "checkpoint_every": a.steps, "log_every": 50}})
    rows = []
    for w in settings:
        si = SelfImproveConfig(rounds=a.rounds, n_models=a.models, vote_fraction=1.0, n_per_length=500,
                               steps_per_round=100, decay_steps=50, eval_lengths=[10, 12], eval_n=20, workers=w)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            self_improve(Path(tmp) / "si", run, si, quiet=True)
            rows.append({"workers": w, "wall_seconds": round(time.perf_counter() - t0, 1)})
    base = rows[0]["wall_seconds"]
    for r in rows:
        r["speedup"] = round(base / r["wall_seconds"], 2)
    if a.json:
        print(json.dumps({"models": a.models, "rounds": a.rounds, "threads": torch.get_num_threads(), "rows": rows}))
    else:
        print(f"{a.models} models, round 0 + {a.rounds} rounds, {torch.get_num_threads()} torch threads")
        for r in rows:
            print(f"  workers {r['workers']}: {r['wall_seconds']:7.1f} s   speed-up {r['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
