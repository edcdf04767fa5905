"""Looped transformers (Yang et al. 2024): one block applied b times with input injection learns
in-context regression about as well as a standard transformer, with a fraction of the parameters.

Both models see the same prompts and curriculum; the looped one also follows a loop curriculum
(b grows by 2 every `interval` steps) and is trained on the mean loss of its last T loops. At
evaluation it runs any number of loops, past the b it was trained with: the plot shows whether the
error stays put there (a fixed point) or drifts.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from seqlab.eval.icl_curves import at_k, error_curve, ratio
from seqlab.eval.plots import error_by_points
from seqlab.data.prompts import curriculum_ramps
from seqlab.eval.icl_scoring import model_predictions, score
from seqlab.runs import load, make_config, train as train_run
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.markdown import results_header
from seqlab.tasks.function_classes import get_function

FAMILIES = ("linear-regression", "sparse-linear-regression")

BUDGETS = {
    "smoke": {
        "task": {"n_dims": 4, "n_points": 9},
        "standard": {"n_layers": 2, "d_model": 32, "n_heads": 2},
        "looped": {"n_layers": 1, "d_model": 32, "n_heads": 2, "loops": 3, "loop_window": 2},
        "train": {"steps": 16, "batch_size": 16, "lr": 1e-3, "warmup": 4, "eval_every": 8, "eval_n": 16, "log_every": 8,
                  "checkpoint_every": 8},
        "curriculum": None, "loop_curriculum": {"start": 1, "inc": 1, "interval": 4}, "n_eval": 64, "eval_loops": 6,
    },
    "cpu": {  # d = 5 keeps both models within minutes on a 2-core CPU
        "task": {"n_dims": 5, "n_points": 16},
        "standard": {"n_layers": 6, "d_model": 64, "n_heads": 4, "canon": 2},
        "looped": {"n_layers": 1, "d_model": 64, "n_heads": 4, "canon": 2, "loops": 10, "loop_window": 6},
        "train": {"steps": 6000, "batch_size": 64, "lr": 1e-3, "warmup": 300, "eval_every": 1000, "eval_n": 256,
                  "log_every": 100, "checkpoint_every": 1000, "weight_decay": 0.0},
        "curriculum": {"dims_start": 2, "points_start": 5, "interval": 300},
        "loop_curriculum": {"start": 2, "inc": 1, "interval": 300}, "n_eval": 1000, "eval_loops": 30,
    },
    "gpu": {  # Yang et al.'s setting: d = 20, b = 20, T = 15, width 256, against Garg's 12-layer model
        "task": {"n_dims": 20, "n_points": 41},
        "standard": {"n_layers": 12, "d_model": 256, "n_heads": 8},
        "looped": {"n_layers": 1, "d_model": 256, "n_heads": 8, "loops": 20, "loop_window": 15},
        "train": {"steps": 200000, "batch_size": 64, "lr": 1e-4, "warmup": 1000, "eval_every": 5000, "eval_n": 1280,
                  "log_every": 500, "checkpoint_every": 5000, "weight_decay": 0.0, "schedule": "constant"},
        "curriculum": {"dims_start": 5, "points_start": 11, "interval": 2000},
        "loop_curriculum": {"start": 1, "inc": 2, "interval": 2000}, "n_eval": 1280, "eval_loops": 60,
    },
}


def model_config(family: str, s: dict[str, Any], seed: int, looped: bool):
    d, n_points = s["task"]["n_dims"], s["task"]["n_points"]
    curriculum = curriculum_ramps(s.get("curriculum"), d, n_points)
    model = {**(s["looped"] if looped else s["standard"]), "max_points": n_points}
    if looped:
        model["arch"] = "looped"
        lc = s["loop_curriculum"]
        curriculum["loops"] = {"start": min(lc["start"], model["loops"]), "end": model["loops"], "inc": lc["inc"],
                               "interval": lc["interval"]}
    return make_config({"task": {"name": family, **s["task"]}, "model": model,
                               "train": {**s["train"], "seed": seed}, "curriculum": curriculum})


@torch.no_grad()
def errors_by_loops(model, fc, xs: np.ndarray, ys: np.ndarray, max_loops: int, k: int, batch: int = 250) -> list[float]:
    """Mean error at k examples after 1..max_loops loops (one pass computes every loop count)."""
    sums = np.zeros(max_loops)
    for s in range(0, len(xs), batch):
        outs = model.loop_outputs(torch.from_numpy(xs[s:s + batch]), torch.from_numpy(ys[s:s + batch]), max_loops)
        for t, o in enumerate(outs):
            sums[t] += score(fc, o.numpy(), ys[s:s + batch])[:, k].sum()
    return [float(v) for v in sums / len(xs)]


def run(ctx: Context) -> Outcome:
    family, s = ctx.options.family, ctx.settings
    d = s["task"]["n_dims"]
    fc = get_function(family, **s["task"])
    p = fc.prompts(ctx.seed, "test", 0, s["n_eval"])
    curves, metrics, runs = {}, {}, {}
    for label, looped in (("standard", False), ("looped", True)):
        run_dir = ctx.run_dir(f"{family}-{label}")
        summary = train_run(run_dir, model_config(family, s, ctx.seed, looped), quiet=ctx.quiet)
        model = load(run_dir).model
        curves[label] = error_curve(score(fc, model_predictions(model, p.xs, p.ys), p.ys), seed=ctx.seed)
        metrics[f"{label}.n_params"] = summary["n_params"]
        metrics[f"{label}.train_seconds"] = round(summary["train_seconds"] or 0.0, 1)
        metrics[f"{label}.error.k{2 * d}"] = at_k(curves[label], 2 * d)
        metrics[f"{label}.error.k{d}"] = at_k(curves[label], d)
        runs[label] = f"runs/{family}-{label}"
    by_loops = errors_by_loops(model, fc, p.xs, p.ys, s["eval_loops"], 2 * d)
    b = s["looped"]["loops"]
    metrics.update({
        "n_dims": d,
        "params_ratio": metrics["looped.n_params"] / metrics["standard.n_params"],
        "error_ratio_at_2d": ratio(metrics[f"looped.error.k{2 * d}"], metrics[f"standard.error.k{2 * d}"]),
        "looped.error_at_2d.trained_loops": by_loops[b - 1],
        "looped.error_at_2d.max_loops": by_loops[-1],
    })
    error_by_points(curves, ctx.out / "plots" / "error_by_points.png", title=f"{family}, d = {d}", marks={"k = d": d},
                    ylabel=f"squared error / {fc.error_scale:g}")
    error_by_points({"looped, k = 2d": {"k": list(range(1, len(by_loops) + 1)), "mean": by_loops}},
                    ctx.out / "plots" / "error_by_loops.png", title=f"looped model: error at k = {2 * d} against loops",
                    xlabel="loops at evaluation", ylabel=f"squared error / {fc.error_scale:g}", marks={f"b = {b} (trained)": b},
                    log=True)
    return Outcome(metrics=metrics, runs=runs, artifacts=["plots/error_by_points.png", "plots/error_by_loops.png"],
                   extra={"curves": curves, "by_loops": by_loops, "trained_loops": b})


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    fam = results["options"]["family"]
    d = m.get("n_dims")
    rows = [f"| {lab} | {m[f'{lab}.n_params']:,} | {m[f'{lab}.train_seconds']} |"
            + " | ".join(f" {m.get(f'{lab}.error.k{k}', float('nan')):.4f}" for k in sorted({d, 2 * d} if d else ())) + " |"
            for lab in ("standard", "looped")]
    ks = sorted({d, 2 * d}) if d else []
    by_loops = results.get("by_loops", [])
    shown = (1, 2, 4, 8, 12, 16, 20, 24, 30, 36, 48, 60)
    loops_line = ", ".join(f"{t}: {v:.4f}" for t, v in enumerate(by_loops, start=1) if t in shown)
    return (results_header(results, f"Looped transformer: {fam}")
            + "| model | parameters | train s | " + " | ".join(f"error at k = {k}" for k in ks) + " |\n"
            + "|---|---:|---:|" + "---:|" * len(ks) + "\n" + "\n".join(rows) + "\n\n"
            + f"Parameter ratio {m.get('params_ratio', float('nan')):.3f}; error ratio at k = 2d "
            + (f"{m['error_ratio_at_2d']:.3f}" if m.get("error_ratio_at_2d") is not None else "—") + ".\n\n"
            + f"Error at k = 2d by loops at evaluation (trained with b = {results.get('trained_loops')}): {loops_line}\n\n"
            + "![error by k](plots/error_by_points.png)\n\n![error by loops](plots/error_by_loops.png)\n")


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", default="linear-regression", choices=FAMILIES)


register(Recipe(
    name="looped",
    paper="Yang et al. 2024, Looped Transformers are Better at Learning Learning Algorithms",
    description="a 1-layer looped transformer against a standard one on in-context regression (--family)",
    budgets=BUDGETS,
    claims=[
        Claim("the looped model has <= 20% of the standard model's parameters", "Yang et al. 2024",
              metric="params_ratio", threshold=0.2, direction="at_most"),
        Claim("the looped model's error at k = 2d is within 1.5x of the standard model's", "Yang et al. 2024",
              metric="error_ratio_at_2d", threshold=1.5, direction="at_most"),
    ],
    run=run,
    report=report,
    options=options,
    minutes={"smoke": 0.5, "cpu": 30.0},
))
