"""Classical in-context learners, run on the same prompts a transformer sees (Garg et al. 2022).

A prompt is xs (B, k, d), ys (B, k). A baseline predicts y_i from the pairs before it and x_i
alone, for every i, exactly as Garg's baselines do (src/models.py of dtsip/in-context-learning):
it is fitted afresh on (x_0, y_0) .. (x_{i-1}, y_{i-1}) and evaluated at x_i, and it predicts 0
at i = 0 where there is nothing to fit.

    from seqlab.eval.icl_baselines import run_baseline
    preds = run_baseline("least-squares", xs, ys)             # (B, k)
    preds = run_baseline("xgboost", xs, ys, prefixes=[10, 40])  # NaN except at columns 10 and 40

Inputs are taken as float64 and predictions come back as float64 (gd-2layer trains in float32,
as Garg's networks did). Every baseline is a pure function of the prompts and `seed`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from seqlab.core.errors import BadInput
from seqlab.core.registry import Registry
from seqlab.eval.icl_baselines_trees import greedy_tree, sklearn_tree, xgboost_regressor

# Garg: get_relevant_baselines("sparse_linear_regression") tries Lasso at these alphas.
LASSO_ALPHAS = (1.0, 0.1, 0.01, 0.001, 0.0001)
LASSO_MAX_ITER = 100_000  # Garg: LassoModel(max_iter=100000)
N_NEIGHBORS = 3  # Garg: NNModel(n_neighbors=3), weights="uniform" (his default)
# Not among Garg's baselines. With w ~ N(0, I) and label noise of variance s^2 the posterior
# mean is ridge with alpha = s^2, so 0.1 is the Bayes-optimal learner for noise std ~0.3.
RIDGE_ALPHA = 0.1
# Garg: GDModel(NeuralNetwork(hidden_size=100), opt_alg="adam", batch_size=100, lr=5e-3, num_steps=100)
GD_HIDDEN, GD_STEPS, GD_LR, GD_BATCH = 100, 100, 5e-3, 100
GD_BLOCK = 1_000_000  # hidden activations trained at once (see gd_2layer)
# Newton's method on the logistic loss, fixed step count. The L2 term keeps the minimiser finite
# when the prefix is linearly separable (always so while i <= d); it is small against the i
# loss terms, so on separable data the fitted direction is close to the maximum-margin one.
NEWTON_STEPS, NEWTON_L2 = 10, 0.1

_PIP_NAMES = {"sklearn": "scikit-learn", "xgboost": "xgboost"}


class PredictFn(Protocol):
    def __call__(self, xs: np.ndarray, ys: np.ndarray, prefixes: Sequence[int] | None, *, seed: int = 0) -> np.ndarray:
        """(B, k, d), (B, k) -> (B, k) predictions, NaN at columns not in `prefixes` (None = all)."""


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    requires: tuple[str, ...]  # import names of optional packages, e.g. ("sklearn",)
    predict: PredictFn  # takes prompts already checked by run_baseline


def prefixwise(fit_predict) -> PredictFn:
    """Turn fit_predict(train_x (B,i,d), train_y (B,i), test_x (B,d), seed) -> (B,) into a PredictFn."""

    def predict(xs, ys, prefixes=None, *, seed=0):
        out = np.full(ys.shape, np.nan)
        for i in range(ys.shape[1]) if prefixes is None else prefixes:
            out[:, i] = 0.0 if i == 0 else fit_predict(xs[:, :i], ys[:, :i], xs[:, i], seed)
        return out

    return predict


def least_squares(train_x, train_y, test_x, seed=0):
    """Garg's LeastSquaresModel: the minimum-norm least-squares w, by torch.linalg.lstsq as there.

    Its CPU driver, gelsy (a pivoted QR), returns the minimum-norm solution when i < d, and on
    a batch it is several times faster than numpy's stacked pinv (an SVD per prompt).
    """
    import torch

    w = torch.linalg.lstsq(torch.from_numpy(train_x), torch.from_numpy(train_y)[..., None], driver="gelsy").solution
    return np.einsum("bd,bd->b", test_x, w[..., 0].numpy())


def ridge(alpha: float):
    """argmin_w |X w - y|^2 + alpha |w|^2, solved in closed form for all prompts at once."""

    def fit_predict(train_x, train_y, test_x, seed=0):
        gram = np.einsum("bid,bie->bde", train_x, train_x) + alpha * np.eye(train_x.shape[2])
        w = np.linalg.solve(gram, np.einsum("bid,bi->bd", train_x, train_y)[..., None])[..., 0]
        return np.einsum("bd,bd->b", test_x, w)

    return fit_predict


def lasso(alpha: float):
    """Garg's LassoModel: sklearn Lasso(alpha, fit_intercept=False, max_iter=100000), one fit per prompt per prefix."""

    def fit_predict(train_x, train_y, test_x, seed=0):
        from sklearn.linear_model import Lasso

        out = np.empty(len(train_x))
        for b in range(len(train_x)):
            model = Lasso(alpha=alpha, fit_intercept=False, max_iter=LASSO_MAX_ITER).fit(train_x[b], train_y[b])
            out[b] = test_x[b] @ model.coef_
        return out

    return fit_predict


def averaging(train_x, train_y, test_x, seed=0):
    """Garg's AveragingModel: w = mean_j y_j x_j, the one-step-of-gradient-descent estimate."""
    w = np.einsum("bid,bi->bd", train_x, train_y) / train_x.shape[1]
    return np.einsum("bd,bd->b", test_x, w)


def nearest_neighbours(train_x, train_y, test_x, seed=0):
    """Garg's NNModel(n_neighbors=3): unweighted mean of y over the 3 closest x (Euclidean; fewer if i < 3)."""
    dist = np.sqrt(((train_x - test_x[:, None, :]) ** 2).sum(axis=2))  # (B, i)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :N_NEIGHBORS]
    return np.take_along_axis(train_y, nearest, axis=1).mean(axis=1)


def newton_logistic(train_x, train_y, test_x, seed=0):
    """Logistic regression (no intercept) by NEWTON_STEPS Newton (IRLS) steps; labels t = +1 where y > 0, else -1.

    Minimises sum_j log(1 + exp(-t_j w.x_j)) + NEWTON_L2/2 |w|^2 from w = 0 and returns
    2 P(t = +1 | x_i) - 1 = tanh(w.x_i / 2), a value in (-1, 1): its sign is the predicted class,
    and for classification prompts it is scored by that sign.
    """
    labels = np.where(train_y > 0, 1.0, -1.0)
    n_prompts, _, d = train_x.shape
    w = np.zeros((n_prompts, d))
    for _ in range(NEWTON_STEPS):
        margin = labels * np.einsum("bid,bd->bi", train_x, w)
        wrong = 0.5 * (1.0 - np.tanh(margin / 2.0))  # sigmoid(-margin), without overflow
        grad = -np.einsum("bi,bid->bd", labels * wrong, train_x) + NEWTON_L2 * w
        weighted_x = train_x * (wrong * (1.0 - wrong))[..., None]
        hessian = weighted_x.transpose(0, 2, 1) @ train_x + NEWTON_L2 * np.eye(d)
        w = w - np.linalg.solve(hessian, grad[..., None])[..., 0]
    return np.tanh(np.einsum("bd,bd->b", test_x, w) / 2.0)


def gd_2layer(xs, ys, prefixes=None, *, seed=0):
    """Garg's GDModel: per prompt and prefix, a fresh 2-layer ReLU net (width GD_HIDDEN) fitted by Adam.

    As in Garg's ParallelNetworks, the B networks of one prefix train side by side, here as
    batched matmuls, in slices of the batch holding about GD_BLOCK hidden activations: small
    enough to stay in cache, which is what sets the speed on a CPU. Each network's loss is the
    mean squared error on its own points (Garg averages over the B networks as well, which
    Adam's scale invariance undoes up to its epsilon). Initialisation follows torch.nn.Linear.
    Each prefix draws its initial weights, and its minibatches when i > GD_BATCH, from its own
    generator seeded by (seed, i), and trains in the same slices whatever else is asked for:
    Adam near a minimum turns rounding differences into visibly different networks, so a
    prediction must not depend on which other prefixes are computed.
    """
    import torch

    n_prompts, k, d = xs.shape
    out = np.full(ys.shape, np.nan)
    for i in range(k) if prefixes is None else prefixes:
        if i == 0:
            out[:, 0] = 0.0
            continue
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        weights = [  # torch.nn.Linear's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            (torch.rand(shape, generator=gen) * 2 - 1) / fan_in**0.5
            for shape, fan_in in [((n_prompts, d, GD_HIDDEN), d), ((n_prompts, 1, GD_HIDDEN), d),
                                  ((n_prompts, GD_HIDDEN, 1), GD_HIDDEN), ((n_prompts, 1, 1), GD_HIDDEN)]
        ]
        # Garg: with more than GD_BATCH points each step uses a random GD_BATCH of them, shared by the B networks
        batches = [torch.randperm(i, generator=gen)[:GD_BATCH] for _ in range(GD_STEPS)] if i > GD_BATCH else None
        rows = max(1, GD_BLOCK // (i * GD_HIDDEN))
        with torch.enable_grad():
            for r in range(0, n_prompts, rows):
                block = slice(r, r + rows)
                out[block, i] = _train_nets(torch, xs[block, : i + 1], ys[block, :i], [w[block] for w in weights], batches)
    return out


def _train_nets(torch, xs, train_y, weights, batches):
    """Train B networks (w1 (B,d,h), b1 (B,1,h), w2 (B,h,1), b2 (B,1,1)) on xs[:, :i]; return (B,) predictions at xs[:, i]."""
    params = [w.clone().requires_grad_() for w in weights]

    def net(x):  # (B, n, d) -> (B, n)
        w1, b1, w2, b2 = params
        return torch.baddbmm(b2, torch.relu(torch.baddbmm(b1, x, w1)), w2)[..., 0]  # fused bias adds

    train_x = torch.from_numpy(xs[:, :-1]).float()  # (B, i, d)
    train_y = torch.from_numpy(train_y).float()  # (B, i)
    optimizer = torch.optim.Adam(params, lr=GD_LR)
    for step in range(GD_STEPS):
        x, y = (train_x, train_y) if batches is None else (train_x[:, batches[step]], train_y[:, batches[step]])
        loss = ((net(x) - y) ** 2).mean(dim=1).sum()  # sum over networks of each one's MSE
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return net(torch.from_numpy(xs[:, -1:]).float())[:, 0].double().numpy()


# Listings and the "known:" hint keep the order in which the baselines are registered below.
BASELINES: Registry[Baseline] = Registry("baseline", sort_known=False)


def _entry(name, description, fit_predict=None, *, predict=None, requires=()):
    BASELINES.register(Baseline(name, description, tuple(requires), predict or prefixwise(fit_predict)))


_entry("least-squares", "minimum-norm least squares (Garg's LeastSquaresModel)", least_squares)
_entry("ridge", f"ridge regression, alpha={RIDGE_ALPHA} on the summed squared error", ridge(RIDGE_ALPHA))
for _alpha in LASSO_ALPHAS:
    _entry(f"lasso-{_alpha:g}", f"Lasso(alpha={_alpha:g}) without intercept (Garg's LassoModel)", lasso(_alpha),
           requires=("sklearn",))
_entry("3-nn", "mean y of the 3 nearest x (Garg's NNModel)", nearest_neighbours)
_entry("averaging", "w = mean of y_j x_j (Garg's AveragingModel)", averaging)
_entry("gd-2layer", f"2-layer ReLU net, width {GD_HIDDEN}, {GD_STEPS} Adam steps at lr {GD_LR:g} (Garg's GDModel)",
       predict=gd_2layer)
_entry("greedy-tree", "depth-4 CART regression tree in NumPy (as Garg's DecisionTreeModel(max_depth=4))", greedy_tree)
_entry("sklearn-tree", "sklearn DecisionTreeRegressor(max_depth=4) (Garg's DecisionTreeModel)", sklearn_tree(4),
       requires=("sklearn",))
_entry("sklearn-tree-full", "sklearn DecisionTreeRegressor(max_depth=None) (Garg's DecisionTreeModel)",
       sklearn_tree(None), requires=("sklearn",))
_entry("xgboost", "XGBRegressor with xgboost 1.6 defaults (Garg's XGBoostModel)", xgboost_regressor,
       requires=("xgboost",))
_entry("newton-logistic", f"logistic regression, {NEWTON_STEPS} Newton steps, L2 {NEWTON_L2:g}; tanh(w.x/2)",
       newton_logistic)


def baseline_names(available_only: bool = False) -> list[str]:
    """Registered baselines in registry order; with available_only, those whose optional packages import."""
    return [name for name in BASELINES if not available_only or missing_reason(name) is None]


def missing_reason(name: str) -> str | None:
    """Why baseline `name` cannot run here (an optional package that does not import), or None."""
    for module in BASELINES.get(name).requires:
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{_PIP_NAMES.get(module, module)} is not installed (pip install 'seqlab[icl]')"
    return None


def run_baseline(name: str, xs, ys, prefixes: Sequence[int] | None = None, seed: int = 0) -> np.ndarray:
    """Predictions (B, k) of baseline `name` on prompts xs (B, k, d), ys (B, k).

    Column i is fitted on the first i pairs and evaluated at x_i; columns not in `prefixes`
    (None = all) are NaN.
    """
    baseline = BASELINES.get(name)
    reason = missing_reason(name)
    if reason is not None:
        raise BadInput(f"baseline '{name}' cannot run: {reason}")
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if xs.ndim != 3 or ys.shape != xs.shape[:2]:
        raise BadInput(f"prompts must be xs (B, k, d) and ys (B, k); got {xs.shape} and {ys.shape}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise BadInput("prompts hold NaN or infinite values")
    k = xs.shape[1]
    if prefixes is not None:
        prefixes = sorted({int(i) for i in prefixes})
        if prefixes and (prefixes[0] < 0 or prefixes[-1] >= k):
            raise BadInput(f"prefixes must lie in 0..{k - 1} for prompts of {k} points; got {prefixes[0]}..{prefixes[-1]}")
    return baseline.predict(xs, ys, prefixes, seed=seed)
