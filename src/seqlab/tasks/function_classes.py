"""In-context function classes, linear families: Garg et al. 2022, "What Can Transformers Learn In-Context?
A Case Study of Simple Function Classes". x ~ N(0, I_d) and w ~ N(0, I_d) throughout, as in their code.

`get_function("linear-regression", n_dims=20).prompts(seed, "train", start, n)` gives a batch of prompts;
the contract, the registry and the random streams are in function_base.py, the out-of-distribution
shifts in icl_shifts.py, the nonlinear families in function_nonlinear.py.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from seqlab.tasks.function_base import (
    FUNCTIONS,
    FunctionClass,
    FunctionConfig,
    Prompts,
    function_class,
    function_names,
    get_function,
    register_function,
)
from seqlab.tasks.icl_shifts import SHIFTS, parse_shift, shift_matrix

__all__ = [
    "FUNCTIONS", "FunctionClass", "FunctionConfig", "Prompts", "SHIFTS", "function_class", "function_names",
    "get_function", "parse_shift", "register_function", "shift_matrix",
]


def linear(w: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """x . w for a batch: w (n, d), xs (n, n_points, d) -> (n, n_points)."""
    return np.matmul(xs, w[:, :, None])[:, :, 0]


def labels(z: np.ndarray) -> np.ndarray:
    """+1 where z >= 0, else -1. Garg et al. take torch's sign, which is 0 at 0; an exact 0 has probability
    zero except for the zero query of the orthogonal shift, and a label is always +-1 here."""
    return np.where(z >= 0, 1.0, -1.0)


@register_function
class LinearRegression(FunctionClass):
    """Linear regression: y = w . x with w ~ N(0, I_d) (Garg et al. 2022)."""

    name = "linear-regression"

    def draw(self, rng, active):
        return {"w": rng.standard_normal(self.config.n_dims)}

    def evaluate(self, fn, xs):
        return linear(fn["w"], xs)


class SparseConfig(FunctionConfig):
    sparsity: int = 3

    @model_validator(mode="after")
    def _check_sparsity(self):
        if not 1 <= self.sparsity <= self.n_dims:
            raise ValueError(f"sparsity must lie in [1, n_dims={self.n_dims}], got {self.sparsity}")
        return self


@register_function
class SparseLinearRegression(FunctionClass):
    """Sparse linear regression: y = w . x, w ~ N(0, I_d) with all but `sparsity` random coordinates zeroed (Garg et al. 2022).

    The support is drawn among the active coordinates (Garg et al.'s `valid_coords` follows the curriculum's
    dimension); when fewer than `sparsity` are active, all of them are the support. error_scale is the
    sparsity, E[y^2] = s (their plots divide by it)."""

    name = "sparse-linear-regression"
    Config = SparseConfig

    def draw(self, rng, active):
        w = rng.standard_normal(self.config.n_dims)
        support = np.sort(rng.permutation(active)[: self.config.sparsity])
        mask = np.zeros(self.config.n_dims, dtype=bool)
        mask[support] = True
        return {"w": np.where(mask, w, 0.0), "support": support}

    def evaluate(self, fn, xs):
        return linear(fn["w"], xs)

    @property
    def error_scale(self):
        return float(self.config.sparsity)


class NoisyConfig(FunctionConfig):
    noise_std: float = Field(1.0, ge=0)
    renormalize: bool = True


@register_function
class NoisyLinearRegression(FunctionClass):
    """Noisy linear regression: y = (w . x + noise_std * e) * c, e ~ N(0, 1) per point (Garg et al. 2022).

    The defaults are Garg et al.'s noisy evaluation (noise_std=1, renormalize_ys=True): with `renormalize`,
    c = sqrt(d / (d + noise_std^2)) brings E[y^2] back to the noiseless d (they divide by the batch's
    empirical standard deviation; the expected one keeps each prompt a pure function of its index).
    Without it c = 1. error_scale is n_dims, as in their plots."""

    name = "noisy-linear-regression"
    Config = NoisyConfig
    point_noise = "normal"

    def draw(self, rng, active):
        return {"w": rng.standard_normal(self.config.n_dims)}

    def evaluate(self, fn, xs):
        return linear(fn["w"], xs)

    def observe(self, clean, noise):
        return (clean + self.config.noise_std * noise) * self.renormalizer

    @property
    def renormalizer(self) -> float:
        d, s = self.config.n_dims, self.config.noise_std
        return float(np.sqrt(d / (d + s**2))) if self.config.renormalize else 1.0


@register_function
class LinearClassification(FunctionClass):
    """Linear classification: y = sign(w . x) in {-1, +1} with w ~ N(0, I_d) (Garg et al. 2022).

    error_scale is 1: the squared error of always predicting 0 on +-1 labels."""

    name = "linear-classification"
    kind = "classification"

    def draw(self, rng, active):
        return {"w": rng.standard_normal(self.config.n_dims)}

    def evaluate(self, fn, xs):
        return labels(linear(fn["w"], xs))

    @property
    def error_scale(self):
        return 1.0


class LogisticConfig(FunctionConfig):
    scale: float = Field(1.0, gt=0)


@register_function
class LogisticRegression(FunctionClass):
    """Logistic regression: y in {-1, +1} with P(y = +1 | x) = sigmoid(w . x), w ~ N(0, I_d) * scale.

    With scale = 1 (the default, Garg et al.'s w) the logit w . x has standard deviation sqrt(d), so most
    labels are those of linear classification and the noise sits near the boundary; scale = 1/sqrt(d)
    gives logits of unit variance. error_scale is 1, as for linear classification."""

    name = "logistic-regression"
    Config = LogisticConfig
    kind = "classification"
    point_noise = "uniform"

    def draw(self, rng, active):
        return {"w": rng.standard_normal(self.config.n_dims) * self.config.scale}

    def evaluate(self, fn, xs):
        return linear(fn["w"], xs)  # the logit; `observe` draws the label

    def observe(self, clean, noise):
        p_plus = 0.5 * (1.0 + np.tanh(clean / 2))  # sigmoid, without overflow for large |logit|
        return np.where(noise < p_plus, 1.0, -1.0)

    @property
    def error_scale(self):
        return 1.0


from seqlab.tasks import function_nonlinear, function_outliers_recall  # noqa: E402,F401  (register the nonlinear and Park et al. families)
