"""The command line contract: listings, sample's JSON, and bad input (one line, exit code 2, nothing damaged)."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run, copied by tests that need to damage it."""
    from seqlab.runs import make_config, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(out, make_config({}, TINY), quiet=True)
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _one_line_error(code, out, err, expect_code=2):
    assert code == expect_code, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_listings(cli):
    from seqlab.recipes import RECIPES
    from seqlab.tasks import TASKS
    from seqlab.tasks.function_classes import FUNCTIONS
    from seqlab.tasks.token_base import TOKEN_TASKS

    code, out, _ = cli("tasks", "--json")
    names = [json.loads(line)["name"] for line in out.splitlines()]
    assert sorted(names) == sorted([*TASKS, *FUNCTIONS, *TOKEN_TASKS])
    code, out, _ = cli("models", "--json")
    assert json.loads(out.splitlines()[0])["name"] == "decoder"
    code, out, _ = cli("recipes", "--json")
    assert [json.loads(line)["name"] for line in out.splitlines()] == sorted(RECIPES)


def test_sample_json_contract(cli):
    code, out, _ = cli("sample", "addition", "max_len=4", "--n", "50", "--seed", "3", "--split", "test", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 50
    for r in rows:
        assert set(r) == {"task", "prompt", "target", "meta"} and r["task"] == "addition"
        a, b = r["meta"]["a"], r["meta"]["b"]
        assert r["meta"]["answer"] == str(a + b) and r["prompt"] == f"{a}+{b}=" and r["target"] == str(a + b)
    code, out, _ = cli("sample", "sort", "max_len=6", "--n", "5", "--json")
    for r in map(json.loads, out.splitlines()):
        assert r["meta"]["answer"] == "".join(sorted(r["meta"]["input"]))


def test_sample_is_deterministic_and_splits_differ(cli):
    first = cli("sample", "copy", "--n", "20", "--seed", "1", "--json")[1]
    again = cli("sample", "copy", "--n", "20", "--seed", "1", "--json")[1]
    test = cli("sample", "copy", "--n", "20", "--seed", "1", "--split", "test", "--json")[1]
    assert first == again and first != test


@pytest.mark.parametrize("args, needle", [
    (["sample", "additon", "--n", "1"], "did you mean 'addition'"),
    (["sample", "addition", "max_lenn=3"], "did you mean 'task.max_len'"),
    (["sample", "addition", "max_len=-3"], "min_len"),
    (["sample", "addition", "--split", "valid"], "unknown split"),
    (["train", "model.n_layer=2", "--out", "{tmp}/a"], "did you mean 'model.n_layers'"),
    (["train", "model.arch=mamba9", "--out", "{tmp}/a"], "unknown model"),
    (["train", "model.n_layers=-1", "--out", "{tmp}/a"], "n_layers"),
    (["train", "train.lr=fast", "--out", "{tmp}/a"], "train.lr"),
    (["train", "task.name=nope", "--out", "{tmp}/a"], "unknown task"),
    (["train", "model.position=coupling", "format.position_ids=abacus", "--out", "{tmp}/a"], "position_ids"),
    (["train", "{tmp}/missing.yaml", "--out", "{tmp}/a"], "does not exist"),
    (["eval", "{tmp}"], "not a seqlab run directory"),
    (["eval", "{tmp}/nothing-here"], "does not exist"),
    (["reproduce", "additoin", "--budget", "smoke"], "did you mean 'addition'"),
    (["reproduce", "addition", "--budget", "huge"], "unknown budget"),
    (["reproduce", "addition", "--budget", "smoke", "--frobnicate", "1"], "unknown option"),
])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    line = _one_line_error(*cli(*args))
    assert needle in line
    assert not (tmp_path / "a").exists(), "bad input must not create a run directory"


def test_bad_yaml_config(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "not valid YAML" in _one_line_error(*cli("train", bad, "--out", tmp_path / "a"))
    good = tmp_path / "good.yaml"
    good.write_text("model:\n  n_layerz: 2\n")
    assert "did you mean 'model.n_layers'" in _one_line_error(*cli("train", good, "--out", tmp_path / "a"))


def test_existing_run_with_other_config_is_refused_untouched(cli, run_copy):
    before = _snapshot(run_copy)
    line = _one_line_error(*cli("train", *TINY, "model.d_model=64", "--out", run_copy))
    assert "different run" in line and "model.d_model" in line
    assert _snapshot(run_copy) == before


def test_folder_that_is_not_a_run_is_refused(cli, tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    assert "not a seqlab run directory" in _one_line_error(*cli("train", *TINY, "--out", tmp_path / "stuff"))
    assert (tmp_path / "stuff" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["truncate_model", "garbage_state", "garbage_latest", "missing_optimizer"])
def test_corrupted_checkpoint_is_exit_2_and_untouched(cli, run_copy, damage):
    ckpt = run_copy / "checkpoints" / json.loads((run_copy / "checkpoints" / "latest.json").read_text())["dir"]
    if damage == "truncate_model":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_state":
        (ckpt / "state.json").write_text("{not json")
    elif damage == "garbage_latest":
        (run_copy / "checkpoints" / "latest.json").write_text("\x00\x01")
    else:
        (ckpt / "optimizer.safetensors").unlink()
    before = _snapshot(run_copy)
    more = [a if not a.startswith("train.steps") else "train.steps=20" for a in TINY]
    line = _one_line_error(*cli("train", *more, "--out", run_copy, "--quiet"))
    assert "unreadable" in line or "corrupted" in line
    if damage != "missing_optimizer":  # eval reads only the weights
        line = _one_line_error(*cli("eval", run_copy, "--n", "2"))
        assert "unreadable" in line or "corrupted" in line
    assert _snapshot(run_copy) == before


def _make_unwritable(path: Path):
    """A folder this process cannot write to, even as root (an immutable folder)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i support: cannot make a read-only folder here")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_output_folder(cli, tmp_path):
    ro = tmp_path / "ro"
    undo = _make_unwritable(ro)
    try:
        line = _one_line_error(*cli("train", *TINY, "--out", ro / "run"))
        assert "cannot write" in line
        line = _one_line_error(*cli("reproduce", "addition", "--budget", "smoke", "--out", ro / "rec"))
        assert "cannot write" in line
    finally:
        undo()
    assert not (ro / "run").exists()


def test_eval_on_read_only_run_is_exit_2(cli, run_copy):
    undo = None
    try:
        import stat  # noqa: F401

        if os.geteuid() == 0 and shutil.which("chattr"):
            if subprocess.run(["chattr", "+i", str(run_copy)], capture_output=True).returncode:
                pytest.skip("chattr +i unsupported here")
            undo = lambda: subprocess.run(["chattr", "-i", str(run_copy)], check=True)  # noqa: E731
        elif os.geteuid() != 0:
            run_copy.chmod(0o555)
            undo = lambda: run_copy.chmod(0o755)  # noqa: E731
        else:
            pytest.skip("cannot make a read-only folder here")
        before = _snapshot(run_copy)
        assert "cannot write" in _one_line_error(*cli("eval", run_copy, "--n", "2"))
        assert _snapshot(run_copy) == before
    finally:
        if undo:
            undo()


def test_train_then_eval_writes_the_run_directory(cli, run_copy):
    code, out, err = cli("eval", run_copy, "--lengths", "1-4", "--n", "5", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result["exact_match_by_length"]) == {"1", "2", "3", "4"}
    assert all(0.0 <= v <= 1.0 for v in result["exact_match_by_length"].values())
    assert (run_copy / "eval" / "by_length.json").is_file()
    assert (run_copy / "plots" / "accuracy_by_length.png").stat().st_size > 1000
    config = json.loads((run_copy / "config.json").read_text())
    assert config["seqlab_version"] and config["task"]["max_len"] == 3
    code, out, err = cli("report", run_copy)
    assert code == 0 and (run_copy / "report.md").read_text().startswith("# Run")


SELF_IMPROVE = ["task.name=copy", "task.max_len=3", "format.reverse_output=false", "model.n_layers=1",
                "model.d_model=32", "model.n_heads=2", "model.position=abacus", "train.steps=10", "train.batch_size=8",
                "train.eval_every=10", "train.eval_n=4", "self_improve.rounds=1", "self_improve.n_per_length=4",
                "self_improve.steps_per_round=4", "self_improve.decay_steps=2", "self_improve.eval_n=2"]


def test_self_improve_command_runs_resumes_and_refuses_bad_input(cli, tmp_path):
    out = tmp_path / "si"
    code, stdout, err = cli("self-improve", *SELF_IMPROVE, "--out", out, "--quiet")
    assert code == 0, err
    assert (out / "rounds" / "round-001" / "done.json").is_file() and "self-improvement on copy" in stdout
    before = _snapshot(out)
    code, _, err = cli("self-improve", "--out", out, "--quiet")  # the folder's own settings: nothing left to do
    assert code == 0, err
    assert _snapshot(out) == before
    line = _one_line_error(*cli("self-improve", *SELF_IMPROVE, "self_improve.round=2", "--out", tmp_path / "x"))
    assert "did you mean 'self_improve.rounds'" in line
    line = _one_line_error(*cli("self-improve", *SELF_IMPROVE[:-1], "self_improve.eval_n=3", "--out", out))
    assert "different self-improvement run" in line
    assert _snapshot(out) == before


def test_ctrl_c_exits_130_with_one_line(cli, monkeypatch, tmp_path):
    """typer catches KeyboardInterrupt itself and hands back 130; main must pass it on, not exit 0."""
    import seqlab.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(seqlab.cli, "_train", interrupted)
    code, _, err = cli("train", "--out", tmp_path / "run", "task.name=addition")
    assert code == 130
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in err
