"""Sparse linear regression (Garg et al. 2022): every prompt against the plain-Python dot product, and every
w has exactly min(sparsity, active_dims) nonzero coordinates, all among the active ones."""

import numpy as np

from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import function_tests


def knobs(r):
    d = r.randint(1, 24)
    return {"n_dims": d, "sparsity": r.randint(1, d)}


def check_params(p, cfg, active):
    support = p["support"]
    assert support == sorted(set(support)) and all(0 <= j < active for j in support)
    assert len(support) == min(cfg["sparsity"], active)  # Garg: perm(valid_coords)[:sparsity]
    assert [j for j, wj in enumerate(p["w"]) if wj != 0] == support
    assert len(p["w"]) == cfg["n_dims"]


(test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
 test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
 test_mean_squared_output_is_the_error_scale) = function_tests("sparse-linear-regression", knobs, check_params)


def test_support_is_uniform_over_the_coordinates():
    fc = get_function("sparse-linear-regression", n_dims=10, sparsity=3)
    counts = np.zeros(10)
    for i in range(2000):
        counts[fc.params(0, "train", i)["support"]] += 1
    assert counts.sum() == 6000 and np.all(np.abs(counts - 600) < 5 * np.sqrt(600))


def test_error_scale_is_the_sparsity():
    assert get_function("sparse-linear-regression", sparsity=5).error_scale == 5.0
