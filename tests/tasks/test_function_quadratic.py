"""Quadratic regression (Garg et al. 2022): every prompt against y = sum_j w_j x_j^2 / sqrt(3) in plain Python."""

from tests.tasks.checks_functions import function_tests


def knobs(r):
    return {"n_dims": r.randint(1, 24)}


(test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
 test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
 test_mean_squared_output_is_the_error_scale) = function_tests("quadratic-regression", knobs)
