"""Linear classification (Garg et al. 2022): every label against sign(sum_j w_j x_j) computed in plain Python."""

from seqlab.tasks.function_classes import get_function
from tests.tasks.checks_functions import function_tests


def knobs(r):
    return {"n_dims": r.randint(1, 24)}


(test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
 test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
 test_mean_squared_output_is_the_error_scale) = function_tests("linear-classification", knobs)


def test_labels_are_balanced_and_kind_is_classification():
    fc = get_function("linear-classification")
    assert fc.kind == "classification" and fc.error_scale == 1.0
    assert abs(fc.prompts(0, "train", 0, 500).ys.mean()) < 0.05
