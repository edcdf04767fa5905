"""Typed configs: stable hashes, overrides, nearest-key errors, schedules."""

import pytest

from seqlab.core.configs import apply_overrides, parse_value
from seqlab.core.errors import BadInput
from seqlab.runs import make_config
from seqlab.train.schedule import lr_at


def test_hash_is_stable_and_sensitive():
    a = make_config({}, ["model.d_model=64", "task.max_len=5"])
    b = make_config({"task": {"max_len": 5}}, ["model.d_model=64"])
    assert a.stable_hash() == b.stable_hash()
    assert a.stable_hash() != make_config({}, ["model.d_model=32", "task.max_len=5"]).stable_hash()


def test_config_round_trips_through_json():
    from seqlab.train import RunConfig

    c = make_config({}, ["task.name=sort", "task.alphabet=xyz", "model.position=alibi"])
    assert RunConfig.model_validate(c.to_json()) == c
    assert c.to_json()["task"] == {"name": "sort", "sampling": "independent", "min_len": 1, "max_len": 10, "alphabet": "xyz"}


def test_none_unsets_optional_fields_and_stays_a_word_elsewhere():
    from seqlab.runs import make_config

    cfg = make_config({}, ["model.position=none", "train.target_accuracy=none", "model.d_mlp=null"])
    assert cfg.model.position == "none" and cfg.train.target_accuracy is None and cfg.model.d_mlp is None
    assert make_config({}, ["train.target_accuracy=0.9"]).train.target_accuracy == 0.9


def test_overrides_parse_values():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("abc") == "abc" and parse_value("[1, 2]") == [1, 2]
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2", "d=x"]) == {"a": {"b": 1, "c": 2}, "d": "x"}
    with pytest.raises(BadInput):
        apply_overrides({}, ["novalue"])


def test_unknown_key_names_nearest():
    with pytest.raises(BadInput, match=r"unknown key 'train\.learning_rat' \(did you mean"):
        make_config({}, ["train.learning_rat=1"])
    with pytest.raises(BadInput, match="did you mean 'train.batch_size'"):
        make_config({}, ["train.batchsize=1"])


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_then_stay_in_range(schedule):
    kw = dict(lr=1.0, steps=1000, warmup=100, schedule=schedule, min_lr_ratio=0.1, decay_frac=0.2)
    lrs = [lr_at(s, **kw) for s in range(1000)]
    assert lrs[0] == pytest.approx(0.01) and lrs[99] == pytest.approx(1.0)
    assert all(0.1 - 1e-9 <= x <= 1.0 + 1e-9 for x in lrs[100:])
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:100], lrs[1:100]))
    if schedule == "constant":
        assert lrs[-1] == 1.0
    else:
        assert lrs[-1] == pytest.approx(0.1, abs=0.01) and all(a >= b - 1e-12 for a, b in zip(lrs[100:], lrs[101:]))
    if schedule == "wsd":
        assert lrs[799] == 1.0 and lrs[850] < 1.0


# -- issue #18: every bad value refused up front, in one line ------------------------------------------------
def test_no_float_of_any_config_is_nan_or_inf():
    from seqlab.core.configs import Config, parse_config

    class Knobs(Config):  # any config: allow_inf_nan=False is the base class's
        x: float = 1.0
        y: float | None = None
        zs: list[float] = []

    for data in ({"x": "nan"}, {"x": float("inf")}, {"y": "-inf"}, {"zs": [1.0, float("nan")]}, {"x": 1e400}):
        with pytest.raises(BadInput, match="Input should be a finite number"):
            parse_config(Knobs, data)
    k = parse_config(Knobs, {"x": 1e300, "y": -1e-300, "zs": [0.0]})
    with pytest.raises(Exception):  # validate_assignment: no nan by assignment either
        k.x = float("nan")


@pytest.mark.parametrize("text, needle", [
    ("9" * 5000, "more digits than Python's limit for an integer (4300)"),
    ("-" + "9" * 4400, "more digits than Python's limit"),
    ("[" * 5000, "nests lists or mappings more than 32 levels deep"),
    ("[" * 33 + "]" * 33, "nests lists or mappings more than 32 levels deep"),
    ('{"a":' * 40 + "1" + "}" * 40, "nests lists or mappings more than 32 levels deep"),
])
def test_values_python_cannot_read_are_one_line(text, needle):
    with pytest.raises(BadInput) as e:
        parse_value(text)
    assert needle in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 250
    with pytest.raises(BadInput, match=r"^invalid value for 'task\.max_len': value '"):
        apply_overrides({}, [f"task.max_len={text}"])


def test_values_within_the_limits_still_parse():
    assert parse_value("9" * 4300) == int("9" * 4300)
    assert parse_value("[" * 32 + "]" * 32) is not None
    assert parse_value("[[[1, 2], [3]]]") == [[[1, 2], [3]]]  # a self-improvement schedule


def test_errors_quote_long_values_short():
    from seqlab.core.configs import shown_value

    assert shown_value(3) == "3" and shown_value("abc") == "'abc'"
    assert shown_value("x" * 500).endswith("... (502 characters)") and len(shown_value("x" * 500)) < 90
    huge = 10**5000  # more digits than repr may write
    assert "integer of about" in shown_value(huge)
    with pytest.raises(BadInput) as e:
        make_config({}, ["train.lr=" + "1" * 400])
    assert len(str(e.value)) < 200 and "(400 characters)" in str(e.value)
