"""`torchrun --nproc_per_node 2 -m seqlab train` (DDP, gloo on CPU) trains as one process does with the same
global batch: the same loss curve, the same final weights, and a resume that continues it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from seqlab.data.text import TrainStream
from seqlab.core.errors import BadInput
from seqlab.formats.format import Format
from seqlab.data.prompts import PromptBatch, PromptStream
from seqlab.models.icl_transformer import build_icl_model
from seqlab.runs import make_config
from seqlab.runs.text import build_parts
from seqlab.train.distributed import World, rows, shard

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is unavailable")

SMALL = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "train.batch_size=16", "train.warmup=2",
         "train.log_every=1", "train.device=cpu", "train.threads=1"]
# Variable-length addition: answers of 2 to 4 digits, so the two halves of a batch score different numbers
# of tokens and DDP's plain average of the ranks' mean losses would be the wrong loss.
# A constant learning rate, so that a run of 12 steps resumed to 24 follows the 24-step run's schedule.
ADDITION = SMALL + ["task.min_len=1", "task.max_len=3", "train.schedule=constant", "train.eval_every=12", "train.eval_n=8",
                    "train.checkpoint_every=12"]
MQAR = SMALL + ["task.name=mqar", "task.vocab_size=32", "task.input_seq_len=16", "task.num_kv_pairs=2", "train.steps=24",
                "train.eval_every=24", "train.eval_n=16", "train.checkpoint_every=24"]
# float32 sums in another order (two half-batches, gloo's all-reduce) against one process: measured max
# 5.3e-7 on the loss curves and 1.2e-7 on the weights over these runs.
LOSS_TOL, WEIGHT_TOL = 2e-6, 1e-6


def _torchrun(out: Path, args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "seqlab", "train", *args, "--out", str(out), "--quiet"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stderr


def _curve(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock figures."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in rows]


def _assert_same_training(multi: Path, single: Path) -> float:
    got, want = _curve(multi), _curve(single)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(got, want))
    assert diff <= LOSS_TOL, diff
    for a, b in zip(got, want):  # the rest of each record (lr, evaluation) is exactly the same
        assert {k: v for k, v in a.items() if k != "loss"} == {k: v for k, v in b.items() if k != "loss"}
    w_multi, w_single = (load_file(str(d / "checkpoints" / json.loads((d / "checkpoints/latest.json").read_text())["dir"]
                                       / "model.safetensors")) for d in (multi, single))
    assert w_multi.keys() == w_single.keys()
    assert max((w_multi[k] - w_single[k]).abs().max().item() for k in w_multi) <= WEIGHT_TOL
    return diff


def test_each_rank_takes_its_rows_of_the_global_batch():
    config = make_config({}, ["task.min_len=1", "task.max_len=3"])
    task = config.make_task()
    stream = TrainStream(task, Format(config.format, task, config.format_position_ids), seed=0, batch_size=8)
    batch = stream.batch(3)
    parts = [shard(batch, World(2, r, r)) for r in range(2)]
    for name in ("tokens", "targets", "pos_ids"):  # padding included: the rows are the global batch's
        assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(batch, name))
    assert shard(batch, World()) is batch
    prompts = PromptBatch(torch.zeros(6, 3, 2), torch.arange(18.0).view(6, 3), loops=4, scored=torch.ones(6, 3, dtype=torch.bool))
    third = shard(prompts, World(3, 2, 0))
    assert third.loops == 4 and torch.equal(third.ys, prompts.ys[4:6]) and third.scored.shape == (2, 3)
    assert rows(16, World(4, 1, 1)) == slice(4, 8)
    with pytest.raises(BadInput):
        rows(10, World(4, 0, 0))


def test_unequal_token_counts_make_the_weighting_matter():
    """On the variable-length data below, the plain average of the two halves' mean losses misses the
    batch's mean loss by far more than LOSS_TOL; weighting each half by its scored tokens gives it. (After
    a few steps of training: at initialisation every token's loss is near log V, and the halves agree.)"""
    torch.manual_seed(0)
    config = make_config({}, ["task.min_len=1", "task.max_len=3", "model.n_layers=1", "model.d_model=32", "model.n_heads=2"])
    task, fmt, model = build_parts(config)
    stream = TrainStream(task, fmt, seed=0, batch_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(10):
        model.loss(*stream.batch(step).model_args()).backward()
        opt.step()
        opt.zero_grad()
    batch = stream.batch(10)
    halves = [shard(batch, World(2, r, r)) for r in range(2)]
    counts = [h.n_scored for h in halves]
    assert counts[0] != counts[1] and sum(counts) == batch.n_scored
    with torch.no_grad():
        means = [model.loss(*h.model_args()).item() for h in halves]
        whole = model.loss(*batch.model_args()).item()
    assert abs(sum(means) / 2 - whole) > 100 * LOSS_TOL
    assert abs(sum(n * m for n, m in zip(counts, means)) / sum(counts) - whole) < 1e-6


@pytest.mark.parametrize("arch", ["transformer", "lsa"])
def test_weights_of_in_context_prompts_give_the_batch_loss(arch):
    """Prompts with unscored outliers: the transformer's loss is a mean over scored points (the batch's
    n_scored), linear self-attention's over prompts whose last point is scored (its loss_terms)."""
    torch.manual_seed(0)
    sizes = {"transformer": ["model.d_model=16", "model.n_heads=2", "model.max_points=7"], "lsa": []}[arch]
    config = make_config({}, ["task.name=many-outlier-regression", "task.n_dims=3", "task.n_points=7",
                                     f"model.arch={arch}", "model.n_layers=1", *sizes])
    model = build_icl_model(config.model)
    batch = PromptStream(config.function_class(), seed=0, batch_size=16).batch(4)
    halves = [shard(batch, World(2, r, r)) for r in range(2)]
    counts = [model.loss_terms(h) if hasattr(model, "loss_terms") else h.n_scored for h in halves]
    assert counts[0] != counts[1]
    with torch.no_grad():
        means = [model.loss(*h.model_args()).item() for h in halves]
        whole = model.loss(*batch.model_args()).item()
    assert abs(sum(n * m for n, m in zip(counts, means)) / sum(counts) - whole) <= 1e-6 * max(1.0, abs(whole))


def test_indivisible_global_batch_is_bad_input(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, err = cli("train", *SMALL, "train.batch_size=15", "train.steps=2", "--out", tmp_path / "run", "--quiet")
    assert code == 2 and "train.batch_size=15" in err and "Traceback" not in err


@pytest.mark.slow
@needs_gloo
def test_two_processes_train_as_one_on_token_task(cli, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert cli("train", *MQAR, "--out", single, "--quiet")[0] == 0
    stderr = _torchrun(multi, MQAR)
    assert stderr.count("run in") == 1, stderr  # rank 1 is quiet
    _assert_same_training(multi, single)


@pytest.mark.slow
@needs_gloo
def test_two_processes_with_unequal_token_counts_and_a_resume(cli, tmp_path):
    """Variable-length answers (see ADDITION), periodic evaluation on rank 0, and a 2-process run stopped
    at step 12 and resumed to 24: the same as one process training 24 steps."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert cli("train", *ADDITION, "train.steps=24", "--out", single, "--quiet")[0] == 0
    _torchrun(multi, ADDITION + ["train.steps=12"])
    assert json.loads((multi / "checkpoints" / "latest.json").read_text())["step"] == 12
    _torchrun(multi, ADDITION + ["train.steps=24"])
    assert any("eval_exact_match" in r for r in _curve(multi))
    _assert_same_training(multi, single)
