"""load_config_file: a YAML or JSON config file, refused in one line where it is none, nests without end, or
expands through its aliases beyond any config (a "billion laughs" file of a few hundred bytes)."""

from __future__ import annotations

import time

import pytest

from seqlab.core.errors import BadInput
from seqlab.runs import load_config_file


def laughs(levels: int, width: int = 10) -> str:
    """A YAML alias bomb: each level a list of `width` aliases of the level before (width ** levels values)."""
    names = [chr(ord("a") + i) for i in range(levels)] if levels <= 26 else [f"n{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(["lol"] * width) + "]"]
    lines += [f"{b}: &{b} [" + ",".join([f"*{a}"] * width) + "]" for a, b in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def _refused(path, needle):
    t0 = time.perf_counter()
    with pytest.raises(BadInput) as e:
        load_config_file(path)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith(f"config file {path}"), msg
    return msg


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(laughs(10))
    assert len(bomb.read_bytes()) < 500  # 10**10 values in under 500 bytes
    msg = _refused(bomb, "expands through its aliases to about 1.23e+10 values")
    assert "100000" in msg
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(laughs(400))  # far beyond what a float can count
    _refused(bigger, "expands through its aliases")


def test_a_document_that_contains_itself_is_refused(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("model: &m {d_model: 32, again: *m}\n")
    _refused(loop, "contains itself")


@pytest.mark.parametrize("name, text, needle", [
    ("deep.yaml", "model: " + "[" * 5000 + "]" * 5000 + "\n", "nests lists or mappings more than 32 levels deep"),
    ("deep40.yaml", "model: " + "[" * 40 + "]" * 40 + "\n", "nests lists or mappings more than 32 levels deep"),
    ("deep.json", '{"model": ' + "[" * 5000 + "]" * 5000 + "}", "nests lists or mappings more than 32 levels deep"),
    ("digits.yaml", "task:\n  max_len: " + "9" * 5000 + "\n", "holds a number of more than 4300 digits"),
    ("digits.json", '{"task": {"max_len": ' + "9" * 5000 + "}}", "holds a number of more than 4300 digits"),
])
def test_files_python_cannot_read_are_one_line(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    _refused(path, needle)


def test_aliases_and_merge_keys_of_an_ordinary_file_still_load(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("small: &small {d_model: 32, n_layers: 1}\nmodel:\n  <<: *small\n  n_heads: 2\n"
                  "self_improve:\n  schedule: [[[1, 6], [6, 1]], [[2, 6]]]\n")
    data = load_config_file(ok)
    assert data["model"] == {"d_model": 32, "n_layers": 1, "n_heads": 2}
    assert data["self_improve"]["schedule"] == [[[1, 6], [6, 1]], [[2, 6]]]
    lots = tmp_path / "lots.yaml"  # a long list is no bomb
    lots.write_text("self_improve:\n  eval_lengths: [" + ", ".join(map(str, range(1, 5001))) + "]\n")
    assert len(load_config_file(lots)["self_improve"]["eval_lengths"]) == 5000
