"""Hand-set LSA weights that run Newton's iteration for the matrix inverse, and least squares with it.

Newton's iteration (Schulz 1933; Newton-Schulz) for A^{-1}:  X_{k+1} = X_k (2I - A X_k).
With I - A X_{k+1} = (I - A X_k)^2 it converges quadratically once ||I - A X_0|| < 1; from
X_0 = alpha A^T with 0 < alpha < 2 / sigma_max(A)^2 it is eps-accurate after
O(log kappa(A) + log log(1/eps)) steps. Giannou et al. 2025 (arXiv 2403.03183) prove that linear
attention runs it: Lemma 4.1, one step in 2 layers of 2 heads (width 4d) for any A and in 1 layer
for symmetric A; Theorem 4.2, least squares y_hat = a_test^T X_T A^T y in T + 3 layers of 2 heads and
width 4d + 3 (their A is the n x d data matrix: one layer builds A^T A, T layers iterate on it from
X_0 = eps A^T A, two layers read out). Their weight matrices are not reproduced here; the
construction below is ours, derived for `LinearSelfAttention` (normalised by the n kept tokens,
query masked), with one head per layer, width 5d + 1 and the same T + 3 layers.

Token layout (rows of Z, width 5d + 1); a prompt of n pairs and one query becomes n + d + 1 tokens:

    slot   size  data token i   matrix token j   query
    x      d     x_i            0                x_q
    y      1     y_i            0                0 -> -y_hat
    X      d     0              X_k e_j          0        column j of the iterate
    R      d     0              A^T e_j          0        row j of the matrix to invert
    E      d     0              e_j              0        which column this token holds
    u      d     0              0                0 -> X_T^T x_q

The first d + 1 coordinates of a data token are the `LinearTransformer`'s token [x_i; y_i]. The
query comes last, so the mask keeps it out of C = sum_j z_j z_j^T, taken over N = n + d tokens.
Because the groups use disjoint slots, blocks of C are matrices: C[x,x] = sum_i x_i x_i^T = n A,
C[X,E] = sum_j X e_j e_j^T = X, C[X,R] = sum_j X e_j e_j^T A = X A, C[E,X] = X^T, C[y,x] = n b^T.
A head with W_KQ[b,a] = I and W_PV[o,s] = c I adds (c/N) C[s,b] z_t[a] to slot o of token t.

  init     (1 layer, 1 head)  R += A e_j, X += alpha A e_j: W_KQ[x,E] = I, W_PV[R,x] = N/n, W_PV[X,x] = alpha N/n
  Newton   (1 layer, 1 head)  X e_j += X e_j - X A X e_j, i.e. X <- X(2I - AX):
                               W_KQ[E,E] = I, W_KQ[R,X] = -I, W_PV[X,X] = N I
  read 1   (1 layer, 1 head)  u += X^T x_t:                 W_KQ[X,x] = I, W_PV[u,E] = N I
  read 2   (1 layer, 1 head)  y -= b^T u = x_q^T X b:      W_KQ[x,u] = I, W_PV[y,y] = -N/n

with A = (1/n) sum_i x_i x_i^T and b = (1/n) sum_i x_i y_i, so w = X_T b -> the least-squares
weights and the query's y slot ends at -x_q^T w (read as in `LinearTransformer`: y_hat = -Z[y, q]).
A layer changes token t only through the slots of z_t its W_KQ reads, so the data tokens and the query pass
the init and Newton layers unchanged, and the matrix tokens pass both read-out layers unchanged.
One head per Newton step suffices for any A because the matrix tokens hold rows of A (C[X,R] =
X A); A = (1/n) sum x_i x_i^T is symmetric, so the init layer's columns of A are its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from seqlab.models.lsa import LinearSelfAttention


def newton_schulz_numpy(A: np.ndarray, X0: np.ndarray, steps: int) -> list[np.ndarray]:
    """[X_0, X_1, ..., X_steps] with X_{k+1} = X_k (2I - A X_k); A, X0: (..., d, d)."""
    two_eye = 2 * np.eye(A.shape[-1])
    iterates = [np.asarray(X0)]
    for _ in range(steps):
        X = iterates[-1]
        iterates.append(X @ (two_eye - A @ X))
    return iterates


@dataclass(frozen=True)
class NewtonLayout:
    """Where each quantity lives in a token (see the module docstring)."""

    d: int

    def _slot(self, i: int) -> slice:  # the i-th d-wide slot after x and y
        start = self.d + 1 + i * self.d
        return slice(start, start + self.d)

    @property
    def x(self) -> slice:
        return slice(0, self.d)

    @property
    def y(self) -> int:
        return self.d

    @property
    def X(self) -> slice:
        return self._slot(0)

    @property
    def R(self) -> slice:
        return self._slot(1)

    @property
    def E(self) -> slice:
        return self._slot(2)

    @property
    def u(self) -> slice:
        return self._slot(3)

    @property
    def width(self) -> int:
        return 5 * self.d + 1


def newton_tokens(xs: torch.Tensor, ys: torch.Tensor, x_query: torch.Tensor,
                  X0: torch.Tensor | None = None, A: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens (B, n + d + 1, 5d + 1) for n pairs xs (B, n, d), ys (B, n) and x_query (B, d).

    X0 (B, d, d) and A (B, d, d), where given, are written into the matrix tokens (X: columns of X0,
    R: rows of A); otherwise those slots start at 0 and the init layer fills them from the data."""
    B, n, d = xs.shape
    lay = NewtonLayout(d)
    z = xs.new_zeros(B, n + d + 1, lay.width)
    z[:, :n, lay.x], z[:, :n, lay.y] = xs, ys
    matrix = z[:, n:n + d]  # (B, d, width) view: token j holds column j
    matrix[:, :, lay.E] = torch.eye(d, dtype=xs.dtype, device=xs.device)
    if X0 is not None:
        matrix[:, :, lay.X] = X0.transpose(1, 2)  # row j of X0^T = column j of X0
    if A is not None:
        matrix[:, :, lay.R] = A  # row j of A
    z[:, -1, lay.x] = x_query
    return z


def read_iterate(z: torch.Tensor, d: int) -> torch.Tensor:
    """The iterate X (B, d, d) held by the matrix tokens of z (B, n + d + 1, 5d + 1)."""
    return z[:, -d - 1:-1, NewtonLayout(d).X].transpose(1, 2)


def read_prediction(z: torch.Tensor, d: int) -> torch.Tensor:
    """(B,): -Z[y, query], the same read-out as `LinearTransformer`."""
    return -z[:, -1, NewtonLayout(d).y]


def _layer(lay: NewtonLayout, dtype) -> LinearSelfAttention:
    layer = LinearSelfAttention(lay.width, n_heads=1, mask_last=True, init_std=0.0).to(dtype)
    layer.requires_grad_(False)
    return layer


def _block(w: torch.Tensor, rows, cols, value: float):
    """w[rows, cols] += value * I (a d x d block) or value (a single entry)."""
    if isinstance(rows, int):
        w[rows, cols] += value
    else:
        w[rows, cols] += value * torch.eye(rows.stop - rows.start, dtype=w.dtype)


def init_layer(d: int, n: int, alpha: float = 0.0, dtype=torch.float64) -> LinearSelfAttention:
    """Writes A = (1/n) sum x_i x_i^T into R and adds alpha A to X (X_0 = alpha A when X starts at 0)."""
    lay, N = NewtonLayout(d), n + d
    layer = _layer(lay, dtype)
    kq, pv = layer.w_kq.data[0], layer.w_pv.data[0]
    _block(kq, lay.x, lay.E, 1.0)
    _block(pv, lay.R, lay.x, N / n)
    _block(pv, lay.X, lay.x, alpha * N / n)
    return layer


def newton_layer(d: int, n: int, dtype=torch.float64) -> LinearSelfAttention:
    """One Newton step X <- X (2I - A X) on the matrix tokens; n data tokens sit beside them."""
    lay, N = NewtonLayout(d), n + d
    layer = _layer(lay, dtype)
    kq, pv = layer.w_kq.data[0], layer.w_pv.data[0]
    _block(kq, lay.E, lay.E, 1.0)  # C[X,E] e_j = X e_j
    _block(kq, lay.R, lay.X, -1.0)  # C[X,R] (-X e_j) = -X A X e_j
    _block(pv, lay.X, lay.X, float(N))
    return layer


def readout_layers(d: int, n: int, dtype=torch.float64) -> list[LinearSelfAttention]:
    """Two layers that leave -x_q^T X b in the query's y slot, b = (1/n) sum x_i y_i."""
    lay, N = NewtonLayout(d), n + d
    first, second = _layer(lay, dtype), _layer(lay, dtype)
    _block(first.w_kq.data[0], lay.X, lay.x, 1.0)  # u_t = C[E,X] x_t = X^T x_t
    _block(first.w_pv.data[0], lay.u, lay.E, float(N))
    _block(second.w_kq.data[0], lay.x, lay.u, 1.0)  # y_t -= (1/n) C[y,x] u_t = b^T X^T x_t
    _block(second.w_pv.data[0], lay.y, lay.y, -N / n)
    return [first, second]


def newton_transformer(d: int, n: int, steps: int, alpha: float = 0.0, dtype=torch.float64) -> nn.Sequential:
    """The T + 3 layers: init, `steps` Newton steps, two read-out layers."""
    return nn.Sequential(init_layer(d, n, alpha, dtype), *(newton_layer(d, n, dtype) for _ in range(steps)),
                         *readout_layers(d, n, dtype))


@torch.no_grad()
def newton_least_squares(xs: torch.Tensor, ys: torch.Tensor, x_query: torch.Tensor, steps: int,
                         alpha: float = 0.0, X0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the constructed stack: (y_hat (B,), X_T (B, d, d)).

    X_0 = X0 + alpha A: a fixed alpha is what the weights themselves can hold (the paper's eps);
    X0 lets a caller start from a per-prompt value such as A / ||A||_2^2."""
    B, n, d = xs.shape
    z = newton_tokens(xs, ys, x_query, X0=X0)
    z = newton_transformer(d, n, steps, alpha, xs.dtype)(z)
    return read_prediction(z, d), read_iterate(z, d)
