"""Checks shared by the in-context function classes' test files.

As in checks_strings.py, Hypothesis draws one 64-bit case number per example and a seeded PRNG turns it
into the knobs (the family's config, seed, split, index up to 2**70, n_points 1..45, active_dims), which
keeps Hypothesis's own cost per example low. Every example checks two prompts, point by point, against
the plain-Python references of reference_functions.py, reading the function back through `params`.
"""

import functools
import math
import random

import numpy as np
from hypothesis import given, note, settings
from hypothesis import strategies as st

from seqlab.tasks.function_classes import get_function
from tests.tasks.reference_functions import DETERMINISTIC, REFERENCES, assert_matches

CASE_NUMBERS = st.integers(0, 2**64 - 1)


def case(number: int, knobs) -> dict:
    """The knobs of one example. `knobs(r)` draws the family's config (with n_dims) from the PRNG r."""
    r = random.Random(number)
    cfg = knobs(r)
    d = cfg["n_dims"]
    lowest_active = cfg.get("k", 1)
    return dict(
        cfg=cfg,
        seed=r.choice([r.getrandbits(32), r.randint(-3, 3)]),
        split=r.choice(["train", "test"]),
        index=r.randrange(r.choice([50, 10**9, 2**70])),
        n_points=r.choice([None, 1, 2, r.randint(1, 45)]),
        active_dims=None if r.random() < 0.4 else r.randint(lowest_active, d),
    )


@functools.cache
def shared_function(name: str, cfg_items: tuple):
    """One object per config, reused across examples (it must keep no state)."""
    return get_function(name, **dict(cfg_items))


def function_of(c: dict, name: str):
    return shared_function(name, tuple(sorted(c["cfg"].items())))


def params_as_lists(fc, c: dict, i: int) -> dict:
    return {k: v.tolist() for k, v in fc.params(c["seed"], c["split"], i, active_dims=c["active_dims"]).items()}


def check_prompts(name: str, c: dict, n: int = 2, check_params=None, reference=None):
    """Prompts index .. index + n - 1 of case c: shapes, dtypes, zeroed coordinates, and (for deterministic
    families, or with `reference`) every y against the plain-Python reference. Returns the prompts."""
    fc = function_of(c, name)
    d = c["cfg"]["n_dims"]
    n_points = c["n_points"] or fc.config.n_points
    active = c["active_dims"] or d
    p = fc.prompts(c["seed"], c["split"], c["index"], n, n_points=c["n_points"], active_dims=c["active_dims"])
    assert p.xs.shape == (n, n_points, d) and p.ys.shape == (n, n_points)
    assert p.xs.dtype == np.float32 and p.ys.dtype == np.float32
    assert np.isfinite(p.xs).all() and np.isfinite(p.ys).all()
    assert not p.xs[:, :, active:].any()  # Garg's curriculum: coordinates from active_dims on are zero
    if fc.kind == "classification":
        assert set(np.unique(p.ys)) <= {-1.0, 1.0}
    reference = reference or (REFERENCES[name] if name in DETERMINISTIC else None)
    for j in range(n):
        fn = params_as_lists(fc, c, c["index"] + j)
        if check_params is not None:
            check_params(fn, c["cfg"], active)
        if reference is None:
            continue
        for x, y in zip(p.xs[j].tolist(), p.ys[j].tolist()):
            assert_matches(fc.kind, y, reference(fn, x, c["cfg"]), fn, x)
    return p


def function_tests(name: str, knobs, check_params=None, examples: int = 1200):
    """The tests every family shares: prompts against the reference (Hypothesis), purity and slicing,
    prefixes, zeroed coordinates, the second moment against error_scale."""

    @settings(max_examples=examples, deadline=None, derandomize=True)
    @given(CASE_NUMBERS)
    def test_every_prompt_matches_the_reference(number):
        c = case(number, knobs)
        note(f"knobs: {c}")
        check_prompts(name, c, check_params=check_params)

    def test_prompt_is_a_pure_function_of_its_index():
        fc = get_function(name)
        batch = fc.prompts(5, "train", 100, 12)
        for j in (0, 3, 11):
            one = get_function(name).prompts(5, "train", 100 + j, 1)  # a fresh object, a batch of one
            assert np.array_equal(one.xs[0], batch.xs[j]) and np.array_equal(one.ys[0], batch.ys[j])
        again = fc.prompts(5, "train", 100, 12)
        assert np.array_equal(again.xs, batch.xs) and np.array_equal(again.ys, batch.ys)
        middle = fc.prompts(5, "train", 104, 5)
        assert np.array_equal(middle.xs, batch.xs[4:9]) and np.array_equal(middle.ys, batch.ys[4:9])
        for other in (fc.prompts(5, "test", 100, 12), fc.prompts(6, "train", 100, 12)):
            assert not np.array_equal(other.xs, batch.xs)  # another split or seed: another stream
            assert not any(np.array_equal(a, b) for a in other.xs for b in batch.xs)
        assert all(not np.array_equal(batch.xs[0], batch.xs[j]) for j in range(1, 12))

    def test_a_short_prompt_is_the_prefix_of_a_long_one():
        fc = get_function(name)
        long = fc.prompts(2, "test", 7, 6, n_points=30)
        for k in (1, 2, 17):
            short = fc.prompts(2, "test", 7, 6, n_points=k)
            assert np.array_equal(short.xs, long.xs[:, :k]) and np.array_equal(short.ys, long.ys[:, :k])

    def test_active_dims_zero_the_last_coordinates():
        fc = get_function(name)
        d = fc.config.n_dims
        full = fc.prompts(3, "train", 0, 20)
        for active in (fc.min_active, d // 2 + 1, d):
            cut = fc.prompts(3, "train", 0, 20, active_dims=active)
            assert not cut.xs[:, :, active:].any()
            # The same underlying points: the active coordinates are the full prompt's.
            assert np.array_equal(cut.xs[:, :, :active], full.xs[:, :, :active])

    def test_mean_squared_output_is_the_error_scale():
        # error_scale normalises squared error (Garg's plots): E[y^2], the error of predicting 0. This
        # checks the families' scalings (1/sqrt(3), sqrt(2/h), the sparsity) on 1000 prompts.
        fc = get_function(name)
        ys = fc.prompts(11, "train", 0, 1000).ys.astype(np.float64)
        assert math.isclose(np.mean(ys**2), fc.error_scale, rel_tol=0.08), (np.mean(ys**2), fc.error_scale)

    return (test_every_prompt_matches_the_reference, test_prompt_is_a_pure_function_of_its_index,
            test_a_short_prompt_is_the_prefix_of_a_long_one, test_active_dims_zero_the_last_coordinates,
            test_mean_squared_output_is_the_error_scale)
