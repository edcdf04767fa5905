"""The decoding recipe's matched comparison of typical and top-p, on curves made by hand."""

import math

import pytest

from seqlab.recipes.decoding import matched_gap_difference


def test_typical_closer_at_matched_diversity_is_positive():
    # top-p: distinct-4 0.2 -> 0.8 with true surprise 1.0 -> 2.0 (gap to H = 2.0: 1.0 -> 0.0, linear in distinct-4)
    curves = {"top_p": {"distinct4": [0.8, 0.2], "true_surprise": [2.0, 1.0]},
              "typical": {"distinct4": [0.5, 0.1, 0.35], "true_surprise": [1.9, 0.0, 1.5]}}
    diff, matched = matched_gap_difference(curves, entropy_rate=2.0)
    # at 0.5 top-p's gap is 0.5, typical's 0.1: +0.4; at 0.35 top-p's is 0.75, typical's 0.5: +0.25; 0.1 is unmatched
    assert matched == 2 and diff == pytest.approx((0.4 + 0.25) / 2)


def test_top_p_closer_is_negative_and_no_overlap_is_nan():
    curves = {"top_p": {"distinct4": [0.2, 0.8], "true_surprise": [2.0, 2.0]},
              "typical": {"distinct4": [0.5], "true_surprise": [1.0]}}
    assert matched_gap_difference(curves, 2.0) == (pytest.approx(-1.0), 1)
    curves["typical"]["distinct4"] = [0.9]
    diff, matched = matched_gap_difference(curves, 2.0)
    assert matched == 0 and math.isnan(diff)
