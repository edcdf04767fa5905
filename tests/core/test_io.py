import json
import math

from seqlab.core.io import read_json, read_jsonl, write_json


def test_write_json_writes_strict_json(tmp_path):
    obj = {"a": float("nan"), "b": [1.5, float("inf"), -math.inf], "c": {"d": 2, "e": "x"}}
    write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # no constants at all
    assert read_json(tmp_path / "r.json") == {"a": None, "b": [1.5, None, None], "c": {"d": 2, "e": "x"}}


def test_read_jsonl_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_atomic_write_gives_the_mode_open_gives(tmp_path):
    """mkstemp makes 0600 files; a report written for others to read must not be private."""
    import stat

    from seqlab.core.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)
