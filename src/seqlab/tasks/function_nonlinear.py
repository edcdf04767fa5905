"""In-context function classes, nonlinear families: quadratic regression, 2-layer ReLU networks and decision
trees (Garg et al. 2022, with their scalings, which make E[y^2] match linear regression's d, or 1 for
trees), and sparse parity (Park et al. 2024, "Can Mamba Learn How to Learn?").
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from seqlab.tasks.function_base import FunctionClass, FunctionConfig, register_function


@register_function
class QuadraticRegression(FunctionClass):
    """Quadratic regression: y = sum_j w_j x_j^2 / sqrt(3), w ~ N(0, I_d) (Garg et al. 2022).

    The 1/sqrt(3) is theirs: E[x^4] = 3 for a standard normal, so E[y^2] = d, linear regression's scale."""

    name = "quadratic-regression"

    def draw(self, rng, active):
        return {"w": rng.standard_normal(self.config.n_dims)}

    def evaluate(self, fn, xs):
        return np.matmul(xs**2, fn["w"][:, :, None])[:, :, 0] / np.sqrt(3.0)


class ReluConfig(FunctionConfig):
    hidden: int = Field(100, ge=1)


@register_function
class Relu2nnRegression(FunctionClass):
    """Two-layer ReLU network: y = sqrt(2 / h) * sum_k a_k relu(W_k . x), W_k ~ N(0, I_d), a ~ N(0, I_h) (Garg et al. 2022).

    No biases, h = `hidden` units (100 in the paper). The sqrt(2 / h) is theirs: E[relu(z)^2] = d / 2 for
    z ~ N(0, d), so E[y^2] = d. Params: W1 (d, h) with columns W_k, W2 (h,) = a."""

    name = "relu-2nn-regression"
    Config = ReluConfig

    def draw(self, rng, active):
        d, h = self.config.n_dims, self.config.hidden
        return {"W1": rng.standard_normal((d, h)), "W2": rng.standard_normal(h)}

    def evaluate(self, fn, xs):
        hidden = np.maximum(np.matmul(xs, fn["W1"]), 0.0)  # (n, n_points, h)
        return np.matmul(hidden, fn["W2"][:, :, None])[:, :, 0] * np.sqrt(2.0 / self.config.hidden)


class TreeConfig(FunctionConfig):
    depth: int = Field(4, ge=1, le=16)


@register_function
class DecisionTree(FunctionClass):
    """Decision tree: a full binary tree of `depth` levels, each node testing x[c] > 0 on a random c (Garg et al. 2022).

    Nodes are numbered breadth first (root 0, children of k at 2k + 1 and 2k + 2); x[c] > 0 goes to the
    right child 2k + 2, otherwise (x[c] <= 0, and a zeroed coordinate) to the left. Params: `coords`
    (2^depth - 1 internal nodes, each uniform over all n_dims coordinates, as in their code even under the
    curriculum) and `leaves` (2^depth values ~ N(0, 1), leaf m is node 2^depth - 1 + m). error_scale 1."""

    name = "decision-tree"
    Config = TreeConfig

    def draw(self, rng, active):
        n_internal = 2**self.config.depth - 1
        return {"coords": rng.integers(0, self.config.n_dims, n_internal), "leaves": rng.standard_normal(n_internal + 1)}

    def evaluate(self, fn, xs):
        coords, leaves = fn["coords"], fn["leaves"]
        node = np.zeros(xs.shape[:2], dtype=np.int64)  # (n, n_points)
        for _ in range(self.config.depth):
            coord = np.take_along_axis(coords, node, axis=1)
            goes_right = np.take_along_axis(xs, coord[:, :, None], axis=2)[:, :, 0] > 0
            node = 2 * node + 1 + goes_right
        return np.take_along_axis(leaves, node - coords.shape[1], axis=1)

    @property
    def error_scale(self):
        return 1.0


class ParityConfig(FunctionConfig):
    n_dims: int = Field(10, ge=1)
    k: int = 2

    @model_validator(mode="after")
    def _check_k(self):
        if not 1 <= self.k <= self.n_dims:
            raise ValueError(f"k must lie in [1, n_dims={self.n_dims}], got {self.k}")
        return self


@register_function
class SparseParity(FunctionClass):
    """Sparse parity: x uniform in {-1, +1}^d, y = the product of x over k secret coordinates (Park et al. 2024).

    Park et al. use d = 10, k = 2. The secret is k distinct coordinates drawn uniformly among the active
    ones (so active_dims must be at least k); zeroed coordinates never enter the product. Params: `secret`
    (sorted coordinates). error_scale is 1: y is a +-1 label."""

    name = "sparse-parity"
    Config = ParityConfig
    kind = "classification"
    inputs = "signs"

    def draw(self, rng, active):
        return {"secret": np.sort(rng.permutation(active)[: self.config.k])}

    def evaluate(self, fn, xs):
        secret = fn["secret"][:, None, :]  # (n, 1, k)
        bits = np.take_along_axis(xs, np.broadcast_to(secret, xs.shape[:2] + secret.shape[2:]), axis=2)
        return np.prod(bits, axis=2)

    @property
    def error_scale(self):
        return 1.0

    @property
    def min_active(self):
        return self.config.k
