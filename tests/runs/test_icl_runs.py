"""In-context learning runs through the CLI: train, resume exactly, evaluate against baselines, and
bad input with one line and exit code 2."""

import json
import math
import shutil

from safetensors.torch import load_file

ICL_TINY = ["task.name=linear-regression", "task.n_dims=3", "task.n_points=7", "model.n_layers=1", "model.d_model=16",
            "model.n_heads=2", "model.max_points=7", "train.batch_size=8", "train.steps=12", "train.eval_every=4",
            "train.eval_n=8", "train.log_every=2", "train.checkpoint_every=4", "train.keep_checkpoints=5",
            "train.warmup=2", "train.threads=1"]


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in rows]


def test_train_then_resume_from_an_earlier_checkpoint_is_exact(cli, tmp_path):
    ref = tmp_path / "ref"
    code, _, err = cli("train", *ICL_TINY, "curriculum.points.start=3", "curriculum.points.end=7",
                       "curriculum.points.interval=4", "--out", ref, "--quiet")
    assert code == 0, err
    assert any("eval_error" in r for r in _metrics(ref))
    config = json.loads((ref / "config.json").read_text())
    assert config["kind"] == "icl" and config["model"]["n_dims"] == 3  # the model reads the task's dims

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
    assert all((got[k] == want[k]).all() for k in want)

    code, stdout, err = cli("eval", ref, "--lengths", "1,3,6", "--n", "20", "--baselines", "least-squares,averaging", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result["curves"]) == {"model", "least-squares", "averaging"}
    assert result["curves"]["least-squares"]["mean"][6] < 1e-6  # noiseless, 6 >= d examples: exact
    assert (ref / "eval" / "error_by_points.json").is_file()
    code, _, err = cli("report", ref)
    assert code == 0 and "error against" not in err
    assert "| k |" in (ref / "report.md").read_text()


def test_looped_and_lsa_runs_train(cli, tmp_path):
    for arch, extra in (("looped", ["model.loops=3", "model.loop_window=2"]), ("lsa", [])):
        transformer_only = ("model.d_model", "model.n_heads", "model.max_points")
        args = [a for a in ICL_TINY if not a.startswith(transformer_only)] if arch == "lsa" else ICL_TINY
        run = tmp_path / arch
        code, _, err = cli("train", *args, f"model.arch={arch}", *extra, "--out", run, "--quiet")
        assert code == 0, err
        config = json.loads((run / "config.json").read_text())
        assert config["kind"] == "icl" and config["model"]["arch"] == arch
        rows = _metrics(run)
        assert [r["step"] for r in rows] == list(range(2, 13, 2))
        assert all(math.isfinite(r["loss"]) for r in rows)
        last_error = rows[-1]["eval_error"]
        assert math.isfinite(last_error) and f"step 12, mean error {last_error:.4f}" in err, err
        assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 12
        assert (run / "checkpoints" / "step_00000012" / "model.safetensors").is_file()


def test_bad_icl_input_is_one_line_and_exit_2(cli, tmp_path):
    cases = [
        ["task.name=linear-regresion"],  # typo: did-you-mean
        ["task.name=linear-regression", "task.n_dims=3", "model.n_dims=4"],
        ["task.name=linear-regression", "model.n_layer=2"],
        ["task.name=sparse-linear-regression", "task.n_dims=3", "task.sparsity=5"],
        ["task.name=linear-regression", "task.n_points=50", "model.max_points=20"],
    ]
    for args in cases:
        out = tmp_path / "x"
        code, _, err = cli("train", *args, "--out", out)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not out.exists()


def test_tasks_and_sample_list_function_classes(cli):
    code, stdout, _ = cli("tasks", "--json")
    kinds = {json.loads(line)["name"]: json.loads(line)["kind"] for line in stdout.splitlines()}
    assert kinds["linear-regression"] == "function" and kinds["addition"] == "sequence"
    code, stdout, _ = cli("sample", "linear-regression", "n_dims=2", "n_points=3", "--n", "2", "--json")
    assert code == 0
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == 2 and len(rows[0]["meta"]["xs"]) == 3
    w = rows[0]["meta"]["function"]["w"]
    x, y = rows[0]["meta"]["xs"][0], rows[0]["meta"]["ys"][0]
    assert abs(sum(a * b for a, b in zip(w, x)) - y) < 1e-4  # the label is w . x


def test_points_that_are_not_scored_are_left_out_of_loss_and_error(cli, tmp_path):
    import numpy as np
    import torch

    from seqlab.data.prompts import PromptStream
    from seqlab.eval.icl_scoring import score
    from seqlab.models.icl_transformer import masked_mse
    from seqlab.tasks.function_classes import get_function

    fc = get_function("many-outlier-regression", n_dims=3, n_points=12, outlier_prob=0.5)
    batch = PromptStream(fc, 0, 6).batch(0)
    assert batch.scored is not None and 0 < int(batch.scored.sum()) < batch.scored.numel()
    preds = torch.randn_like(batch.ys)
    keep = batch.scored
    assert torch.allclose(masked_mse(preds, batch.ys, keep), ((preds - batch.ys)[keep] ** 2).mean())
    err = score(fc, preds.numpy(), batch.ys.numpy(), keep.numpy())
    assert np.isnan(err[~keep.numpy()]).all() and not np.isnan(err[keep.numpy()]).any()
    args = [a for a in ICL_TINY if not a.startswith("task.")] + ["task.name=many-outlier-regression", "task.n_dims=3",
                                                                "task.n_points=7"]
    code, _, err_text = cli("train", *args, "--out", tmp_path / "park", "--quiet")
    assert code == 0, err_text


def test_every_mixer_setting_reaches_an_in_context_run(cli, tmp_path):
    import seqlab

    run = tmp_path / "mixers"
    code, _, err = cli("train", *ICL_TINY, "model.n_layers=3", "model.mixers=linear,sliding_window,mamba",
                       "model.linear.feature_map=elu", "model.sliding_window.window=3", "model.mamba.d_conv=2",
                       "--out", run, "--quiet")
    assert code == 0, err
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["linear"]["feature_map"], model["sliding_window"]["window"], model["mamba"]["d_conv"]) == ("elu", 3, 2)
    mixers = {type(m).__name__: m for m in seqlab.load(run).model.modules()}
    assert mixers["SlidingWindowAttention"].window == 3 and mixers["Mamba"].d_conv == 2
    assert mixers["LinearAttention"].kind == "elu"  # the feature map


def test_a_mistyped_model_key_of_an_in_context_run_names_the_nearest(cli, tmp_path):
    for key, near in (("model.n_layer=2", "model.n_layers"), ("model.mamba.d_stat=2", "model.mamba.d_state")):
        code, _, err = cli("train", *ICL_TINY, key, "--out", tmp_path / "bad", "--quiet")
        assert code == 2 and err.strip().splitlines() == [f"error: unknown key '{key.split('=')[0]}' (did you mean '{near}'?)"]
    assert not (tmp_path / "bad").exists()
