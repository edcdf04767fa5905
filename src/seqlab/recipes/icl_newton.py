"""In-context Newton (Giannou et al. 2025): linear self-attention can run Newton's iteration for the
matrix inverse, and trained linear-attention stacks do about as well as that many Newton steps.

(1) An explicit weight construction (`models/newton_construction.py`): one LSA layer per
    Newton-Schulz step X <- X(2I - AX), checked against NumPy on random SPD matrices.
(2) Linear self-attention models of depth 1..L trained on linear regression; their error against
    depth beside the least-squares prediction after T Newton-Schulz iterations, T = depth, from
    X_0 = A / ||A||_2^2 (which converges for any SPD A).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqlab.eval.plots import error_by_points
from seqlab.eval.icl_scoring import model_predictions, score
from seqlab.runs import load, make_config, train as train_run
from seqlab.models.newton_construction import NewtonLayout, newton_layer, newton_schulz_numpy, newton_tokens, read_iterate
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.markdown import results_header
from seqlab.tasks.function_classes import get_function

BUDGETS = {
    "smoke": {"construction": {"dims": [2, 3], "per_dim": 3},
              "lsa": {"n_dims": 3, "n_points": 8, "depths": [1, 2], "steps": 20, "batch_size": 32, "lr": 1e-2},
              "n_eval": 64},
    "cpu": {"construction": {"dims": list(range(2, 13)), "per_dim": 20},
            "lsa": {"n_dims": 5, "n_points": 21, "depths": [1, 2, 3, 4, 5, 6], "steps": 3000, "batch_size": 256, "lr": 4e-3,
                    "clip": 10.0},
            "n_eval": 4000},
    "gpu": {"construction": {"dims": list(range(2, 21)), "per_dim": 50},  # Giannou et al.'s depth experiment scale
            "lsa": {"n_dims": 10, "n_points": 51, "depths": [1, 2, 3, 4, 5, 6], "steps": 100000, "batch_size": 2000, "lr": 4e-4,
                    "clip": 10.0},
            "n_eval": 5000},
}


def construction_errors(dims: list[int], per_dim: int, seed: int, dtype=torch.float32) -> dict[str, float]:
    """Largest difference between one constructed Newton layer and NumPy's step, over random SPD A
    (as data of n = 2d + 3 Gaussian points) and iterates X_0 = A / ||A||^2, in `dtype`."""
    rng = np.random.default_rng(seed)
    worst_abs, worst_rel = 0.0, 0.0
    for d in dims:
        n = 2 * d + 3
        layer = newton_layer(d, n, dtype=dtype)
        for _ in range(per_dim):
            xs = rng.standard_normal((1, n, d))
            ys = rng.standard_normal((1, n))
            xq = rng.standard_normal((1, d))
            A = xs[0].T @ xs[0] / n
            X0 = A / np.linalg.norm(A, 2) ** 2
            z = newton_tokens(torch.tensor(xs, dtype=dtype), torch.tensor(ys, dtype=dtype), torch.tensor(xq, dtype=dtype),
                              X0=torch.tensor(X0[None], dtype=dtype), A=torch.tensor(A[None], dtype=dtype))
            with torch.no_grad():
                got = read_iterate(layer(z), d)[0].double().numpy()
            want = newton_schulz_numpy(A, X0, 1)[1]
            worst_abs = max(worst_abs, float(np.abs(got - want).max()))
            worst_rel = max(worst_rel, float(np.abs(got - want).max() / np.abs(want).max()))
    return {"max_abs": worst_abs, "max_rel": worst_rel, "width": NewtonLayout(dims[-1]).width}


def newton_errors(xs: np.ndarray, ys: np.ndarray, steps: list[int], error_scale: float) -> dict[int, float]:
    """Mean squared error / scale of x_q^T X_T b, the least-squares prediction after T Newton-Schulz
    iterations for A^{-1} (A = X^T X / n, b = X^T y / n, X_0 = A / ||A||_2^2)."""
    ctx_x, ctx_y, xq, yq = xs[:, :-1].astype(np.float64), ys[:, :-1].astype(np.float64), xs[:, -1], ys[:, -1]
    n = ctx_x.shape[1]
    A = np.einsum("bnd,bne->bde", ctx_x, ctx_x) / n
    b = np.einsum("bnd,bn->bd", ctx_x, ctx_y) / n
    X0 = A / (np.linalg.norm(A, 2, axis=(1, 2)) ** 2)[:, None, None]
    iterates = newton_schulz_numpy(A, X0, max(steps))
    out = {}
    for T in steps:
        pred = np.einsum("bd,bde,be->b", xq, iterates[T], b)
        out[T] = float(np.mean((pred - yq) ** 2) / error_scale)
    return out


def run(ctx: Context) -> Outcome:
    s, c = ctx.settings, ctx.settings["construction"]
    cons32 = construction_errors(c["dims"], c["per_dim"], ctx.seed, torch.float32)
    cons64 = construction_errors(c["dims"], c["per_dim"], ctx.seed, torch.float64)
    lsa = s["lsa"]
    d, n_points = lsa["n_dims"], lsa["n_points"]
    fc = get_function("linear-regression", n_dims=d, n_points=n_points)
    p = fc.prompts(ctx.seed, "test", 0, s["n_eval"])
    trained, runs, seconds = {}, {}, 0.0
    for depth in lsa["depths"]:
        label = f"lsa-depth{depth}"
        config = make_config({
            "task": {"name": "linear-regression", "n_dims": d, "n_points": n_points},
            "model": {"arch": "lsa", "n_layers": depth, "clip": lsa.get("clip")},
            # Each LSA layer is a cubic polynomial of its input, so a deep stack is a polynomial of degree
            # 3^depth: the step size shrinks with depth, or training diverges (depth 5 does at 2e-3).
            "train": {"steps": lsa["steps"], "batch_size": lsa["batch_size"], "lr": lsa["lr"] / depth,
                      "warmup": min(500, lsa["steps"] // 5), "weight_decay": 0.0, "eval_every": max(1, lsa["steps"] // 4),
                      "eval_n": 256, "log_every": max(1, lsa["steps"] // 20),
                      "checkpoint_every": max(1, lsa["steps"] // 4), "seed": ctx.seed}})
        summary = train_run(ctx.run_dir(label), config, quiet=ctx.quiet)
        seconds += summary["train_seconds"] or 0.0
        model = load(ctx.run_dir(label)).model
        trained[depth] = float(np.nanmean(score(fc, model_predictions(model, p.xs, p.ys), p.ys)[:, -1]))
        runs[label] = f"runs/{label}"
    newton = newton_errors(p.xs, p.ys, lsa["depths"], fc.error_scale)
    depths = lsa["depths"]
    error_by_points({"trained linear self-attention": {"k": depths, "mean": [trained[t] for t in depths]},
                     "Newton-Schulz, T = depth": {"k": depths, "mean": [newton[t] for t in depths]}},
                    ctx.out / "plots" / "error_by_depth.png", title=f"linear regression, d = {d}, {n_points - 1} examples",
                    xlabel="layers (trained) or Newton-Schulz iterations", ylabel="squared error / d", log=True)
    metrics: dict[str, Any] = {
        "construction.max_abs_error_float32": cons32["max_abs"], "construction.max_rel_error_float32": cons32["max_rel"],
        "construction.max_abs_error_float64": cons64["max_abs"], "train_seconds": round(seconds, 1),
        **{f"lsa.error.depth{t}": trained[t] for t in depths}, **{f"newton.error.T{t}": newton[t] for t in depths},
    }
    return Outcome(metrics=metrics, runs=runs, artifacts=["plots/error_by_depth.png"],
                   extra={"construction": {"dims": c["dims"], "per_dim": c["per_dim"], "float32": cons32, "float64": cons64}})


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    depths = sorted(int(k.split("depth")[1]) for k in m if k.startswith("lsa.error.depth"))
    rows = "\n".join(f"| {t} | {m[f'lsa.error.depth{t}']:.4g} | {m[f'newton.error.T{t}']:.4g} |" for t in depths)
    c = results.get("construction", {})
    return (results_header(results, "In-context Newton")
            + "## (1) One Newton-Schulz step as one linear self-attention layer\n\n"
            + f"Random SPD A (d = {c.get('dims', ['?'])[0]}..{c.get('dims', ['?'])[-1]}, {c.get('per_dim')} per d); one "
              "constructed layer against NumPy's X(2I - AX): largest absolute difference "
            + f"{m['construction.max_abs_error_float32']:.2e} in float32, "
            + f"{m['construction.max_abs_error_float64']:.2e} in float64.\n\n"
            + "## (2) Trained linear self-attention against Newton-Schulz iterations\n\n"
            + "| depth / iterations | trained LSA | Newton-Schulz |\n|---:|---:|---:|\n" + rows
            + "\n\n![error by depth](plots/error_by_depth.png)\n")


register(Recipe(
    name="icl-newton",
    paper="Giannou et al. 2025, How Well Can Transformers Emulate In-context Newton's Method?",
    description="an LSA construction of Newton-Schulz, and trained LSA depth against Newton iterations",
    budgets=BUDGETS,
    claims=[
        Claim("one constructed LSA layer equals a Newton-Schulz step (float32, max abs difference)", "Giannou et al. 2025",
              metric="construction.max_abs_error_float32", threshold=1e-5, direction="at_most"),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 10.0},
))
