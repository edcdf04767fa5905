"""Token-task runs through the CLI: train, resume exactly, evaluate, report; listings; bad input with one
line and exit code 2, never touching an existing run."""

import json
import shutil

import numpy as np
import torch
from safetensors.torch import load_file

from seqlab.tasks.token_base import get_token_task
from seqlab.eval.token_scoring import score_tokens

TINY = ["task.name=mqar", "task.vocab_size=32", "task.input_seq_len=16", "task.num_kv_pairs=2", "model.n_layers=1",
        "model.d_model=16", "model.n_heads=2", "train.batch_size=8", "train.steps=12", "train.eval_every=4",
        "train.eval_n=8", "train.log_every=2", "train.checkpoint_every=4", "train.keep_checkpoints=5", "train.warmup=2",
        "train.threads=1"]


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in rows]


def test_train_resume_eval_report(cli, tmp_path):
    ref = tmp_path / "ref"
    code, _, err = cli("train", *TINY, "model.mixers=mamba,attention", "model.canon=2", "--out", ref, "--quiet")
    assert code == 0, err
    assert json.loads((ref / "config.json").read_text())["kind"] == "token"
    assert any("eval_accuracy" in r for r in _metrics(ref))

    killed = tmp_path / "killed"  # as if killed just after the step-4 checkpoint
    shutil.copytree(ref, killed)
    for step in (8, 12):
        shutil.rmtree(killed / "checkpoints" / f"step_{step:08d}")
    (killed / "checkpoints" / "latest.json").write_text(json.dumps({"step": 4, "dir": "step_00000004"}))
    code, _, err = cli("train", "--out", killed, "--quiet")
    assert code == 0, err
    assert _metrics(killed) == _metrics(ref)
    want = load_file(str(ref / "checkpoints" / "step_00000012" / "model.safetensors"))
    got = load_file(str(killed / "checkpoints" / "step_00000012" / "model.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in want)

    code, stdout, err = cli("eval", ref, "--n", "20", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n"] == 20 and result["n_scored"] == 40 and 0 <= result["accuracy"] <= 1
    assert (ref / "eval" / "accuracy.json").is_file()
    code, _, err = cli("report", ref)
    assert code == 0, err
    assert "accuracy" in (ref / "report.md").read_text()


def test_encoder_run_trains(cli, tmp_path):
    args = [a for a in TINY if not a.startswith("task.")] + ["task.name=count3", "task.length=10", "task.seed_size=4",
                                                             "task.seed_max=8"]
    run = tmp_path / "enc"
    code, _, err = cli("train", *args, "model.arch=encoder", "--out", run, "--quiet")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "token" and config["model"]["arch"] == "encoder" and config["task"]["name"] == "count3"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(2, 13, 2))
    assert all(np.isfinite(r["loss"]) for r in rows)
    accuracy = rows[-1]["eval_accuracy"]
    assert 0 <= accuracy <= 1 and f"step 12, accuracy {accuracy:.4f}" in err, err
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 12
    assert (run / "checkpoints" / "step_00000012" / "model.safetensors").is_file()


class _Fixed(torch.nn.Module):
    """A stand-in model whose greedy prediction at every position is a given token."""

    def __init__(self, guess: np.ndarray):
        super().__init__()
        self.guess = torch.from_numpy(guess)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def scored_logits(self, tokens, targets):
        keep = targets != -100
        logits = torch.nn.functional.one_hot(self.guess[: len(tokens)][keep], 40).float()
        return logits, targets[keep]


def test_score_tokens_counts_each_scored_position():
    task = get_token_task("mqar", vocab_size=40, input_seq_len=16, num_kv_pairs=2)
    tokens, targets = task.batch(0, "test", 0, 10)
    guess = np.where(targets == -100, 0, targets)
    guess[0, np.flatnonzero(targets[0] != -100)[0]] += 1  # one wrong answer in sequence 0
    r = score_tokens(_Fixed(guess), tokens, targets)
    assert r["n_scored"] == 20 and r["accuracy"] == 19 / 20 and r["exact_match"] == 9 / 10


def test_listings_and_samples(cli):
    code, stdout, _ = cli("tasks", "--json")
    kinds = {json.loads(line)["name"]: json.loads(line)["kind"] for line in stdout.splitlines()}
    assert kinds["mqar"] == kinds["count3"] == kinds["kv-retrieval"] == "token"
    code, stdout, _ = cli("sample", "mqar", "vocab_size=32", "input_seq_len=16", "num_kv_pairs=2", "--n", "2", "--json")
    rec = json.loads(stdout.splitlines()[0])
    assert code == 0 and rec["task"] == "mqar" and len(rec["meta"]["tokens"]) == 16
    code, stdout, _ = cli("models", "--json")
    assert {"decoder", "encoder"} <= {json.loads(line)["name"] for line in stdout.splitlines()}


def test_bad_token_input_is_one_line_and_exit_2(cli, tmp_path):
    cases = [
        ["task.name=mqra"],  # typo: did-you-mean
        ["task.name=mqar", "task.input_seq_len=15"],
        ["task.name=mqar", "model.mixers=mamab"],
        ["task.name=mqar", "model.position=learned", "model.max_positions=8"],
        ["task.name=count3", "model.arch=encoder", "model.mixers=mamba"],
    ]
    for args in cases:
        out = tmp_path / "x"
        code, _, err = cli("train", *args, "--out", out)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not out.exists()


def test_a_run_of_another_kind_is_not_touched(cli, tmp_path):
    run = tmp_path / "tok"
    code, _, err = cli("train", *TINY, "train.steps=4", "--out", run, "--quiet")
    assert code == 0, err
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for args in (["task.name=addition"], ["task.name=linear-regression"]):
        code, _, err = cli("train", *args, "--out", run)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = cli("eval", run, "--lengths", "1-3")
    assert code == 2 and "token-task run" in err
