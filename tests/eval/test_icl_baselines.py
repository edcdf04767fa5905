"""Classical in-context baselines: each checked against an independent computation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab.eval.icl_baselines as icl
from seqlab.core.errors import BadInput
from seqlab.eval.icl_baselines import BASELINES, baseline_names, missing_reason, run_baseline
from seqlab.eval.icl_baselines_trees import tree_fit_predict

torch.set_num_threads(1)

shapes = st.tuples(st.integers(1, 4), st.integers(1, 14), st.integers(1, 6), st.integers(0, 2**31 - 1))  # B, k, d, seed


def prompts(n_prompts, k, d, seed, linear=False):
    """Gaussian float32 prompts; ys = <w, x> when linear, else independent Gaussian values."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n_prompts, k, d)).astype(np.float32)
    w = rng.standard_normal((n_prompts, d))
    if linear:  # exact in float64, so least squares can be held to 1e-8
        return xs, np.einsum("bkd,bd->bk", xs.astype(np.float64), w)
    return xs, rng.standard_normal((n_prompts, k)).astype(np.float32)


def needs(name):
    reason = missing_reason(name)
    if reason:
        pytest.skip(reason)


def block_imports(monkeypatch, *packages):
    """Make `import package` (and its submodules, even ones imported already) raise ImportError."""
    for module in list(sys.modules):
        if module.split(".")[0] in packages:
            monkeypatch.setitem(sys.modules, module, None)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


# --- linear learners -------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(shapes)
def test_least_squares_is_min_norm_lstsq_and_exact_once_determined(shape):
    n_prompts, k, d, seed = shape
    xs, ys = prompts(n_prompts, k, d, seed, linear=True)
    preds = run_baseline("least-squares", xs, ys)
    assert np.all(preds[:, 0] == 0)
    for b in range(n_prompts):
        for i in range(1, k):
            if i >= d:  # the prefix determines w: noiseless data are predicted exactly
                assert abs(preds[b, i] - ys[b, i]) < 1e-8
            w, *_ = np.linalg.lstsq(xs[b, :i].astype(np.float64), ys[b, :i], rcond=None)  # the minimum-norm solution
            assert preds[b, i] == pytest.approx(xs[b, i] @ w, abs=1e-9, rel=1e-7)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_ridge_matches_normal_equations(shape):
    xs, ys = prompts(*shape)
    preds = run_baseline("ridge", xs, ys)
    for b in range(xs.shape[0]):
        for i in range(1, xs.shape[1]):
            x, y = xs[b, :i].astype(np.float64), ys[b, :i].astype(np.float64)
            w = np.linalg.solve(x.T @ x + icl.RIDGE_ALPHA * np.eye(x.shape[1]), x.T @ y)
            assert preds[b, i] == pytest.approx(xs[b, i] @ w, abs=1e-9, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_averaging_matches_a_loop(shape):
    xs, ys = prompts(*shape)
    preds = run_baseline("averaging", xs, ys)
    for b in range(xs.shape[0]):
        for i in range(1, xs.shape[1]):
            w = [sum(float(ys[b, j]) * float(xs[b, j, c]) for j in range(i)) / i for c in range(xs.shape[2])]
            assert preds[b, i] == pytest.approx(sum(wc * float(xc) for wc, xc in zip(w, xs[b, i])), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_three_nearest_neighbours_match_brute_force(shape):
    xs, ys = prompts(*shape)
    preds = run_baseline("3-nn", xs, ys)
    for b in range(xs.shape[0]):
        for i in range(1, xs.shape[1]):
            by_distance = sorted(range(i), key=lambda j: float(np.sum((xs[b, j].astype(float) - xs[b, i]) ** 2)))
            assert preds[b, i] == pytest.approx(sum(float(ys[b, j]) for j in by_distance[:3]) / min(i, 3), abs=1e-9)


def _logistic_by_gradient_descent(x, labels, l2, steps=3000):
    """Plain gradient descent on sum log(1 + exp(-t w.x)) + l2/2 |w|^2 with step 1/L (L bounds the curvature)."""
    w = np.zeros(x.shape[1])
    step = 1.0 / (np.linalg.norm(x, 2) ** 2 / 4 + l2)
    for _ in range(steps):
        grad = -x.T @ (labels / (1 + np.exp(labels * (x @ w)))) + l2 * w
        w -= step * grad
    return w


@pytest.mark.parametrize("seed", range(3))
def test_newton_logistic_reaches_the_regularised_optimum(seed):
    xs, ys = prompts(3, 12, 4, seed, linear=True)
    labels = np.where(ys > 0, 1.0, -1.0)
    labels[:, 1::5] *= -1  # some label noise, so later prefixes are not separable
    preds = run_baseline("newton-logistic", xs, labels)
    for b in range(3):
        for i in (1, 3, 8, 11):
            w = _logistic_by_gradient_descent(xs[b, :i].astype(np.float64), labels[b, :i], icl.NEWTON_L2)
            assert preds[b, i] == pytest.approx(np.tanh(xs[b, i] @ w / 2), abs=1e-7)
            assert -1 < preds[b, i] < 1


def test_newton_logistic_matches_sklearn():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    xs, ys = prompts(4, 30, 6, 7, linear=True)
    labels = np.where(ys > 0, 1.0, -1.0)
    labels[:, ::4] *= -1
    preds = run_baseline("newton-logistic", xs, labels, prefixes=[4, 12, 29])
    for b in range(4):
        for i in (4, 12, 29):
            if len(set(labels[b, :i])) < 2:
                continue  # sklearn refuses a single class
            # sklearn minimises C * sum(loss) + |w|^2 / 2: the same minimiser when C = 1 / NEWTON_L2
            model = LogisticRegression(C=1 / icl.NEWTON_L2, fit_intercept=False, solver="newton-cholesky", tol=1e-10)
            w = model.fit(xs[b, :i].astype(np.float64), labels[b, :i]).coef_[0]  # float32 in, float32 solve
            assert preds[b, i] == pytest.approx(np.tanh(xs[b, i] @ w / 2), abs=1e-9)


def test_lasso_has_no_intercept_and_garg_alphas():
    needs("lasso-1")
    garg_alphas = ["lasso-1", "lasso-0.1", "lasso-0.01", "lasso-0.001", "lasso-0.0001"]
    assert [n for n in BASELINES if n.startswith("lasso-")] == garg_alphas
    xs, ys = prompts(2, 12, 3, 3, linear=True)
    ys = ys + 100.0  # an intercept would soak this up; without one, a small alpha reproduces least squares
    lasso, exact = run_baseline("lasso-0.0001", xs, ys), run_baseline("least-squares", xs, ys)
    np.testing.assert_allclose(lasso[:, 6:], exact[:, 6:], rtol=1e-3)
    assert np.all(run_baseline("lasso-1", xs, ys * 1e-6)[:, 1:] == 0)  # alpha above max|X^T y|/i: w = 0


# --- trees -----------------------------------------------------------------------------------

def test_greedy_tree_known_best_split():
    # feature 1 separates y perfectly between 3 and 10; feature 0 only roughly. The tree must split
    # on feature 1 at the midpoint 6.5, and the children are pure, so it stops there.
    train_x = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [2.5, 10], [3.5, 11], [4, 12], [5, 13]], dtype=float)
    train_y = np.array([-1.0, -1, -1, -1, 4, 4, 4, 4])
    queries = np.array([[100, 6.4], [100, 6.6], [-100, 6.6], [0, -50]])
    preds = tree_fit_predict(train_x[None], train_y[None], queries[None], max_depth=4)[0]
    np.testing.assert_array_equal(preds, [-1, 4, 4, -1])
    xs, ys = np.concatenate([train_x, queries[1:2]])[None], np.concatenate([train_y, [0.0]])[None]
    assert run_baseline("greedy-tree", xs, ys, prefixes=[8])[0, 8] == 4


def test_greedy_tree_depth_limit_averages_leaves():
    x = np.arange(32, dtype=float)[None, :, None]
    y = np.arange(32, dtype=float)[None]  # every split helps; depth 4 leaves 16 leaves of 2 points
    preds = tree_fit_predict(x, y, x, max_depth=4)[0]
    np.testing.assert_array_equal(preds, np.repeat(np.arange(16) * 2 + 0.5, 2))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_greedy_tree_matches_sklearn(n_prompts, n, d, seed):
    needs("sklearn-tree")
    from sklearn.tree import DecisionTreeRegressor

    xs, ys = prompts(n_prompts, n + 4, d, seed)
    train_x, train_y, queries = xs[:, :n].astype(float), ys[:, :n].astype(float), xs[:, n:].astype(float)
    fitted = tree_fit_predict(train_x, train_y, train_x, max_depth=4)
    answers = tree_fit_predict(train_x, train_y, queries, max_depth=4)
    for b in range(n_prompts):
        tree = DecisionTreeRegressor(max_depth=4, random_state=seed).fit(train_x[b], train_y[b])
        # equal-gain splits (common in small nodes) are broken differently, but they cut the
        # training points the same way, so the fitted values agree exactly
        np.testing.assert_allclose(fitted[b], tree.predict(train_x[b]), rtol=0, atol=1e-12)
        if d == 1:  # one feature: no ties left, so new points land in the same leaves
            np.testing.assert_allclose(answers[b], tree.predict(queries[b]), rtol=0, atol=1e-12)


def test_greedy_tree_and_sklearn_tree_agree_on_one_feature():
    needs("sklearn-tree")
    xs, ys = prompts(3, 30, 1, 11)
    np.testing.assert_allclose(run_baseline("greedy-tree", xs, ys), run_baseline("sklearn-tree", xs, ys), atol=1e-12)


def test_xgboost_fits_the_prefix():
    needs("xgboost")
    xs, ys = prompts(3, 2, 4, 5)
    preds = run_baseline("xgboost", xs, ys)
    # one point, 100 rounds of shrinkage 0.3 from base_score 0.5: all but (y - 0.5) * 0.85**100 of it is fitted
    np.testing.assert_allclose(preds[:, 1], ys[:, 0], atol=1e-5)
    np.testing.assert_array_equal(preds, run_baseline("xgboost", xs, ys))


# --- two-layer network -----------------------------------------------------------------------

def test_gd_2layer_matches_separate_torch_networks(monkeypatch):
    monkeypatch.setattr(icl, "GD_STEPS", 25)  # Adam amplifies rounding over long runs; 25 steps stay comparable
    n_prompts, i, d, h = 3, 7, 4, icl.GD_HIDDEN
    xs, ys = prompts(n_prompts, i + 1, d, 2)
    gen = torch.Generator().manual_seed(0)
    shapes = [(n_prompts, d, h), (n_prompts, 1, h), (n_prompts, h, 1), (n_prompts, 1, 1)]
    weights = [torch.randn(shape, generator=gen) * 0.3 for shape in shapes]
    batches = [torch.randperm(i, generator=gen)[:5] for _ in range(25)]
    for batch in (None, batches):
        got = icl._train_nets(torch, xs.astype(float), ys[:, :i].astype(float), weights, batch)
        for b in range(n_prompts):
            net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, 1))
            with torch.no_grad():
                net[0].weight.copy_(weights[0][b].T)
                net[0].bias.copy_(weights[1][b, 0])
                net[2].weight.copy_(weights[2][b].T)
                net[2].bias.copy_(weights[3][b, 0])
            optimizer = torch.optim.Adam(net.parameters(), lr=icl.GD_LR)
            x, y = torch.from_numpy(xs[b, :i]), torch.from_numpy(ys[b, :i])
            for step in range(25):
                rows = slice(None) if batch is None else batch[step]
                loss = torch.nn.functional.mse_loss(net(x[rows])[:, 0], y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            assert got[b] == pytest.approx(net(torch.from_numpy(xs[b, i]))[0].item(), abs=1e-4)


def test_gd_2layer_is_seeded_and_learns(monkeypatch):
    xs, ys = prompts(16, 31, 2, 4, linear=True)
    first = run_baseline("gd-2layer", xs, ys, prefixes=[1, 30], seed=3)
    np.testing.assert_array_equal(first, run_baseline("gd-2layer", xs, ys, prefixes=[1, 30], seed=3))
    assert not np.array_equal(first[:, 30], run_baseline("gd-2layer", xs, ys, prefixes=[30], seed=4)[:, 30])
    # 30 points of a 2-d linear function: far better than knowing nothing
    assert np.mean((first[:, 30] - ys[:, 30]) ** 2) < 0.1 * np.mean(ys[:, 30] ** 2)
    monkeypatch.setattr(icl, "GD_BATCH", 8)  # the minibatch path, taken when i > GD_BATCH
    again = run_baseline("gd-2layer", xs, ys, prefixes=[30], seed=3)
    np.testing.assert_array_equal(again, run_baseline("gd-2layer", xs, ys, prefixes=[30], seed=3))
    assert not np.array_equal(again[:, 30], first[:, 30])


# --- the prefix protocol, for every baseline ------------------------------------------------

@pytest.mark.parametrize("name", list(BASELINES))
def test_prediction_at_i_ignores_later_points(name):
    needs(name)
    xs, ys = prompts(2, 7, 3, 1)
    preds = run_baseline(name, xs, ys, seed=5)
    assert preds.shape == (2, 7) and np.all(preds[:, 0] == 0) and np.isfinite(preds).all()
    for i in (1, 3, 6):
        later_x, later_y = xs.copy(), ys.copy()
        later_x[:, i + 1 :] += 10.0  # x_i itself is an input; every point after it is not
        later_y[:, i:] = -later_y[:, i:] + 3.0  # nor is y_i
        again = run_baseline(name, later_x, later_y, prefixes=[i], seed=5)
        # equal up to rounding (LAPACK's results can depend on how the arrays sit in memory)
        np.testing.assert_allclose(again[:, i], preds[:, i], rtol=1e-9, atol=1e-12)
        assert np.isnan(np.delete(again, i, axis=1)).all()


# --- the public surface ----------------------------------------------------------------------

def test_registry_and_errors():
    for name in ["least-squares", "ridge", "lasso-0.01", "lasso-0.1", "lasso-1", "3-nn", "averaging", "gd-2layer",
                 "greedy-tree", "sklearn-tree", "xgboost", "newton-logistic"]:
        assert BASELINES[name].name == name and BASELINES[name].description
    assert baseline_names() == list(BASELINES)
    xs, ys = prompts(2, 5, 3, 0)
    with pytest.raises(BadInput, match="did you mean 'least-squares'"):
        run_baseline("least-sqares", xs, ys)
    with pytest.raises(BadInput, match="prefixes"):
        run_baseline("averaging", xs, ys, prefixes=[5])
    with pytest.raises(BadInput, match="xs"):
        run_baseline("averaging", xs, ys[:, :4])
    preds = run_baseline("averaging", xs, ys, prefixes=[0, 3])
    assert preds[:, 0].tolist() == [0, 0] and np.isnan(preds[:, [1, 2, 4]]).all() and np.isfinite(preds[:, 3]).all()


def test_missing_optional_package(monkeypatch):
    block_imports(monkeypatch, "sklearn", "xgboost")
    assert missing_reason("lasso-0.1") == "scikit-learn is not installed (pip install 'seqlab[icl]')"
    assert missing_reason("xgboost") == "xgboost is not installed (pip install 'seqlab[icl]')"
    assert missing_reason("greedy-tree") is None
    available = baseline_names(available_only=True)
    assert "greedy-tree" in available and "sklearn-tree" not in available and "xgboost" not in available
    xs, ys = prompts(2, 5, 3, 0)
    with pytest.raises(BadInput, match="scikit-learn is not installed"):
        run_baseline("sklearn-tree", xs, ys)
    for name in available:  # none of these may reach for the missing packages
        if name != "gd-2layer":
            assert np.isfinite(run_baseline(name, xs, ys)).all()
