"""Sparse parity (Park et al. 2024): x in {-1, +1}^d, y = the product of the k secret coordinates, checked
per point in plain Python; the secret is k distinct active coordinates."""

import numpy as np
import pytest

from seqlab.core.errors import BadInput
from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import function_tests


def knobs(r):
    d = r.randint(1, 16)
    return {"n_dims": d, "k": r.randint(1, min(d, 5))}


def check_params(p, cfg, active):
    secret = p["secret"]
    assert secret == sorted(set(secret)) and len(secret) == cfg["k"] and all(0 <= s < active for s in secret)


(test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
 test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
 test_mean_squared_output_is_the_error_scale) = function_tests("sparse-parity", knobs, check_params)


def test_inputs_are_uniform_signs_and_labels_balanced():
    fc = get_function("sparse-parity")
    assert fc.config.n_dims == 10 and fc.config.k == 2  # Park et al.'s setting
    p = fc.prompts(0, "train", 0, 300)
    assert set(np.unique(p.xs)) == {-1.0, 1.0}
    assert np.all(np.abs(p.xs.mean(axis=(0, 1))) < 0.03)
    assert abs(p.ys.mean()) < 0.03


def test_each_coordinate_alone_says_nothing_about_the_label():
    # A parity of k >= 2 bits is uncorrelated with every single coordinate, the secret ones included.
    fc = get_function("sparse-parity", n_dims=6, k=2)
    p = fc.prompts(1, "train", 0, 400)
    corr = np.mean(p.xs * p.ys[:, :, None], axis=(0, 1))
    assert np.all(np.abs(corr) < 0.03)


def test_secret_needs_k_active_coordinates():
    fc = get_function("sparse-parity", n_dims=10, k=3)
    with pytest.raises(BadInput, match="active_dims"):
        fc.prompts(0, "train", 0, 1, active_dims=2)
    p = fc.prompts(0, "train", 0, 50, active_dims=3)
    assert all(fc.params(0, "train", i, active_dims=3)["secret"].tolist() == [0, 1, 2] for i in range(50))
    assert np.array_equal(p.ys, np.prod(p.xs[:, :, :3], axis=2))
