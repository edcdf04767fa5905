"""Tree baselines for in-context regression (Garg et al. 2022, section 5, decision trees).

Each function here fits one prompt prefix for a whole batch at once:

    fit_predict(train_x (B, i, d), train_y (B, i), test_x (B, d), seed) -> (B,) prediction for test_x

`icl_baselines` turns these into predictions at every prefix of a prompt. Garg's
`DecisionTreeModel` and `XGBoostModel` (src/models.py of dtsip/in-context-learning) fit one
scikit-learn / xgboost model per prompt per prefix; `greedy_tree` is the same CART tree
grown in NumPy for the whole batch at once, so the decision-tree comparison needs no extra.
"""

from __future__ import annotations

import numpy as np

MAX_DEPTH = 4  # Garg: DecisionTreeModel(max_depth=4) in get_relevant_baselines("decision_tree")

# scikit-learn's splitter skips split points between values closer than this
# (FEATURE_THRESHOLD in sklearn/tree/_splitter.pyx) and treats a node whose impurity is at
# most float64 epsilon as pure (EPSILON in _tree.pyx); using the same constants keeps the
# NumPy tree and DecisionTreeRegressor in agreement.
_FEATURE_THRESHOLD = 1e-7
_PURE = np.finfo(np.float64).eps

# Garg pins xgboost==1.6.1 (environment.yml) and calls xgb.XGBRegressor() with its defaults.
# Those defaults are written out because xgboost 2 changed two of them (base_score is now
# fitted, tree_method "auto" now means "hist"); 1.6's "auto" chose "exact" on small data.
XGBOOST_PARAMS = {
    "objective": "reg:squarederror",
    "n_estimators": 100,
    "max_depth": 6,
    "learning_rate": 0.3,
    "base_score": 0.5,
    "tree_method": "exact",
    "reg_lambda": 1.0,
    "min_child_weight": 1.0,
    "n_jobs": 1,  # one small fit per prompt: threads cost more than they save
}


def greedy_tree(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A depth-4 CART regression tree (squared error), fitted per prompt, evaluated at test_x."""
    return tree_fit_predict(train_x, train_y, test_x[:, None, :], MAX_DEPTH)[:, 0]


def tree_fit_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, max_depth: int) -> np.ndarray:
    """Grow B greedy regression trees at once and predict B sets of query points.

    train_x (B, n, d), train_y (B, n), query_x (B, q, d) -> (B, q).
    Same rule as sklearn's DecisionTreeRegressor(max_depth) with default settings: split a node
    while it is impure, has two or more points and depth < max_depth; take the split that most
    reduces the summed squared error, with the threshold halfway between neighbouring values;
    a leaf predicts the mean of its points. Equal-gain splits go to the lowest feature index
    (sklearn breaks those ties by a random feature order, so the two can differ only there).
    Nodes are numbered as a heap: the children of node m are 2m+1 (x <= threshold) and 2m+2.
    """
    n_prompts, n, _ = train_x.shape
    rows = np.arange(n_prompts)
    order = np.argsort(train_x, axis=1, kind="stable").transpose(0, 2, 1)  # (B, d, n) point at each sorted place
    x_sorted = np.take_along_axis(train_x.transpose(0, 2, 1), order, axis=2)  # (B, d, n)
    y_sorted = train_y[rows[:, None, None], order]  # (B, d, n)
    node_of_point = np.zeros((n_prompts, n), dtype=np.int64)
    node_of_query = np.zeros(query_x.shape[:2], dtype=np.int64)
    for depth in range(max_depth):
        for node in range(2**depth - 1, 2 ** (depth + 1) - 1):
            in_node = node_of_point == node  # (B, n)
            if not in_node.any():
                continue
            feature, threshold, splits = _best_split(x_sorted, y_sorted, in_node[rows[:, None, None], order], train_y, in_node)
            point_left = train_x[rows, :, feature] <= threshold[:, None]  # (B, n)
            query_left = query_x[rows, :, feature] <= threshold[:, None]  # (B, q)
            moved_points = in_node & splits[:, None]
            node_of_point[moved_points] = np.where(point_left, 2 * node + 1, 2 * node + 2)[moved_points]
            moved_queries = (node_of_query == node) & splits[:, None]
            node_of_query[moved_queries] = np.where(query_left, 2 * node + 1, 2 * node + 2)[moved_queries]
    n_nodes = 2 ** (max_depth + 1) - 1
    flat = (rows[:, None] * n_nodes + node_of_point).ravel()
    sums = np.bincount(flat, weights=train_y.ravel(), minlength=n_prompts * n_nodes)
    counts = np.bincount(flat, minlength=n_prompts * n_nodes)
    query_flat = rows[:, None] * n_nodes + node_of_query  # every query lands in a node that holds points
    return sums[query_flat] / counts[query_flat]


def _best_split(x_sorted, y_sorted, in_node_sorted, train_y, in_node):
    """Best (feature, threshold) of one node in each of B prompts, and whether that node splits at all.

    x_sorted, y_sorted, in_node_sorted: (B, d, n), each feature's points in ascending order.
    A split "after sorted place p" sends the node's points at places <= p left.
    """
    n_prompts, d, n = x_sorted.shape
    count = in_node.sum(axis=1)[:, None, None]  # (B, 1, 1)
    total = np.where(in_node, train_y, 0.0).sum(axis=1)[:, None, None]
    impurity = np.where(in_node, train_y**2, 0.0).sum(axis=1) / np.maximum(count[:, 0, 0], 1) - (
        total[:, 0, 0] / np.maximum(count[:, 0, 0], 1)
    ) ** 2
    left_count = np.cumsum(in_node_sorted, axis=2)
    left_sum = np.cumsum(np.where(in_node_sorted, y_sorted, 0.0), axis=2)
    # value of the next point of this node after place p (inf where there is none)
    own_values = np.where(in_node_sorted, x_sorted, np.inf)
    min_from = np.minimum.accumulate(own_values[..., ::-1], axis=2)[..., ::-1]
    next_value = np.concatenate([min_from[..., 1:], np.full((n_prompts, d, 1), np.inf)], axis=2)
    valid = in_node_sorted & np.isfinite(next_value) & (next_value > x_sorted + _FEATURE_THRESHOLD)
    right_count = count - left_count
    with np.errstate(divide="ignore", invalid="ignore"):
        # maximising sum_L^2/n_L + sum_R^2/n_R is minimising the children's summed squared error
        gain = left_sum**2 / left_count + (total - left_sum) ** 2 / right_count
    gain = np.where(valid, gain, -np.inf).reshape(n_prompts, d * n)
    best = np.argmax(gain, axis=1)  # first maximum: lowest feature, then lowest place
    feature, place = best // n, best % n
    rows = np.arange(n_prompts)
    low, high = x_sorted[rows, feature, place], next_value[rows, feature, place]
    splits = valid.reshape(n_prompts, -1).any(axis=1) & (impurity > _PURE)
    with np.errstate(invalid="ignore"):
        threshold = low / 2.0 + high / 2.0
        threshold = np.where(threshold == high, low, threshold)  # as sklearn, for neighbours one ulp apart
    return feature, np.where(splits, threshold, np.inf), splits


def sklearn_tree(max_depth: int | None):
    """Garg's DecisionTreeModel: one sklearn DecisionTreeRegressor(max_depth) per prompt per prefix."""

    def fit_predict(train_x, train_y, test_x, seed=0):
        from sklearn.tree import DecisionTreeRegressor

        out = np.empty(len(train_x))
        for b in range(len(train_x)):
            tree = DecisionTreeRegressor(max_depth=max_depth, random_state=seed).fit(train_x[b], train_y[b])
            out[b] = tree.predict(test_x[b : b + 1])[0]
        return out

    return fit_predict


def xgboost_regressor(train_x, train_y, test_x, seed: int = 0) -> np.ndarray:
    """Garg's XGBoostModel: one gradient-boosted tree ensemble (XGBOOST_PARAMS) per prompt per prefix."""
    import xgboost as xgb

    out = np.empty(len(train_x))
    for b in range(len(train_x)):
        model = xgb.XGBRegressor(**XGBOOST_PARAMS, random_state=seed).fit(train_x[b], train_y[b])
        out[b] = float(model.predict(test_x[b : b + 1])[0])
    return out
