"""In-context tasks of Park et al. 2024, "Can Mamba Learn How to Learn? A Comparative Study on In-Context
Learning Tasks" (ICML 2024; arXiv 2402.04248; code github.com/krafton-ai/mambaformer-icl, read at commit
37a96d2, paths below are in that repository): regression with outliers in the context, in two kinds, and
vector-valued associative recall (their code's "retrieval" task). Their sparse parity is in
function_nonlinear.py.

Outliers, as their code makes them (src/samplers.py `FilteringGaussianSampler`, src/train.py, src/eval.py):
x ~ N(0, I_d), w ~ N(0, I_d) and y = w . x on the clean points; then every point of a prompt, the last one
included, is an outlier independently with probability `outlier_prob` (`torch.rand(...) < prob`), and
its x and y are overwritten (src/filtering_utils.py). The loss skips the outliers (`output[~inds]`), and so
does their standard evaluation, run at the training probability; their `wo_dummy` evaluation has no
outliers (outlier_prob=0 here). Their `fixed_dummy` evaluation (outliers at evenly spaced positions) is
not reproduced.

Not scored: these prompts hold points a model must read but is not scored on (outliers; the key and value
tokens of recall). `prompts` returns `ScoredPrompts`, a `Prompts` with a boolean mask `scored` (n,
n_points); `sample_record` puts it in meta["scored"]. Consumers that ignore the mask score every point.

Randomness, on FunctionClass's per-prompt streams (function_base.py), one row per point so that a prompt
of k points is the first k points of a longer one: FUNCTION gives w and the outlier vectors; INPUTS the
Gaussian rows; NOISE one U(0, 1) per point (outlier when below outlier_prob; recall: which key a query
copies); QUERY_NOISE (stream 5, defined here) the noise of recall's noisy queries.

Shifts (icl_shifts.py) act on every point, outliers included: the outlier xs are written into the raw
points before an input or query shift and before the curriculum zeroes coordinates, and the outlier ys
before an output shift. Each family refuses the shifts that would not mean what they say (`shifts()`).

Vector-valued recall and the scalar contract: Park's prompt (src/samplers.py `GaussianRetrievalSampler`,
src/tasks.py `Retrieval`, src/conf/retrieval.yaml) is a sequence of 2N + 1 vectors k_1, v_1, ..., k_N,
v_N, q, each ~ N(0, I_d) scaled to norm sqrt(d), read with no y tokens (`interleave: False`); q is a copy
of k_j with j uniform in 1..N + 1, where N + 1 leaves q its own fresh vector (`random.randint` includes
its upper end); the target is the whole value vector v_j of j = argmax_j <q, k_j>, trained with the mean
squared error over its d coordinates. Here the 2N + 1 vectors are the xs of the first 2N + 1 points, so
the model reads Park's sequence with a y token [y, 0, ..., 0] after each vector; the context points have
y = 0 and are not scored; the query's y is the first coordinate v_j[0]. The retrieval a model must do
(match q against the keys, read the vector after the key) is Park's; what differs is the read-out, one
coordinate instead of d. The values' law is invariant under rotations and independent of the keys, so
coordinate 0 is any coordinate: the error per query is an unbiased estimate of Park's training loss
(their mean over coordinates), and d times it of their `squared_norm_error`. Their evaluation's match
error (does argmax_j <prediction, k_j> equal argmax_j <target, k_j>, which compares with the keys, not
the values) needs the whole predicted vector and cannot be computed. Carrying all d coordinates in scalar
ys would need d query points with the coordinate marked in x, and each would see the previous
coordinates' ys, which name the value; that changes the task. Points after 2N + 1 are further queries
(multi-query recall; Park's prompt has one), so any n_points works and prompts are prefixes of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from seqlab.tasks.function_base import (
    FUNCTION,
    NOISE,
    SHIFT_CHOICE,
    FunctionClass,
    FunctionConfig,
    Prompts,
    _Streams,
    register_function,
)
from seqlab.tasks.icl_shifts import Shift

QUERY_NOISE = 5  # a stream of FunctionClass's per-prompt streams, after function_base's five


@dataclass(frozen=True, eq=False)
class ScoredPrompts(Prompts):
    """Prompts with `scored`, bool (n, n_points): the points a model is scored on (Park skips the rest)."""

    scored: np.ndarray


class _ScoredFunction(FunctionClass):
    """FunctionClass.prompts step by step, with two hooks: `_arrange` rewrites the raw xs (before any shift
    and before the curriculum's zeroed coordinates) and says which points are scored; `_relabel` rewrites
    the ys of the points that are not (before any output shift)."""

    def _arrange(self, fn: dict[str, np.ndarray], xs: np.ndarray, marks: np.ndarray, streams: _Streams,
                 indices: range) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _relabel(self, fn: dict[str, np.ndarray], ys: np.ndarray, scored: np.ndarray) -> np.ndarray:
        return ys

    def prompts(self, seed: int, split: str, start: int, n: int, *, n_points: int | None = None,
                active_dims: int | None = None, shift: str | None = None) -> ScoredPrompts:
        n_points, active = self._check(seed, split, start, n, n_points, active_dims)
        parsed = self._parse_shift(shift)
        d = self.config.n_dims
        xs = np.empty((n, n_points, d), dtype=np.float32)
        if n == 0:
            return ScoredPrompts(xs, np.empty((0, n_points), np.float32), np.empty((0, n_points), bool))
        streams = _Streams(self.name, seed, split)
        indices = range(start, start + n)
        drawn = [self.draw(streams.at(i, FUNCTION), active) for i in indices]
        fn = {k: np.stack([f[k] for f in drawn]) for k in drawn[0]}
        for j, i in enumerate(indices):
            self._draw_inputs(self._inputs_at(streams, seed, split, i), xs[j])
        marks = self._point_draws(streams, indices, NOISE, n_points, "uniform")
        xs, scored = self._arrange(fn, xs, marks, streams, indices)
        if parsed is not None and parsed.acts_on in ("inputs", "query"):
            xs = self._shift_inputs(parsed, xs, seed, active, lambda j: streams.at(start + j, SHIFT_CHOICE))
        elif active < d:
            xs[:, :, active:] = 0.0
        ys = self._relabel(fn, self.evaluate(fn, xs.astype(np.float64)), scored)
        if parsed is not None and parsed.acts_on == "outputs":
            ys = self._shift_outputs(parsed, ys, streams, indices, n_points)
        return ScoredPrompts(xs, ys.astype(np.float32), scored)



# -- regression with outliers -------------------------------------------------------------------------
class _OutlierRegression(_ScoredFunction):
    """y = w . x, w ~ N(0, I_d), on the scored points; each point is an outlier with probability outlier_prob."""

    def _outliers(self, fn: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each prompt's outlier x (n, d) and outlier y (n,)."""
        raise NotImplementedError

    def evaluate(self, fn, xs):
        return np.matmul(xs, fn["w"][:, :, None])[:, :, 0]

    def _arrange(self, fn, xs, marks, streams, indices):
        outlier = marks < self.config.outlier_prob
        x_out = self._outliers(fn)[0].astype(np.float32)
        return np.where(outlier[:, :, None], x_out[:, None, :], xs), ~outlier

    def _relabel(self, fn, ys, scored):
        return np.where(scored, ys, self._outliers(fn)[1][:, None])

    def _shift_problem(self, shift: Shift) -> str | None:
        if shift.name == "orthogonal":
            return (f"{self.name} repeats one outlier x across the context, and shift 'orthogonal' needs a context "
                    f"of distinct Gaussian points")
        return super()._shift_problem(shift)

    @property
    def error_scale(self):
        """E[y^2] = n_dims on the scored points, as for linear regression (outliers are not scored)."""
        return float(self.config.n_dims)


class ManyOutlierConfig(FunctionConfig):
    """Park's src/conf/many_outlier_regression.yaml: outliers with probability 0.9, prompts of 512 points
    (the end of its curriculum, which grows dims 4 -> 20 and points 12 -> 512)."""

    n_points: int = Field(512, ge=1)
    outlier_prob: float = Field(0.9, ge=0, lt=1)


@register_function
class ManyOutlierRegression(_OutlierRegression):
    """Many-outlier regression: y = w . x; with probability 0.9 a point is (ones, 1) and not scored (Park et al. 2024).

    Park's `filter_linear_regression` (src/filtering_utils.py `generate_dummy_vectors`): an outlier's x
    becomes the all-ones vector and its y becomes 1; its y token is [1, 0, ..., 0], as every y token is
    here. Under the curriculum the ones fill the active coordinates only (Park's fill all d, the truncated
    ones too; every x here is zero past active_dims). Params: w."""

    name = "many-outlier-regression"
    Config = ManyOutlierConfig

    def draw(self, rng, active):
        return {"w": rng.standard_normal(self.config.n_dims)}

    def _outliers(self, fn):
        n, d = fn["w"].shape
        return np.ones((n, d)), np.ones(n)


class OrthoOutlierConfig(FunctionConfig):
    """Park's src/conf/ortho_outlier_regression.yaml: outliers with probability 0.5, prompts of 101 points
    (the end of its curriculum, dims 5 -> 20 and points 26 -> 101). `orthogonal_to`: "w", the prompt's w,
    as the task's name and their `generate_dummy_vector(w)` intend; "independent", a fresh Gaussian
    direction for each of the two outlier vectors, which is what their code does (src/train.py and
    src/eval.py pass a newly sampled task, `task_sampler()`, to `dummy_replace`, not the prompt's)."""

    n_points: int = Field(101, ge=1)
    outlier_prob: float = Field(0.5, ge=0, lt=1)
    orthogonal_to: Literal["w", "independent"] = "w"


def orthogonal_outlier(ref: np.ndarray, g_u: np.ndarray, g_v: np.ndarray, a: float, b: float,
                       active: int) -> np.ndarray:
    """Park's `generate_dummy_vector`, in the first `active` coordinates: u = g_u with its component along
    ref removed, v = g_v with its components along ref and u removed (Gram-Schmidt, unnormalised); then
    a <- a / (a^2 + b^2), b <- b / (a^2 + b^2) with the new a (their order), and the vector a u + b v.
    The complement of ref has active - 1 dimensions: u is 0 when active = 1 and v is 0 when active <= 2."""
    u, v = np.zeros(len(ref)), np.zeros(len(ref))
    r = ref[:active] / np.linalg.norm(ref[:active])
    if active >= 2:
        u[:active] = g_u[:active] - r * (g_u[:active] @ r)
    if active >= 3:
        e_u = u[:active] / np.linalg.norm(u[:active])
        v[:active] = g_v[:active] - r * (g_v[:active] @ r)
        v[:active] -= e_u * (v[:active] @ e_u)
    a = a / (a * a + b * b)
    b = b / (a * a + b * b)
    return a * u + b * v


@register_function
class OrthogonalOutlierRegression(_OutlierRegression):
    """Orthogonal-outlier regression: y = w . x; with probability 0.5 a point's x is orthogonal to w, unscored (Park et al. 2024).

    Park's `filter_ortho_linear_regression` (src/filtering_utils.py `generate_dummy_vector`, src/train.py):
    one outlier x per prompt, shared by all its outliers, a u + b v with u, v orthogonal to w (see
    `orthogonal_outlier` for the exact law, whose coefficient a / (a^2 + b^2) has infinite variance: a few
    outlier xs are very long), and one outlier y token per prompt, a second such vector with its own draws.
    Their y token is that whole d-vector; here y is its first coordinate, the scalar channel their loss
    reads (`ys[:, :, 0]`), and the token is [y, 0, ..., 0]: the other d - 1 coordinates are dropped.
    Under the curriculum both vectors live in the active coordinates, orthogonal to w's active part (Park's
    fill all d). Params: w; orthogonal_to (2, d), the directions the x and y vectors avoid (w twice, or two
    Gaussians); the raw draws gauss (2, 2, d) [vector][u, v] and coef (2, 2) [vector][a, b];
    outlier_x (d,) and outlier_y_token (d,), the outlier y being outlier_y_token[0]."""

    name = "orthogonal-outlier-regression"
    Config = OrthoOutlierConfig

    def draw(self, rng, active):
        d = self.config.n_dims
        w = rng.standard_normal(d)
        fresh = rng.standard_normal((2, d))
        gauss = rng.standard_normal((2, 2, d))
        coef = rng.standard_normal((2, 2))
        ref = np.stack([w, w]) if self.config.orthogonal_to == "w" else fresh
        x_out, y_token = (orthogonal_outlier(ref[k], gauss[k, 0], gauss[k, 1], coef[k, 0], coef[k, 1], active)
                          for k in range(2))
        return {"w": w, "orthogonal_to": ref, "gauss": gauss, "coef": coef, "outlier_x": x_out,
                "outlier_y_token": y_token}

    def _outliers(self, fn):
        return fn["outlier_x"], fn["outlier_y_token"][:, 0]

    def _shift_problem(self, shift: Shift) -> str | None:
        if shift.name in ("skewed", "half-subspace", "random-quadrants"):
            return (f"{self.name}'s outlier x is orthogonal to w, and shift '{shift.name}' would move it off "
                    f"w's orthogonal complement")
        return super()._shift_problem(shift)


# -- vector-valued associative recall ----------------------------------------------------------------
class VectorMQARConfig(FunctionConfig):
    """Park's src/conf/retrieval.yaml: d = 20, 64 key-value pairs, one query (n_points = 2 * n_pairs + 1,
    its default here when n_points is not given). `fresh_queries`: the query is a fresh vector, not a key,
    with probability 1 / (n_pairs + 1), as their `random.randint(0, n_points)` makes it (False: always a
    key). `query_noise`: sigma of their noisy-query evaluation (0.1 .. 5 there; 0 in training)."""

    n_dims: int = Field(20, ge=1)
    n_pairs: int = Field(64, ge=1)
    n_points: int = Field(129, ge=1)
    fresh_queries: bool = True
    query_noise: float = Field(0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _not_one_dimension(self):
        if self.n_dims < 2:
            raise ValueError("vector-mqar needs n_dims >= 2: on the sphere of one dimension every key, value and "
                             "query is +1 or -1, so its prompts are too few to split into train and test")
        return self

    @model_validator(mode="before")
    @classmethod
    def _points_from_pairs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "n_points" not in data:
            pairs = data.get("n_pairs", 64)
            if isinstance(pairs, int) and not isinstance(pairs, bool):
                return {**data, "n_points": 2 * pairs + 1}
        return data


def _on_sphere(v: np.ndarray) -> np.ndarray:
    """Each row scaled to norm sqrt(d), Park's "sqrt(d)-ball" normalisation."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True) * np.sqrt(v.shape[-1])


@register_function
class VectorMQAR(_ScoredFunction):
    """Vector-valued MQAR: keys and values on the sphere, then queries; y = coordinate 0 of the recalled value (Park et al. 2024).

    With N = n_pairs and every vector drawn N(0, I_d) and scaled to norm sqrt(d): point 2j has x = k_j,
    point 2j + 1 has x = v_j (j = 0 .. N - 1), both with y = 0 and not scored; every point i >= 2N is a
    query, scored: x = a copy of k_j with j uniform in 0 .. N - 1, or (fresh_queries, probability
    1 / (N + 1)) its own fresh vector; with query_noise s, x + s * e (e ~ N(0, I_d)) scaled back to norm
    sqrt(d). Its y is v_m[0] for m = argmax_j <x, k_j> on the xs as handed out (after the curriculum's
    zeroed coordinates and any shift), Park's `Retrieval.evaluate`: m = j for a copied key. The module
    docstring says how this differs from Park's vector target. No params: the keys and values are the
    prompt's xs. error_scale is 1 = E[v_m[0]^2]."""

    name = "vector-mqar"
    Config = VectorMQARConfig

    def draw(self, rng, active):
        return {}

    def _arrange(self, fn, xs, marks, streams, indices):
        n, n_points, d = xs.shape
        pairs = self.config.n_pairs
        tokens = _on_sphere(xs.astype(np.float64))
        first = 2 * pairs
        if n_points > first:
            choices = pairs + 1 if self.config.fresh_queries else pairs
            pick = np.minimum((marks[:, first:] * choices).astype(np.int64), choices - 1)
            keys = tokens[:, 0:first:2]
            copied = keys[np.arange(n)[:, None], np.minimum(pick, pairs - 1)]
            tokens[:, first:] = np.where((pick < pairs)[:, :, None], copied, tokens[:, first:])
            if self.config.query_noise > 0:
                noise = np.stack([streams.at(i, QUERY_NOISE).standard_normal((n_points, d)) for i in indices])
                tokens[:, first:] = _on_sphere(tokens[:, first:] + self.config.query_noise * noise[:, first:])
        scored = np.broadcast_to(np.arange(n_points) >= first, (n, n_points)).copy()
        return tokens.astype(np.float32), scored

    def evaluate(self, fn, xs):
        first = 2 * self.config.n_pairs
        ys = np.zeros(xs.shape[:2])
        if xs.shape[1] > first:
            keys, values = xs[:, 0:first:2], xs[:, 1:first:2]
            match = np.argmax(np.einsum("nqd,nkd->nqk", xs[:, first:], keys), axis=2)  # (n, queries)
            ys[:, first:] = np.take_along_axis(values[:, :, 0], match, axis=1)
        return ys

    def _shift_problem(self, shift: Shift) -> str | None:
        if shift.acts_on == "query":
            return (f"{self.name} has queries of its own (every point from 2 * n_pairs on), and shift "
                    f"'{shift.name}' rewrites the last point as a query drawn like the context")
        return super()._shift_problem(shift)

    @property
    def error_scale(self):
        return 1.0
