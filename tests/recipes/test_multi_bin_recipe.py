"""The multi-bin recipe's length laws and its noise trend, on numbers made by hand."""

import numpy as np

from seqlab.recipes.multi_bin_batching import draw_lengths, noise_trend


def test_length_laws_stay_in_range_and_the_tail_is_mostly_short():
    rng = np.random.default_rng(0)
    u = np.array(draw_lengths(20000, 48, "uniform", 1.2, rng))
    t = np.array(draw_lengths(20000, 48, "long_tail", 1.2, rng))
    assert u.min() == 1 and u.max() == 48 and t.min() == 1 and t.max() == 48
    assert abs(u.mean() - 24.5) < 0.5
    p = np.arange(1, 49, dtype=float) ** -1.2
    assert abs(t.mean() - (np.arange(1, 49) * p).sum() / p.sum()) < 0.3 and np.median(t) < 8


def test_noise_trend_finds_the_first_sigma_below_five_percent():
    s = {"bins": [1, 2, 4], "sigmas": [0.1, 0.5, 1.0]}
    sim = {"static": {"requests_per_s": 10.0}, "bins=4 oracle": {"requests_per_s": 14.0},
           "bins=4 noisy sigma=0.1": {"requests_per_s": 13.0}, "bins=4 noisy sigma=0.5": {"requests_per_s": 10.4},
           "bins=4 noisy sigma=1": {"requests_per_s": 10.1}}
    t = noise_trend(sim, s)
    assert t["bins"] == 4 and t["sigma_below_5pct"] == 0.5
    assert np.allclose(list(t["gain_by_sigma"].values()), [0.4, 0.3, 0.04, 0.01])
