"""The function-class registry and contract: names, configs and their errors, error_scale (Garg et al.'s
normalisation), argument checks, and the `seqlab sample --json` record."""

import json
import math

import numpy as np
import pytest

from seqlab.core.errors import BadInput
from seqlab.tasks import function_classes
from seqlab.tasks.function_classes import FUNCTIONS, FunctionClass, FunctionConfig, Prompts, function_names, get_function


@pytest.mark.parametrize("name", function_names())
def test_every_registered_family_keeps_the_contract(name):
    fc = get_function(name)
    assert isinstance(fc, FunctionClass) and isinstance(fc.config, FunctionConfig)
    assert issubclass(type(fc).Config, FunctionConfig) and type(fc).name == name and FUNCTIONS[name] is type(fc)
    assert fc.describe() and "\n" not in fc.describe()
    assert fc.kind in ("regression", "classification")
    assert isinstance(fc.prompts(0, "train", 0, 1), Prompts)


def test_the_listing_is_the_registry_sorted():
    assert function_names() == sorted(FUNCTIONS) and len(FUNCTIONS) > 0


def test_the_classification_families_output_labels():
    for name in ("linear-classification", "logistic-regression", "sparse-parity"):
        assert get_function(name).kind == "classification"


def test_an_unknown_family_far_from_every_name_lists_them_all():
    with pytest.raises(BadInput) as e:
        get_function("zzz")
    assert str(e.value) == f"unknown function class 'zzz' (known: {', '.join(sorted(FUNCTIONS))})"


@pytest.mark.parametrize("name, params, scale", [
    ("linear-regression", {}, 20), ("linear-regression", {"n_dims": 7}, 7),
    ("noisy-linear-regression", {}, 20), ("quadratic-regression", {"n_dims": 5}, 5),
    ("relu-2nn-regression", {}, 20), ("sparse-linear-regression", {}, 3),
    ("sparse-linear-regression", {"sparsity": 6}, 6), ("decision-tree", {}, 1),
    ("linear-classification", {}, 1), ("logistic-regression", {}, 1), ("sparse-parity", {}, 1),
])
def test_error_scale_follows_garg_normalisation(name, params, scale):
    # Garg et al.'s plot_utils: n_dims for linear families, the sparsity for sparse regression, 1 for trees;
    # 1 for +-1 labels (the squared error of predicting 0).
    assert get_function(name, **params).error_scale == scale


def test_defaults_follow_the_papers():
    assert get_function("linear-regression").config.to_json() == {"n_dims": 20, "n_points": 41}
    assert get_function("sparse-linear-regression").config.sparsity == 3
    assert get_function("relu-2nn-regression").config.hidden == 100
    assert get_function("decision-tree").config.depth == 4
    assert get_function("noisy-linear-regression").config.noise_std == 1.0
    assert get_function("sparse-parity").config.n_dims == 10 and get_function("sparse-parity").config.k == 2
    assert get_function("linear-regression", n_points=5).prompts(0, "train", 0, 2).xs.shape == (2, 5, 20)


@pytest.mark.parametrize("name, params, message", [
    ("linear-regresion", {}, "unknown function class 'linear-regresion' (did you mean 'linear-regression'?)"),
    ("decision_tree", {}, "did you mean 'decision-tree'"),
    ("linear-regression", {"n_dim": 5}, "unknown key 'task.n_dim' (did you mean 'task.n_dims'?)"),
    ("relu-2nn-regression", {"hiden": 5}, "did you mean 'task.hidden'"),
    ("sparse-linear-regression", {"sparsty": 2}, "did you mean 'task.sparsity'"),
    ("linear-regression", {"n_dims": 0}, "invalid value for 'task.n_dims'"),
    ("linear-regression", {"n_points": 0}, "invalid value for 'task.n_points'"),
    ("sparse-linear-regression", {"n_dims": 4, "sparsity": 5}, "sparsity must lie in [1, n_dims=4]"),
    ("sparse-linear-regression", {"sparsity": 0}, "sparsity must lie in"),
    ("sparse-parity", {"n_dims": 3, "k": 4}, "k must lie in [1, n_dims=3]"),
    ("decision-tree", {"depth": 0}, "invalid value for 'task.depth'"),
    ("relu-2nn-regression", {"hidden": 0}, "invalid value for 'task.hidden'"),
    ("noisy-linear-regression", {"noise_std": -1}, "invalid value for 'task.noise_std'"),
    ("logistic-regression", {"scale": 0}, "invalid value for 'task.scale'"),
])
def test_bad_names_keys_and_values_are_bad_input(name, params, message):
    with pytest.raises(BadInput) as e:
        get_function(name, **params)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("call, message", [
    (lambda fc: fc.prompts(0, "valid", 0, 1), "unknown split 'valid'"),
    (lambda fc: fc.prompts(0, "train", -1, 1), "start from 0"),
    (lambda fc: fc.prompts(0, "train", 0, -1), "start from 0"),
    (lambda fc: fc.prompts(0, "train", 0, 1, n_points=0), "n_points must be at least 1"),
    (lambda fc: fc.prompts(0, "train", 0, 1, active_dims=0), "active_dims must lie in [1, n_dims=20]"),
    (lambda fc: fc.prompts(0, "train", 0, 1, active_dims=21), "active_dims must lie in"),
    (lambda fc: fc.params(0, "train", -3), "start from 0"),
    (lambda fc: fc.params("0", "train", 3), "seed must be an integer"),
])
def test_bad_prompt_arguments_are_bad_input(call, message):
    with pytest.raises(BadInput, match=message.replace("[", r"\[")):
        call(get_function("linear-regression"))


def test_empty_batch_and_large_indices():
    fc = get_function("linear-regression", n_dims=3)
    empty = fc.prompts(0, "train", 10, 0, n_points=4)
    assert empty.xs.shape == (0, 4, 3) and empty.ys.shape == (0, 4) and len(empty) == 0
    big = fc.prompts(0, "train", 2**80, 2)
    assert np.array_equal(big.xs[1], fc.prompts(0, "train", 2**80 + 1, 1).xs[0])
    assert not np.array_equal(fc.prompts(-1, "train", 0, 1).xs, fc.prompts(1, "train", 0, 1).xs)
    far_apart = [fc.prompts(0, "train", i, 1).xs[0] for i in (5, 1005, 5 + 2**32, 5 + 2**64, 5 + 2**70)]
    assert all(not np.array_equal(a, b) for k, a in enumerate(far_apart) for b in far_apart[k + 1:])


def test_params_do_not_depend_on_n_points_or_shift():
    fc = get_function("relu-2nn-regression", n_dims=4, hidden=3)
    base = fc.params(2, "test", 9)
    for kw in ({"n_points": 3}, {"shift": "skewed"}, {"active_dims": 2}):
        other = fc.params(2, "test", 9, **kw)
        assert all(np.array_equal(base[k], other[k]) for k in base)
    assert not np.array_equal(base["W1"], fc.params(2, "train", 9)["W1"])


@pytest.mark.parametrize("name", function_names())
def test_sample_record_is_json_and_readable(name):
    fc = get_function(name, n_points=6)
    rec = fc.sample_record(3, "test", 12)
    assert json.loads(json.dumps(rec)) == rec
    assert set(rec) == {"task", "prompt", "target", "meta"} and rec["task"] == name
    meta = rec["meta"]
    assert {"xs", "ys", "function", "answer"} <= set(meta)
    p = fc.prompts(3, "test", 12, 1)
    assert np.array_equal(np.array(meta["xs"], dtype=np.float32), p.xs[0])
    assert meta["ys"] == meta["answer"] == p.ys[0].tolist()
    assert meta["function"] == {k: v.tolist() for k, v in fc.params(3, "test", 12).items()}
    # "x_1 -> y_1; ...; x_k ->": the points up to the last scored one, k, which is the target (the sixth point
    # but in the families that skip points; with none scored, every point with its y and an empty target).
    scored = getattr(p, "scored", np.ones_like(p.ys, dtype=bool))[0]
    k = meta["target_point"]
    assert k == (int(np.flatnonzero(scored)[-1]) if scored.any() else None)
    if getattr(p, "scored", None) is None:
        assert k == 5
    parts = rec["prompt"].split("; ")
    if k is None:
        assert rec["target"] == "" and len(parts) == 6 and all(" -> " in s and not s.endswith("->") for s in parts)
    else:
        assert len(parts) == k + 1 and rec["prompt"].endswith(" ->") and all(" -> " in s for s in parts[:-1])
        assert math.isclose(float(rec["target"]), float(p.ys[0, k]), abs_tol=5.001e-5)
    first_x = json.loads(parts[0].split(" ->")[0])
    assert np.allclose(first_x, p.xs[0, 0], atol=5.001e-5)
    if k != 0:
        assert math.isclose(float(parts[0].split(" -> ")[1]), float(p.ys[0, 0]), abs_tol=5.001e-5)


def test_sample_record_with_a_shift_and_labels_as_integers():
    rec = get_function("linear-classification", n_points=3).sample_record(0, "train", 0, shift="scale-x=2")
    assert rec["target"] in ("1", "-1") and rec["meta"]["shift"] == "scale-x=2"


def test_module_exports_the_api():
    for name in ("FUNCTIONS", "FunctionClass", "FunctionConfig", "Prompts", "SHIFTS", "get_function", "function_names"):
        assert hasattr(function_classes, name)
