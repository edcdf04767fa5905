"""Shared fixtures: a tiny run config that trains in about a second, and an in-process CLI runner."""

from __future__ import annotations

import sys

import pytest
import torch

torch.set_num_threads(1)  # tests must not depend on, or fight over, the machine's cores

TINY = [
    "task.max_len=3", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
    "train.batch_size=16", "train.steps=12", "train.eval_every=6", "train.eval_n=8",
    "train.log_every=3", "train.checkpoint_every=6", "train.warmup=2", "train.threads=1",
]


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `seqlab ARGS` in-process; returns (exit code, stdout, stderr)."""
    from seqlab.cli import main

    def run(*args: str):
        monkeypatch.setattr(sys, "argv", ["seqlab", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
