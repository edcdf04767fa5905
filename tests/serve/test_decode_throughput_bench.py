"""benchmarks/decode_throughput.py runs end to end at tiny settings, and its three decoders agree token for token."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_throughput.py"


@pytest.fixture
def bench(monkeypatch):
    # The script puts benchmarks/ on sys.path and sets two environment variables: undo both afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    spec = importlib.util.spec_from_file_location("decode_throughput_bench", SCRIPT)  # benchmarks/ is no package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # importing transformers and three decoders' first calls: several seconds
def test_tiny_run_passes_parity(bench, capsys):
    code = bench.main(["--batches", "1,2", "--new", "4", "--prompt", "4", "--rounds", "1", "--warmup", "0",
                       "--sizes", "small", "--threads", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["parity_ok"] and out["sizes"][0]["parity"]["equal"]
    rows = out["sizes"][0]["batches"]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["outputs_equal"]
        assert all(r[n]["tokens_per_s"] > 0 for n in ("seqlab_generate", "seqlab_engine", "hf"))


def test_bad_input_is_one_line(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--batches", "0", "--threads", "1"])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
