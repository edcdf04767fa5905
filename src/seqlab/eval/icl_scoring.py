"""Scoring an in-context learner and classical baselines on the same prompts: per-prompt, per-k error.

A model and every baseline predict each point of each prompt from the points before it; the error
curve is the mean error against k, the number of examples seen, with a bootstrap 90% interval.
Slow baselines (a fit per prefix per prompt) run on the first `slow_n` prompts and at `slow_ks` only.
"""

from __future__ import annotations

import numpy as np
import torch

from seqlab.eval.icl_baselines import missing_reason, run_baseline
from seqlab.eval.icl_curves import error_curve
from seqlab.tasks.function_classes import FunctionClass

# Baselines that fit a model per prefix per prompt: they run on fewer prompts and prefixes.
SLOW_BASELINES = ("lasso", "greedy-tree", "sklearn-tree", "xgboost", "gd-2layer")


def score(fc: FunctionClass, preds: np.ndarray, ys: np.ndarray, scored: np.ndarray | None = None) -> np.ndarray:
    """Per-prompt, per-k error: squared error / fc.error_scale for regression (Garg's normalisation,
    so predicting 0 scores about 1), and 0/1 error of the sign for classification. Points outside
    `scored` (Park's outliers, vector-mqar's context) are NaN: no mean reads them."""
    if preds.ndim == 1:  # a model that predicts the last point only (linear self-attention)
        preds = np.concatenate([np.full((len(ys), ys.shape[1] - 1), np.nan), preds[:, None]], axis=1)
    if fc.kind == "classification":
        err = np.where(np.isnan(preds), np.nan, (np.sign(preds) != np.sign(ys)).astype(np.float64))
    else:
        err = (preds.astype(np.float64) - ys) ** 2 / fc.error_scale
    return err if scored is None else np.where(scored[:, : err.shape[1]], err, np.nan)


@torch.no_grad()
def model_predictions(model, xs: np.ndarray, ys: np.ndarray, loops: int | None = None, batch: int = 256) -> np.ndarray:
    """(n, k) predictions of every prefix, in batches, on the model's device."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(xs), batch):
        x = torch.from_numpy(xs[s:s + batch]).to(dev)
        y = torch.from_numpy(ys[s:s + batch]).to(dev)
        out.append(model(x, y, loops).float().cpu().numpy())
    return np.concatenate(out)


def is_slow(name: str) -> bool:
    return name.startswith(SLOW_BASELINES)


def baseline_curves(fc: FunctionClass, xs: np.ndarray, ys: np.ndarray, names: list[str], slow_n: int,
                    slow_ks: list[int], seed: int = 0,
                    scored: np.ndarray | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """Error curves of each named baseline, and a note for each that was skipped (not installed)."""
    curves, skipped = {}, {}
    for name in names:
        reason = missing_reason(name)
        if reason is not None:
            skipped[name] = reason
            continue
        if is_slow(name):
            ks = [k for k in slow_ks if k < xs.shape[1]]
            preds = run_baseline(name, xs[:slow_n], ys[:slow_n], prefixes=ks, seed=seed)
            curves[name] = error_curve(score(fc, preds, ys[:slow_n], None if scored is None else scored[:slow_n]), seed=seed)
        else:
            curves[name] = error_curve(score(fc, run_baseline(name, xs, ys, seed=seed), ys, scored), seed=seed)
    return curves, skipped
