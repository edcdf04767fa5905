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
