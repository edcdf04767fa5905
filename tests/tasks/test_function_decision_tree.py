"""Decision trees (Garg et al. 2022): every prompt against a recursive walk of the tree read back from
`params` (x[c] > 0 goes right), and the tree has Garg's shape: 2^depth - 1 coordinates, 2^depth leaves."""

import numpy as np

from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import function_tests


def knobs(r):
    return {"n_dims": r.randint(1, 24), "depth": r.choice([1, 2, 3, 4, 4, 6])}


def check_params(p, cfg, active):
    depth = cfg["depth"]
    assert len(p["coords"]) == 2**depth - 1 and len(p["leaves"]) == 2**depth
    assert all(0 <= c < cfg["n_dims"] for c in p["coords"])  # over all coordinates, as in Garg's code


(test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
 test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
 test_mean_squared_output_is_the_error_scale) = function_tests("decision-tree", knobs, check_params)


def test_outputs_are_leaf_values_and_every_leaf_is_reached():
    fc = get_function("decision-tree", n_dims=20, depth=4)
    p = fc.prompts(0, "test", 0, 1, n_points=4000)
    leaves = fc.params(0, "test", 0)["leaves"]
    assert set(p.ys[0].tolist()) <= set(leaves.astype(np.float32).tolist())
    # x[c] > 0 is a fair coin at every node, so each of the 16 leaves is reached about 4000 / 16 times.
    counts = [np.sum(p.ys[0] == np.float32(v)) for v in leaves]
    assert all(abs(k - 250) < 5 * np.sqrt(250) for k in counts)


def test_zeroed_coordinates_go_left():
    fc = get_function("decision-tree", n_dims=3, depth=1)
    for i in range(50):
        fn = fc.params(0, "train", i)
        if fn["coords"][0] != 0:
            ys = fc.prompts(0, "train", i, 1, active_dims=1).ys[0]
            assert np.all(ys == np.float32(fn["leaves"][0]))
