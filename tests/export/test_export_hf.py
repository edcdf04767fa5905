"""`seqlab export RUN_DIR --to hf OUT_DIR`: transformers' LlamaForCausalLM loads the export and gives seqlab's
logits (RoPE and NoPE, tied and untied, text-task and token-task runs); settings Llama cannot express, runs
of other kinds and occupied folders are refused with one line and exit code 2; the run is never changed."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

TOL = 1e-4  # max |logit difference|, float32
LLAMA = ["model.mlp=swiglu", "model.norm=rmsnorm"]
TOKEN_TINY = ["task.name=mqar", "task.vocab_size=32", "task.input_seq_len=16", "task.num_kv_pairs=2", "model.n_layers=2",
              "model.d_model=16", "model.n_heads=2", "train.batch_size=8", "train.steps=12", "train.eval_every=6",
              "train.eval_n=8", "train.log_every=3", "train.checkpoint_every=6", "train.warmup=2", "train.threads=1"]
needs_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                              reason="transformers is not installed (pip install -e '.[hf]'): nothing to load the export with")


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def _one_line_error(code, out, err) -> str:
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs: text task with RoPE (tied), text task with NoPE (untied, with biases), token task
    with NoPE (2 layers, tied)."""
    from seqlab.runs import make_config, train

    root = tmp_path_factory.mktemp("export-runs")
    train(root / "rope", make_config({}, TINY + LLAMA + ["model.position=rope"]), quiet=True)
    train(root / "nope", make_config({}, TINY + LLAMA + ["model.position=none", "model.tie_embeddings=false",
                                                                 "model.bias=true"]), quiet=True)
    train(root / "token", make_config({}, TOKEN_TINY + LLAMA + ["model.position=none"]), quiet=True)
    return root


def _seqlab_model(run: Path):
    from seqlab.runs import load

    return load(run, device="cpu").model


@needs_hf
@pytest.mark.parametrize("name", ["rope", "nope", "token"])
def test_transformers_gives_seqlab_logits(cli, runs, tmp_path, name):
    from transformers import LlamaForCausalLM

    run, out = runs / name, tmp_path / "hf"
    before = _snapshot(run)
    code, _, err = cli("export", run, "--to", "hf", out)
    assert code == 0, err
    assert _snapshot(run) == before  # the run directory is only read
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "seqlab_export.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left beside it

    ours = _seqlab_model(run)
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    assert hf.dtype == torch.float32
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == ours.config.tie_embeddings
    tokens = torch.randint(0, ours.vocab_size, (3, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(tokens) - hf(input_ids=tokens).logits).abs().max().item()
    assert diff <= TOL, f"{name}: max |logit difference| {diff:.2e}"

    note = json.loads((out / "seqlab_export.json").read_text())
    assert note["vocab_size"] == ours.vocab_size == len(note["vocab"]["tokens"])
    assert note["source"]["step"] == 12 and note["position"] == ours.config.position
    if ours.config.position == "none":  # the rotation Llama applies is the identity, far past these lengths
        cos, sin = hf.model.rotary_emb(torch.zeros(1), torch.arange(100_000)[None])
        assert torch.all(cos == 1) and sin.abs().max() < 1e-24


@needs_hf
def test_export_replaces_a_previous_export_only(cli, runs, tmp_path):
    out = tmp_path / "hf"
    assert cli("export", runs / "rope", "--to", "hf", out)[0] == 0
    code, _, err = cli("export", runs / "nope", "--to", "hf", out)  # a previous export: replaced
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["rope_scaling"]["rope_type"] == "llama3"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert "not a seqlab export" in _one_line_error(*cli("export", runs / "rope", "--to", "hf", busy))
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def _fake_run(path: Path, config) -> Path:
    """A run directory with a config and no checkpoint: every refusal below comes before weights are read."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**config.to_json(), "seqlab_version": "0.1.0", "git_commit": None}))
    return path


@pytest.mark.parametrize("override, says", [
    ("model.norm=layernorm", "model.norm=layernorm: Llama uses RMSNorm; train with model.norm=rmsnorm"),
    ("model.mlp=gelu", "train with model.mlp=swiglu"),
    ("model.position=alibi", "train with model.position=rope or none"),
    ("model.position=coupling", "train with model.position=rope or none"),
    ("model.mixers=mamba,attention", "train with model.mixers=attention"),
    ("model.canon=2", "train with model.canon=0"),
    ("model.log_length_scale=true", "train with model.log_length_scale=false"),
    ("model.arch=encoder", "train with model.arch=decoder"),
])
def test_refuses_what_llama_cannot_express(cli, tmp_path, override, says):
    from seqlab.runs import make_config

    run = _fake_run(tmp_path / "run", make_config({}, TINY + LLAMA + [override]))
    line = _one_line_error(*cli("export", run, "--to", "hf", tmp_path / "hf"))
    assert says in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_refuses_other_runs_targets_and_folders(cli, tmp_path):
    from seqlab.runs import get_kind
    from seqlab.runs import make_config

    icl = _fake_run(tmp_path / "icl", get_kind("icl").resolve({}))
    assert "in-context learning run" in _one_line_error(*cli("export", icl, "--to", "hf", tmp_path / "a"))
    assert "does not exist" in _one_line_error(*cli("export", tmp_path / "missing", "--to", "hf", tmp_path / "b"))
    (tmp_path / "plain").mkdir()
    assert "not a seqlab run directory" in _one_line_error(*cli("export", tmp_path / "plain", "--to", "hf", tmp_path / "c"))

    run = _fake_run(tmp_path / "run", make_config({}, TINY + LLAMA))
    before = _snapshot(run)
    assert "no checkpoint" in _one_line_error(*cli("export", run, "--to", "hf", tmp_path / "d"))
    assert "only target is hf" in _one_line_error(*cli("export", run, "--to", "onnx", tmp_path / "e"))
    assert "--to" in _one_line_error(*cli("export", run, tmp_path / "f"))
    assert "overlaps the run directory" in _one_line_error(*cli("export", run, "--to", "hf", run / "hf"))
    assert "overlaps the run directory" in _one_line_error(*cli("export", run, "--to", "hf", tmp_path))
    (tmp_path / "file").write_text("x")
    assert "not a directory" in _one_line_error(*cli("export", run, "--to", "hf", tmp_path / "file"))
    assert _snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "icl", "plain", "run"]


def test_a_marker_alone_does_not_make_a_folder_an_export(cli, runs, tmp_path):
    """Only a folder that is verifiably an earlier export is replaced: its note reads back, lists the files
    the export wrote, and the folder holds those and nothing else. A user's files are never deleted."""
    out = tmp_path / "hf"
    assert cli("export", runs / "rope", "--to", "hf", out)[0] == 0
    note = json.loads((out / "seqlab_export.json").read_text())
    assert note["files"] == ["config.json", "model.safetensors"]  # what it wrote, and so what may be replaced

    for name, files in [("any-note", {"seqlab_export.json": "whatever", "notes.txt": "mine"}),
                        ("empty-note", {"seqlab_export.json": "{}", "notes.txt": "mine"}),
                        ("listed-elsewhere", {"seqlab_export.json": json.dumps({**note, "files": "config.json"}),
                                              "config.json": "{}"})]:
        busy = tmp_path / name
        busy.mkdir()
        for f, text in files.items():
            (busy / f).write_text(text)
        before = _snapshot(busy)
        assert "not a seqlab export" in _one_line_error(*cli("export", runs / "rope", "--to", "hf", busy))
        assert _snapshot(busy) == before

    (out / "notes.txt").write_text("mine, beside an export")  # an earlier export, with a file of the user's in it
    before = _snapshot(out)
    line = _one_line_error(*cli("export", runs / "nope", "--to", "hf", out))
    assert "not a seqlab export" in line and "notes.txt" in line
    assert _snapshot(out) == before
    (out / "notes.txt").unlink()
    assert cli("export", runs / "nope", "--to", "hf", out)[0] == 0  # the export alone: replaced
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "seqlab_export.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
