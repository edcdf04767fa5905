"""Logistic regression: y in {-1, +1} with P(y = +1) = sigmoid(w . x). Labels far from the boundary are
sign(w . x) (checked per point against the plain-Python logit); the frequency of +1 matches the sigmoid
within binomial error in every bin of the logit."""

import math

import numpy as np
from hypothesis import given, note, settings

from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import CASE_NUMBERS, case, check_prompts, function_of, function_tests, params_as_lists
from tests.tasks.reference_functions import dot

NAME = "logistic-regression"


def knobs(r):
    d = r.randint(1, 24)
    return {"n_dims": d, "scale": r.choice([1.0, 10.0, 0.1, 1 / math.sqrt(d)])}


@settings(max_examples=800, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_confident_labels_follow_the_sign_of_the_logit(number):
    c = case(number, knobs)
    note(f"knobs: {c}")
    p = check_prompts(NAME, c)
    fc = function_of(c, NAME)
    for j in range(2):
        w = params_as_lists(fc, c, c["index"] + j)["w"]
        for x, y in zip(p.xs[j].tolist(), p.ys[j].tolist()):
            z = dot(w, x)
            if abs(z) > 40:  # 1 - sigmoid(40) < 1e-17: below the resolution of a uniform double
                assert y == (1.0 if z > 0 else -1.0)


(_, test_prompt_is_a_pure_function_of_its_index, test_a_short_prompt_is_the_prefix_of_a_long_one,
 test_active_dims_zero_the_last_coordinates, test_mean_squared_output_is_the_error_scale) = function_tests(NAME, knobs)


def test_frequency_of_plus_one_is_the_sigmoid_of_the_logit():
    fc = get_function(NAME, n_dims=5, scale=0.5)
    n = 1500
    p = fc.prompts(0, "train", 0, n)
    w = np.stack([fc.params(0, "train", i)["w"] for i in range(n)])
    z = np.einsum("npd,nd->np", p.xs.astype(np.float64), w).ravel()
    y = p.ys.ravel()
    edges = np.quantile(z, np.linspace(0, 1, 11))
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (z >= lo) & (z < hi)
        want = np.mean(1 / (1 + np.exp(-z[inside])))
        got = np.mean(y[inside] == 1)
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / inside.sum()) + 1e-3, (lo, hi, got, want)


def test_w_scales_with_the_scale_knob():
    one, ten = get_function(NAME, scale=1.0), get_function(NAME, scale=10.0)
    assert np.allclose(ten.params(1, "test", 3)["w"], 10 * one.params(1, "test", 3)["w"])
    assert one.kind == "classification" and one.error_scale == 1.0
