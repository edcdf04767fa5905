"""Plain-Python references for the in-context function classes, written from the papers' definitions and
independent of seqlab's vectorised code: loops over lists of floats, a recursive tree walk, explicit ReLUs.

Each takes the function's parameters as lists (`{k: v.tolist()}` of `params(...)`), one x as a list of
floats and the family's config, and returns the noiseless y (the logit for logistic regression).
"""

import math


def dot(w: list[float], x: list[float]) -> float:
    assert len(w) == len(x)
    return math.fsum(wj * xj for wj, xj in zip(w, x))


def linear_regression(p: dict, x: list[float], cfg: dict) -> float:
    return dot(p["w"], x)


def noisy_linear_regression_without_noise(p: dict, x: list[float], cfg: dict) -> float:
    """y = x . w times the renormaliser sqrt(d / (d + noise_std^2)), the noise itself left out."""
    d, s = len(x), cfg.get("noise_std", 1.0)
    c = math.sqrt(d / (d + s * s)) if cfg.get("renormalize", True) else 1.0
    return c * dot(p["w"], x)


def linear_classification(p: dict, x: list[float], cfg: dict) -> float:
    return 1.0 if dot(p["w"], x) >= 0 else -1.0


def logistic_logit(p: dict, x: list[float], cfg: dict) -> float:
    return dot(p["w"], x)


def quadratic_regression(p: dict, x: list[float], cfg: dict) -> float:
    return math.fsum(wj * xj * xj for wj, xj in zip(p["w"], x)) / math.sqrt(3)


def relu_2nn_regression(p: dict, x: list[float], cfg: dict) -> float:
    w1, w2 = p["W1"], p["W2"]  # w1[j][k]: input j to hidden unit k
    hidden = len(w2)
    total = []
    for k in range(hidden):
        pre = math.fsum(w1[j][k] * x[j] for j in range(len(x)))
        total.append(w2[k] * (pre if pre > 0 else 0.0))
    return math.sqrt(2 / hidden) * math.fsum(total)


def decision_tree(p: dict, x: list[float], cfg: dict) -> float:
    coords, leaves = p["coords"], p["leaves"]
    depth = cfg.get("depth", 4)

    def walk(node: int, level: int) -> float:
        if level == depth:
            return leaves[node - (2**depth - 1)]
        left, right = 2 * node + 1, 2 * node + 2
        return walk(right if x[coords[node]] > 0 else left, level + 1)

    return walk(0, 0)


def sparse_parity(p: dict, x: list[float], cfg: dict) -> float:
    return math.prod(x[s] for s in p["secret"])


REFERENCES = {
    "linear-regression": linear_regression,
    "sparse-linear-regression": linear_regression,
    "noisy-linear-regression": noisy_linear_regression_without_noise,
    "linear-classification": linear_classification,
    "logistic-regression": logistic_logit,
    "quadratic-regression": quadratic_regression,
    "relu-2nn-regression": relu_2nn_regression,
    "decision-tree": decision_tree,
    "sparse-parity": sparse_parity,
}
# Families whose y is the reference exactly (the others add noise: checked by their statistics).
DETERMINISTIC = ("linear-regression", "sparse-linear-regression", "linear-classification", "quadratic-regression",
                 "relu-2nn-regression", "decision-tree", "sparse-parity")


def assert_matches(kind: str, y: float, want: float, p: dict, x: list[float]) -> None:
    """y (float32, from seqlab) equals the reference: to float32 rounding for regression, exactly for labels.
    A linear label is only compared where w . x is clear of 0 by more than float64 summation error."""
    if kind == "classification":
        if "w" in p and abs(dot(p["w"], x)) <= 1e-12 * math.fsum(abs(a * b) for a, b in zip(p["w"], x)):
            assert y in (-1.0, 1.0)
            return
        assert y == want, (y, want)
    else:
        assert math.isclose(y, want, rel_tol=2e-7, abs_tol=1e-9), (y, want)


# -- Park et al. 2024 (function_outliers_recall.py): the scored points of the outlier families are linear regression;
# the others are the outliers below. Recall's y is computed from the prompt's xs alone.

def orthogonal_outlier(ref: list[float], g_u: list[float], g_v: list[float], a: float, b: float,
                       active: int) -> list[float]:
    """Park's dummy vector a u + b v in the first `active` coordinates (zeros after): u is g_u less its
    projection on ref and v is g_v less its projections on ref, then on u, each projection their
    `orthogonalize`, g - c * <g, c> / <c, c>; then a <- a / (a^2 + b^2) and b <- b / (a^2 + b^2) with the
    new a. The part of a vector orthogonal to ref (and u) lives in active - 1 (active - 2) dimensions, so
    it is 0 when that is 0: u = 0 for active = 1, v = 0 for active <= 2."""

    def minus_projection(g: list[float], c: list[float]) -> list[float]:
        k = dot(g, c) / dot(c, c)
        return [gi - k * ci for gi, ci in zip(g, c)]

    r = ref[:active]
    u = minus_projection(g_u[:active], r) if active >= 2 else [0.0] * active
    v = minus_projection(minus_projection(g_v[:active], r), u) if active >= 3 else [0.0] * active
    a = a / (a * a + b * b)
    b = b / (a * a + b * b)
    return [a * ui + b * vi for ui, vi in zip(u, v)] + [0.0] * (len(ref) - active)


def outlier_point(name: str, p: dict, active: int) -> tuple[list[float], float]:
    """An outlier's (x, y) for the prompt with params p: many-outlier regression's (ones, 1), the ones in the
    active coordinates; orthogonal-outlier regression's vector orthogonal to `orthogonal_to[0]` and the
    first coordinate of a second such vector."""
    d = len(p["w"])
    if name == "many-outlier-regression":
        return [1.0] * active + [0.0] * (d - active), 1.0
    x, y = (orthogonal_outlier(p["orthogonal_to"][k], p["gauss"][k][0], p["gauss"][k][1], p["coef"][k][0],
                               p["coef"][k][1], active) for k in range(2))
    return x, y[0]


def vector_mqar(xs: list[list[float]], i: int, n_pairs: int) -> list[float]:
    """The ys point i may have: 0 before the first query (point 2 * n_pairs); for a query x, v_m[0] with
    k_m = xs[2m] the key of largest <x, k_m> and v_m = xs[2m + 1]. Keys whose inner product is within
    rounding (1e-9 relative) of the largest give the other candidates."""
    if i < 2 * n_pairs:
        return [0.0]
    scores = [dot(xs[i], xs[2 * m]) for m in range(n_pairs)]
    best = max(scores)
    slack = 1e-9 * max(math.fsum(abs(a * b) for a, b in zip(xs[i], xs[2 * m])) for m in range(n_pairs))
    return [xs[2 * m + 1][0] for m in range(n_pairs) if scores[m] >= best - slack]
