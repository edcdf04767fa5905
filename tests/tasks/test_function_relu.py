"""Two-layer ReLU networks (Garg et al. 2022): every prompt against explicit loops over the hidden units,
y = sqrt(2 / h) * sum_k a_k max(0, sum_j W_jk x_j). Hypothesis uses small networks (the loops are slow);
the paper's size (d = 20, h = 100) is checked on a few prompts."""

import numpy as np

from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import case, check_prompts, function_tests


def knobs(r):
    return {"n_dims": r.randint(1, 10), "hidden": r.randint(1, 6)}


def check_params(p, cfg, active):
    assert np.shape(p["W1"]) == (cfg["n_dims"], cfg["hidden"]) and np.shape(p["W2"]) == (cfg["hidden"],)


(test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
 test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
 test_mean_squared_output_is_the_error_scale) = function_tests("relu-2nn-regression", knobs, check_params, examples=800)


def test_paper_sized_networks_match_the_reference():
    for number in range(3):
        c = case(number, lambda r: {"n_dims": 20, "hidden": 100})
        c["n_points"] = 12
        check_prompts("relu-2nn-regression", c, check_params=check_params)


def test_some_units_are_inactive_on_some_points():
    # A check that the nonlinearity is exercised: the output is not linear in x.
    fc = get_function("relu-2nn-regression", n_dims=4, hidden=3)
    p = fc.prompts(0, "train", 0, 1, n_points=200)
    xs, ys = p.xs[0].astype(np.float64), p.ys[0].astype(np.float64)
    coef, residual, *_ = np.linalg.lstsq(xs, ys, rcond=None)
    assert residual[0] > 1e-3 * np.sum(ys**2)
