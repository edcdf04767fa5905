"""Noisy linear regression (Garg et al. 2022): y = (w . x + noise_std * e) * c. Without noise every prompt
matches the plain-Python reference; with noise, the residual y / c - w . x is N(0, noise_std^2) per point,
independent of x, and the renormaliser restores E[y^2] = d."""

import math

import numpy as np
from hypothesis import given, note, settings

from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import CASE_NUMBERS, case, check_prompts, function_of, function_tests, params_as_lists
from tests.tasks.reference_functions import dot, noisy_linear_regression_without_noise

NAME = "noisy-linear-regression"


def knobs(r):
    return {"n_dims": r.randint(1, 24), "noise_std": r.choice([0.0, 0.0, 0.5, 1.0, 3.0]),
            "renormalize": r.random() < 0.5}


@settings(max_examples=800, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_noiseless_prompts_match_and_noise_is_bounded(number):
    c = case(number, knobs)
    note(f"knobs: {c}")
    if c["cfg"]["noise_std"] == 0:
        check_prompts(NAME, c, reference=noisy_linear_regression_without_noise)
        return
    p = check_prompts(NAME, c)
    fc = function_of(c, NAME)
    for j in range(2):
        w = params_as_lists(fc, c, c["index"] + j)["w"]
        for x, y in zip(p.xs[j].tolist(), p.ys[j].tolist()):
            residual = y / fc.renormalizer - dot(w, x)
            assert abs(residual) < 7 * c["cfg"]["noise_std"] + 1e-4 * (1 + abs(y))


(_, test_prompt_is_a_pure_function_of_its_index, test_a_short_prompt_is_the_prefix_of_a_long_one,
 test_active_dims_zero_the_last_coordinates, test_mean_squared_output_is_the_error_scale) = function_tests(NAME, knobs)


def residuals(fc, n=600):
    p = fc.prompts(4, "train", 0, n)
    w = np.stack([fc.params(4, "train", i)["w"] for i in range(n)])
    clean = np.einsum("npd,nd->np", p.xs.astype(np.float64), w)
    return p.ys / fc.renormalizer - clean, clean


def test_noise_is_gaussian_with_the_configured_std_and_independent_of_x():
    for std, renormalize in ((1.0, True), (2.5, False)):
        fc = get_function(NAME, noise_std=std, renormalize=renormalize)
        e, clean = residuals(fc)
        e = e.ravel() / std
        assert abs(e.mean()) < 0.02 and abs(e.var() - 1) < 0.03
        assert abs(np.mean(e**4) - 3) < 0.15  # Gaussian kurtosis
        assert abs(np.corrcoef(e, clean.ravel())[0, 1]) < 0.02
        # Garg et al.'s renormalize_ys: the noisy y is rescaled to the noiseless scale sqrt(d).
        want = math.sqrt(20 / (20 + std**2)) if renormalize else 1.0
        assert math.isclose(fc.renormalizer, want)


def test_noise_differs_between_points_and_prompts():
    e, _ = residuals(get_function(NAME), n=50)
    assert len(np.unique(np.round(e, 5))) > 0.99 * e.size


def test_error_scale_is_n_dims():
    assert get_function(NAME, n_dims=7).error_scale == 7.0
