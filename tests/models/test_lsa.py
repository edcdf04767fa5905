"""Linear self-attention and the hand-set Newton construction, checked against NumPy and least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from seqlab.models.lsa import LinearSelfAttention, LinearTransformer, LSAConfig
from seqlab.models.newton_construction import (
    NewtonLayout,
    init_layer,
    newton_layer,
    newton_least_squares,
    newton_schulz_numpy,
    newton_tokens,
    read_iterate,
)

torch.set_num_threads(1)
f64 = torch.float64


def regression_problem(seed: int, d: int, n: int, noise: float = 0.0):
    """One prompt (batch of 1) in float64: xs (1, n, d), ys (1, n), x_query (1, d)."""
    rng = np.random.default_rng(seed)
    xs, w, xq = rng.standard_normal((1, n, d)), rng.standard_normal(d), rng.standard_normal((1, d))
    ys = xs @ w + noise * rng.standard_normal((1, n))
    return torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(xq)


def close(got: np.ndarray, want: np.ndarray, tol: float = 1e-5):
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= tol * scale


# (1) one constructed layer is one Newton step; stacked layers are several ------------------------

@settings(max_examples=200, deadline=None)
@given(d=st.integers(2, 12), n=st.integers(0, 6), seed=st.integers(0, 2**31 - 1))
def test_newton_layer_is_one_newton_step_for_any_matrix(d, n, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((1, d, d))  # not symmetric: the layer reads rows of A
    X0 = rng.standard_normal((1, d, d)) / d
    xs, ys, xq = rng.standard_normal((1, n, d)), rng.standard_normal((1, n)), rng.standard_normal((1, d))
    z = newton_tokens(*map(torch.from_numpy, (xs, ys, xq, X0, A)))
    out = newton_layer(d, n)(z)
    close(read_iterate(out, d).numpy(), newton_schulz_numpy(A, X0, 1)[1])
    untouched = [i for i in range(n + d + 1) if not n <= i < n + d]  # data tokens and the query
    assert torch.equal(out[:, untouched], z[:, untouched])


@settings(max_examples=200, deadline=None)
@given(d=st.integers(2, 12), extra=st.integers(0, 3 * 12), steps=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_stacked_construction_matches_numpy_newton_schulz(d, extra, steps, seed):
    n = 2 * d + extra  # enough points for a well-conditioned A = (1/n) sum x_i x_i^T
    xs, ys, xq = regression_problem(seed, d, n)
    A = (xs[0].T @ xs[0] / n).numpy()
    assume(np.linalg.cond(A) < 1e3)
    alpha = 1.0 / np.linalg.norm(A, 2) ** 2
    z = newton_tokens(xs, ys, xq)
    z = init_layer(d, n, alpha)(z)
    close(z[0, n:n + d, NewtonLayout(d).R].numpy(), A)  # the init layer wrote A
    want = newton_schulz_numpy(A, alpha * A, steps)
    for k in range(1, steps + 1):
        z = newton_layer(d, n)(z)
        close(read_iterate(z, d)[0].numpy(), want[k])
    pred, X_T = newton_least_squares(xs, ys, xq, steps, alpha=alpha)
    b = xs[0].numpy().T @ ys[0].numpy() / n
    close(X_T[0].numpy(), want[-1])
    close(pred.numpy(), np.array([xq[0].numpy() @ want[-1] @ b]))


# (2) enough steps reach the least-squares prediction -------------------------------------------

@settings(max_examples=100, deadline=None)
@given(d=st.integers(2, 12), extra=st.integers(0, 3 * 12), seed=st.integers(0, 2**31 - 1))
def test_construction_reaches_least_squares(d, extra, seed):
    n = 2 * d + extra
    xs, ys, xq = regression_problem(seed, d, n, noise=0.3)
    A = xs[0].T @ xs[0] / n
    assume(np.linalg.cond(A.numpy()) < 1e3)
    X0 = (A.T / torch.linalg.matrix_norm(A, 2) ** 2)[None]  # X_0 = A^T / ||A||^2 converges for any A
    w_ls = np.linalg.lstsq(xs[0].numpy(), ys[0].numpy(), rcond=None)[0]
    y_ls = float(xq[0].numpy() @ w_ls)
    errors = [abs(float(newton_least_squares(xs, ys, xq, T, X0=X0)[0][0]) - y_ls) for T in (0, 40)]
    assert errors[1] <= 1e-8 * max(1.0, abs(y_ls))
    assert errors[1] <= errors[0]


# (3) the layer computes what its formula says --------------------------------------------------

def lsa_by_explicit_sums(z: np.ndarray, w_kq: np.ndarray, w_pv: np.ndarray, mask_last: bool) -> np.ndarray:
    """out[b,t,o] = z[b,t,o] + (1/n) sum_h sum_j sum_p w_pv[h,o,p] z[b,j,p] * sum_{a,c} z[b,j,a] w_kq[h,a,c] z[b,t,c]."""
    B, L, D = z.shape
    n = L - 1 if mask_last else L
    out = z.copy()
    for b in range(B):
        for t in range(L):
            for h in range(w_kq.shape[0]):
                for j in range(n):
                    score = sum(z[b, j, a] * w_kq[h, a, c] * z[b, t, c] for a in range(D) for c in range(D))
                    for o in range(D):
                        out[b, t, o] += score * sum(w_pv[h, o, p] * z[b, j, p] for p in range(D)) / n
    return out


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 2), L=st.integers(2, 5), D=st.integers(1, 4), H=st.integers(1, 3),
       mask_last=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_lsa_matches_explicit_sums(B, L, D, H, mask_last, seed):
    torch.manual_seed(seed)
    layer = LinearSelfAttention(D, H, mask_last, init_std=1.0).to(f64)
    z = torch.randn(B, L, D, dtype=f64)
    want = lsa_by_explicit_sums(z.numpy(), layer.w_kq.detach().numpy(), layer.w_pv.detach().numpy(), mask_last)
    np.testing.assert_allclose(layer(z).detach().numpy(), want, rtol=1e-10, atol=1e-10)


# (4) the hidden label is never read -------------------------------------------------------------

@pytest.mark.parametrize("mask_query", [True, False])
def test_prediction_ignores_the_hidden_label(mask_query):
    torch.manual_seed(0)
    model = LinearTransformer(LSAConfig(n_dims=4, n_layers=3, n_heads=2, init_std=0.3, mask_query=mask_query)).to(f64)
    xs, ys = torch.randn(8, 7, 4, dtype=f64), torch.randn(8, 7, dtype=f64)
    other = ys.clone()
    other[:, -1] = 100 * torch.randn(8, dtype=f64)
    pred = model(xs, ys)
    assert pred.shape == (8,) and pred.abs().max() > 0
    assert torch.equal(pred, model(xs, other))
    torch.testing.assert_close(model.predictions_by_layer(xs, ys)[:, -1], pred)


def test_config_and_shapes():
    model = LinearTransformer(LSAConfig(n_dims=5, n_layers=2, n_heads=3))
    assert model.n_params() == 2 * 3 * 2 * 6 * 6
    with pytest.raises(ValueError, match="dims"):
        model(torch.randn(2, 4, 3), torch.randn(2, 4))
    with pytest.raises(ValueError):
        LSAConfig(n_layer=2)  # unknown key
    with pytest.raises(ValueError):
        LSAConfig(n_heads=0)


# (5) one trained layer learns in-context linear regression --------------------------------------

def test_one_layer_learns_linear_regression():
    torch.manual_seed(0)
    d, n, batch = 5, 20, 256
    model = LinearTransformer(LSAConfig(n_dims=d, n_layers=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def prompts(size):
        xs, w = torch.randn(size, n + 1, d, generator=g), torch.randn(size, d, 1, generator=g)
        return xs, (xs @ w)[..., 0]

    for _ in range(300):
        loss = model.loss(*prompts(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    xs, ys = prompts(4096)
    with torch.no_grad():
        trained, zero = model.loss(xs, ys).item(), ys[:, -1].square().mean().item()
    # Predicting 0 costs E|w|^2 = d; the best single layer (one preconditioned GD step) about 1.15.
    assert trained < 0.35 * zero
