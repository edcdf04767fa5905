"""Error curves of in-context learning: mean error against the number of examples, with bootstrap
intervals over prompts (Garg et al. 2022 report 90% intervals from 1,000 resamples)."""

from __future__ import annotations

import numpy as np


def bootstrap_interval(errors: np.ndarray, level: float = 0.9, n_boot: int = 1000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean over prompts, per column: errors (n, k) -> (lo (k,), hi (k,)).
    NaN columns (a baseline not run at that k) stay NaN."""
    rng = np.random.default_rng(seed)
    n = errors.shape[0]
    idx = rng.integers(0, n, size=(n_boot, n))
    means = np.nanmean(errors[idx], axis=1) if np.isnan(errors).any() else errors[idx].mean(axis=1)  # (n_boot, k)
    tail = (1 - level) / 2
    return np.quantile(means, tail, axis=0), np.quantile(means, 1 - tail, axis=0)


def error_curve(errors: np.ndarray, ks: list[int] | None = None, level: float = 0.9, seed: int = 0) -> dict[str, list]:
    """{"k", "mean", "lo", "hi"} for the columns where errors exist (k counts examples seen: column i is
    the prediction of point i from i examples)."""
    cols = [i for i in range(errors.shape[1]) if not np.isnan(errors[:, i]).all()]
    if ks is not None:
        cols = [i for i in cols if i in set(ks)]
    sub = errors[:, cols]
    lo, hi = bootstrap_interval(sub, level, seed=seed)
    return {"k": cols, "mean": [float(v) for v in np.nanmean(sub, axis=0)],
            "lo": [float(v) for v in lo], "hi": [float(v) for v in hi]}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either was not measured or b is not positive."""
    return None if a is None or b is None or b <= 0 else a / b


def at_k(curve: dict[str, list], k: int) -> float | None:
    """The curve's mean error at k examples, or None where it was not measured."""
    return curve["mean"][curve["k"].index(k)] if k in curve["k"] else None
