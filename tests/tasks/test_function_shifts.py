"""Out-of-distribution shifts (Garg et al. 2022, `build_evals`): each shifted prompt is compared with the
unshifted prompt of the same index (same function, same underlying xs) and checked against the shift's
definition, and its ys still equal the plain-Python reference on the shifted xs.

- skewed / half-subspace: x -> x @ T, with T's spectrum checked independently (eigenvalues);
- scale-x=S, scale-y=S: x or y multiplied by S;
- random-quadrants: the context in one orthant, the query unchanged;
- orthogonal: the query is orthogonal to every context x, with its norm (a least-squares residual check);
- overlapping: the query is one of the context xs;
- noisy-y: unit Gaussian noise, then the noiseless scale restored.
"""

import math
import random

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.function_classes import SHIFTS, function_names, get_function, parse_shift, shift_matrix
from tests.tasks.checks_functions import CASE_NUMBERS, shared_function
from tests.tasks.reference_functions import DETERMINISTIC, REFERENCES, assert_matches

GAUSSIAN = [name for name in function_names() if name != "sparse-parity"]


def shift_case(number: int) -> dict:
    r = random.Random(number)
    name = r.choice(GAUSSIAN)
    d = r.randint(2, 12)
    cfg = {"n_dims": d}
    if name == "relu-2nn-regression":
        cfg["hidden"] = r.randint(1, 5)
    if name == "sparse-linear-regression":
        cfg["sparsity"] = r.randint(1, d)
    fc = shared_function(name, tuple(sorted(cfg.items())))
    return dict(name=name, fc=fc, cfg=cfg, shift=r.choice(fc.shifts()), seed=r.getrandbits(16),
                split=r.choice(["train", "test"]), index=r.randrange(10**6),
                n_points=r.choice([1, 2, r.randint(1, 2 * d + 2)]),
                active_dims=None if r.random() < 0.5 else r.randint(1, d))


@pytest.mark.slow
@settings(max_examples=2500, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_shifted_prompts_follow_the_definitions(number):
    c = shift_case(number)
    note(f"case: { {k: v for k, v in c.items() if k != 'fc'} }")
    fc, shift, d, active = c["fc"], parse_shift(c["shift"]), c["cfg"]["n_dims"], c["active_dims"] or c["cfg"]["n_dims"]
    args = (c["seed"], c["split"], c["index"], 2)
    kw = dict(n_points=c["n_points"], active_dims=c["active_dims"])
    got = fc.prompts(*args, **kw, shift=c["shift"])
    plain = fc.prompts(*args, **kw)
    raw = fc.prompts(*args, n_points=c["n_points"])  # the same points with every coordinate active
    assert got.xs.shape == plain.xs.shape and got.xs.dtype == np.float32 and got.ys.dtype == np.float32
    assert not got.xs[:, :, active:].any()
    x, x0 = got.xs.astype(np.float64), plain.xs.astype(np.float64)

    if shift.name in ("skewed", "half-subspace"):
        want = raw.xs.astype(np.float64) @ shift_matrix(shift.name, c["seed"], d)
        want[:, :, active:] = 0
        assert np.allclose(x, want, rtol=1e-5, atol=1e-5)
    elif shift.name.startswith("scale-x"):
        assert np.allclose(x, shift.factor * x0, rtol=1e-6, atol=0)
    elif shift.acts_on == "outputs":
        assert np.array_equal(got.xs, plain.xs)
        if shift.name.startswith("scale-y"):
            assert np.allclose(got.ys, shift.factor * plain.ys, rtol=1e-6, atol=1e-30)
    else:  # a query shift: the context is the plain context (or its orthant image), the query changes
        context, query = x[:, :-1], x[:, -1]
        if shift.name == "random-quadrants":
            assert np.array_equal(np.abs(got.xs[:, :-1]), np.abs(plain.xs[:, :-1]))
            signs = np.sign(context)
            nonzero = signs != 0
            first = signs[:, :1]  # every context point's signs equal the first point's, where nonzero
            assert np.all((signs == first) | ~nonzero | (first == 0))
            assert np.array_equal(got.xs[:, -1], plain.xs[:, -1])
        else:
            assert np.array_equal(got.xs[:, :-1], plain.xs[:, :-1])
        n_context = x.shape[1] - 1
        if shift.name == "overlapping" and n_context:
            assert all(any(np.array_equal(query[j], row) for row in context[j]) for j in range(2))
        if shift.name == "orthogonal" and n_context:
            for j in range(2):
                if n_context >= active:
                    assert not query[j].any()  # nothing is orthogonal to a spanning context (Garg: zeros)
                    continue
                norm = np.linalg.norm(x0[j, -1])
                assert math.isclose(np.linalg.norm(query[j]), norm, rel_tol=1e-5)
                assert np.all(np.abs(context[j] @ query[j]) <= 1e-5 * norm * np.linalg.norm(context[j], axis=1) + 1e-9)
                # The query is the normalised least-squares residual of the plain query on the context.
                coef, *_ = np.linalg.lstsq(context[j].T, x0[j, -1], rcond=None)
                residual = x0[j, -1] - context[j].T @ coef
                assert np.allclose(query[j], residual * norm / np.linalg.norm(residual), atol=1e-4 * (1 + norm))

    if c["name"] in DETERMINISTIC and shift.acts_on != "outputs":
        for j in range(2):
            fn = {k: v.tolist() for k, v in fc.params(c["seed"], c["split"], c["index"] + j,
                                                      active_dims=c["active_dims"]).items()}
            for xi, yi in zip(got.xs[j].tolist(), got.ys[j].tolist()):
                assert_matches(fc.kind, yi, REFERENCES[c["name"]](fn, xi, c["cfg"]), fn, xi)


@pytest.mark.parametrize("d", [1, 2, 5, 20])
def test_skewed_and_half_subspace_matrices_have_garg_spectra(d):
    lam = 1 / np.arange(1, d + 1)
    t = shift_matrix("skewed", 3, d)
    assert np.allclose(t, t.T)
    assert np.allclose(np.sort(np.linalg.eigvalsh(t))[::-1], lam * math.sqrt(d / np.sum(lam**2)))
    assert np.array_equal(t, shift_matrix("skewed", 3, d))  # one matrix per seed, shared by every prompt
    if d >= 2:
        assert not np.allclose(t, shift_matrix("skewed", 4, d))
        h = shift_matrix("half-subspace", 3, d)
        eig = np.sort(np.linalg.eigvalsh(h))[::-1]
        half = d // 2
        assert np.allclose(eig[:half], math.sqrt(d / half)) and np.allclose(eig[half:], 0, atol=1e-9)
    assert np.allclose(shift_matrix("scale-x=3", 3, d), 3 * np.eye(d))
    assert shift_matrix("orthogonal", 3, d) is None


def test_half_subspace_points_span_half_the_dimensions_with_the_same_mean_norm():
    fc = get_function("linear-regression", n_dims=10)
    xs = fc.prompts(0, "test", 0, 200, shift="half-subspace").xs.reshape(-1, 10).astype(np.float64)
    assert np.linalg.matrix_rank(xs, tol=1e-3 * np.linalg.norm(xs, 2)) == 5
    assert math.isclose(np.mean(np.sum(xs**2, axis=1)), 10, rel_tol=0.05)
    skewed = fc.prompts(0, "test", 0, 200, shift="skewed").xs.reshape(-1, 10).astype(np.float64)
    assert math.isclose(np.mean(np.sum(skewed**2, axis=1)), 10, rel_tol=0.05)


@pytest.mark.parametrize("name", ["linear-regression", "decision-tree", "relu-2nn-regression"])
def test_noisy_y_adds_unit_noise_and_restores_the_scale(name):
    fc = get_function(name, n_dims=8)
    v = fc.error_scale
    c = math.sqrt(v / (v + 1))
    got, plain = fc.prompts(1, "test", 0, 600, shift="noisy-y"), fc.prompts(1, "test", 0, 600)
    e = (got.ys.astype(np.float64) / c - plain.ys).ravel()
    assert abs(e.mean()) < 0.02 and abs(e.var() - 1) < 0.04
    assert math.isclose(np.mean(got.ys.astype(np.float64) ** 2), v, rel_tol=0.1)


def test_overlapping_picks_every_context_point_equally_often():
    fc = get_function("linear-regression", n_dims=5)
    p = fc.prompts(0, "test", 0, 2000, n_points=5, shift="overlapping")
    picks = [next(k for k in range(4) if np.array_equal(p.xs[j, -1], p.xs[j, k])) for j in range(2000)]
    counts = np.bincount(picks, minlength=4)
    assert np.all(np.abs(counts - 500) < 5 * math.sqrt(500))


def test_random_quadrants_orthants_vary_between_prompts():
    fc = get_function("linear-regression", n_dims=6)
    p = fc.prompts(0, "test", 0, 100, n_points=4, shift="random-quadrants")
    patterns = {tuple(np.sign(p.xs[j, 0]).tolist()) for j in range(100)}
    assert len(patterns) > 40


def test_which_shifts_each_family_accepts():
    for name in function_names():
        fc = get_function(name)
        for s in SHIFTS:
            if s in fc.shifts():
                fc.prompts(0, "test", 0, 2, shift=s)
            else:
                with pytest.raises(BadInput, match=name):
                    fc.prompts(0, "test", 0, 2, shift=s)
    assert get_function("sparse-parity").shifts() == ("overlapping",)
    assert "scale-y=2" not in get_function("linear-classification").shifts()
    assert "noisy-y" not in get_function("logistic-regression").shifts()
    assert set(get_function("quadratic-regression").shifts()) == set(SHIFTS)


@pytest.mark.parametrize("text, message", [
    ("skewd", "did you mean 'skewed'"),
    ("orthogonl", "did you mean 'orthogonal'"),
    ("scale-x", "needs a positive factor"),
    ("scale-y=-2", "needs a positive factor"),
    ("scale-x=abc", "needs a positive factor"),
    ("rotate", "unknown shift 'rotate'"),
])
def test_bad_shift_names_are_bad_input(text, message):
    with pytest.raises(BadInput, match=message):
        get_function("linear-regression").prompts(0, "test", 0, 1, shift=text)


def test_any_positive_scale_is_accepted_and_half_subspace_needs_two_dims():
    fc = get_function("linear-regression", n_dims=4)
    assert np.allclose(fc.prompts(0, "test", 0, 3, shift="scale-x=1.5").xs, 1.5 * fc.prompts(0, "test", 0, 3).xs)
    with pytest.raises(BadInput, match="n_dims >= 2"):
        get_function("linear-regression", n_dims=1).prompts(0, "test", 0, 1, shift="half-subspace")
