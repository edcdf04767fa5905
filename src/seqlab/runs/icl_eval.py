"""Scoring an in-context learning run against classical baselines on the same test prompts.

A model and every baseline predict each point of each prompt from the points before it; the error
curve is the mean error against k, the number of examples seen, with a bootstrap 90% interval.
Slow baselines (a fit per prefix per prompt) run on the first `slow_n` prompts and at `slow_ks` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seqlab.eval.icl_baselines import missing_reason, run_baseline
from seqlab.eval.icl_curves import error_curve
from seqlab.runs.icl import load_icl_run, model_predictions, score
from seqlab.core.io import write_json
from seqlab.tasks.function_classes import FunctionClass

# Baselines that fit a model per prefix per prompt: they run on fewer prompts and prefixes.
SLOW_BASELINES = ("lasso", "greedy-tree", "sklearn-tree", "xgboost", "gd-2layer")


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


def evaluate_icl(run_dir: Path, n: int, baselines: list[str] = (), slow_n: int = 200, slow_ks: list[int] = (),
                 shift: str | None = None, loops: int | None = None, seed: int | None = None,
                 label: str | None = None, device: str | None = None, n_points: int | None = None) -> dict[str, Any]:
    """Error curves of the run's model (and of `baselines`) on n test prompts of `n_points` points (default:
    the task's); writes eval/<label>.json."""
    config, fc, model = load_icl_run(run_dir, device)
    seed = config.train.seed if seed is None else seed
    p = fc.prompts(seed, "test", 0, n, shift=shift, n_points=n_points)
    scored = getattr(p, "scored", None)
    errors = score(fc, model_predictions(model, p.xs, p.ys, loops), p.ys, scored)
    curves = {"model": error_curve(errors, seed=seed)}
    base, skipped = baseline_curves(fc, p.xs, p.ys, list(baselines), slow_n, list(slow_ks), seed, scored)
    curves.update(base)
    # Slow baselines see only the first slow_n prompts: the model on those same prompts, to compare with.
    subset = error_curve(errors[:slow_n], seed=seed) if any(map(is_slow, base)) and slow_n < n else None
    result = {"run_dir": str(run_dir), "task": fc.name, "n_dims": fc.config.n_dims, "n": n, "seed": seed,
              "shift": shift, "loops": loops, "n_points": p.xs.shape[1], "error_scale": fc.error_scale, "kind": fc.kind,
              "curves": curves, "skipped": skipped, "model_on_slow_prompts": subset, "slow_n": slow_n}
    default = "error_by_points" + (f".{shift}" if shift else "") + (f".{n_points}" if n_points else "")
    write_json(Path(run_dir) / "eval" / f"{label or default}.json", result)
    return result
