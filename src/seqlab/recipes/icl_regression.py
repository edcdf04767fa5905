"""In-context learning of function classes (Garg et al. 2022): a transformer trained from scratch on
prompts x_1, f(x_1), ..., x_k, f(x_k), x_query fits f in context about as well as the best classical
solver on the same prompts (least squares for linear functions, Lasso for sparse ones, better than
greedy trees and XGBoost for depth-4 trees).

One family per run (`--family`); the error curve is squared error / scale (Garg's normalisation:
d for dense families, the sparsity for sparse regression, 1 for trees) against the number of
in-context examples k, with bootstrap 90% intervals, for the model and every baseline, plus the
model against least squares on Garg's out-of-distribution prompts.
"""

from __future__ import annotations

import argparse
from typing import Any

from seqlab.eval.icl_curves import at_k, ratio
from seqlab.eval.plots import error_by_points
from seqlab.data.prompts import curriculum_ramps
from seqlab.runs import evaluate_icl, make_config, train as train_run
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register, task_settings
from seqlab.recipes.markdown import results_header
from seqlab.tasks.function_classes import function_names, get_function, parse_shift

LASSOS = ["lasso-1", "lasso-0.1", "lasso-0.01", "lasso-0.001"]
# Each family's baselines (Garg's per-task lists) and its settings per budget, laid over the budget's.
FAMILIES: dict[str, dict[str, Any]] = {
    # 12,000 steps left the error at k = 1.5d at 0.09 (8.8 min); the claim asks for <= 0.05
    "linear-regression": {"baselines": ["least-squares", "3-nn", "averaging"], "at": {"cpu": {"train": {"steps": 20000}}}},
    # Sparsity only pays below k = d (least squares is exact from there), so at cpu every prefix of a
    # prompt is in that range: with 31 points the model learned dense least squares (0.505 vs 0.483 at
    # k = d/2; the best Lasso 0.228) in 12,000 steps.
    "sparse-linear-regression": {"baselines": ["least-squares", *LASSOS, "3-nn", "averaging"],
                                 "at": {"cpu": {"task": {"n_points": 11}, "train": {"steps": 20000}}}},
    "noisy-linear-regression": {"baselines": ["least-squares", "ridge", "3-nn", "averaging"]},
    "linear-classification": {"baselines": ["least-squares", "newton-logistic", "3-nn", "averaging"]},
    "logistic-regression": {"baselines": ["newton-logistic", "least-squares", "3-nn", "averaging"]},
    "quadratic-regression": {"baselines": ["least-squares", "3-nn", "averaging"]},
    "relu-2nn-regression": {"baselines": ["least-squares", "gd-2layer", "3-nn", "averaging"]},
    "decision-tree": {"baselines": ["greedy-tree", "xgboost", "least-squares", "3-nn", "averaging"],
                      "at": {"smoke": {"task": {"n_points": 13}},
                             # 122-token prompts cost twice the linear ones per step: half the steps
                             "cpu": {"task": {"n_points": 61}, "curriculum": {"points_inc": 4}, "train": {"steps": 6000}},
                             "gpu": {"task": {"n_points": 101}}}},
    # Park et al. 2024's outlier regressions: outliers sit in the context and are not scored.
    "many-outlier-regression": {"baselines": ["least-squares", "3-nn", "averaging"],
                                "at": {"cpu": {"task": {"n_points": 61}, "curriculum": {"points_inc": 4},
                                               "train": {"steps": 6000}}}},
    "orthogonal-outlier-regression": {"baselines": ["least-squares", "3-nn", "averaging"]},
    "vector-mqar": {"baselines": ["3-nn", "averaging"],
                    "at": {"smoke": {"task": {"n_pairs": 4, "n_points": 11}}, "cpu": {"task": {"n_pairs": 15, "n_points": 31}}}},
    "sparse-parity": {"baselines": ["least-squares", "3-nn", "averaging"],
                      "at": {"cpu": {"task": {"n_dims": 10, "n_points": 61}, "curriculum": {"points_inc": 4},
                                     "train": {"steps": 6000}},
                             "gpu": {"task": {"n_dims": 10, "n_points": 141}}}},
}

BUDGETS = {
    "smoke": {
        "task": {"n_dims": 5, "n_points": 11},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
        "train": {"steps": 20, "batch_size": 16, "lr": 1e-3, "warmup": 5, "eval_every": 10, "eval_n": 16, "log_every": 10,
                  "checkpoint_every": 10},
        "curriculum": None, "n_eval": 64, "slow_n": 8, "shifts": ["scale-x=2"],
    },
    "cpu": {
        "task": {"n_dims": 10, "n_points": 31},
        # canon=2 removes the long plateau before a y token learns to find its x (none in 1,500 steps
        # at d = 5 without it; learning from step 250 with it); 3 layers learned as fast as 6 here.
        "model": {"n_layers": 3, "d_model": 64, "n_heads": 4, "canon": 2},
        "train": {"steps": 12000, "batch_size": 64, "lr": 1e-3, "warmup": 300, "eval_every": 1000, "eval_n": 256,
                  "log_every": 100, "checkpoint_every": 1000, "weight_decay": 0.0},
        "curriculum": {"dims_start": 2, "points_start": 5, "interval": 300},
        "n_eval": 1000, "slow_n": 200, "shifts": "all",
    },
    "gpu": {  # Garg et al.'s standard model and schedule (d = 20)
        "task": {"n_dims": 20, "n_points": 41},
        "model": {"n_layers": 12, "d_model": 256, "n_heads": 8},
        "train": {"steps": 500000, "batch_size": 64, "lr": 1e-4, "warmup": 1000, "eval_every": 5000, "eval_n": 1280,
                  "log_every": 500, "checkpoint_every": 5000, "weight_decay": 0.0, "schedule": "constant"},
        "curriculum": {"dims_start": 5, "points_start": 11, "interval": 2000},
        "n_eval": 1280, "slow_n": 500, "shifts": "all",
    },
}


def family_settings(family: str, budget: str) -> dict[str, Any]:
    spec = {"at": FAMILIES[family].get("at", {})}
    return task_settings(BUDGETS[budget], spec, budget)


def run_config(family: str, s: dict[str, Any], seed: int):
    d, n_points = s["task"]["n_dims"], s["task"]["n_points"]
    curriculum = curriculum_ramps(s.get("curriculum"), d, n_points)
    return make_config({"task": {"name": family, **s["task"]}, "model": {**s["model"], "max_points": n_points},
                               "train": {**s["train"], "seed": seed}, "curriculum": curriculum})


def key_ks(d: int, n_points: int) -> list[int]:
    """The k at which tables report errors and slow baselines run: 1, d/2, d, 1.5d, 2d, 3d, 50, 100."""
    ks = {1, max(1, d // 2), d, (3 * d) // 2, 2 * d, 3 * d, 50, 100, n_points - 1}
    return sorted(k for k in ks if k < n_points)


def run(ctx: Context) -> Outcome:
    family = ctx.options.family
    s = family_settings(family, ctx.budget)
    d, n_points = s["task"]["n_dims"], s["task"]["n_points"]
    config = run_config(family, s, ctx.seed)
    run_dir = ctx.run_dir(family)
    summary = train_run(run_dir, config, quiet=ctx.quiet)
    ks = key_ks(d, n_points)
    ev = evaluate_icl(run_dir, s["n_eval"], FAMILIES[family]["baselines"], s["slow_n"], ks, seed=ctx.seed)
    curves = ev["curves"]
    fc = get_function(family, **s["task"])
    ylabel = "error rate (sign)" if ev["kind"] == "classification" else f"squared error / {ev['error_scale']:g}"
    error_by_points(curves, ctx.out / "plots" / "error_by_points.png", title=f"{family}, d = {d}: error against k",
                    ylabel=ylabel, marks={"k = d": d}, ymax=1.5)
    metrics: dict[str, Any] = {"train_steps": summary["step"], "train_seconds": round(summary["train_seconds"] or 0, 1),
                               "n_params": summary["n_params"], "n_dims": d}
    for label, c in curves.items():
        for k in ks:
            v = at_k(c, k)
            if v is not None:
                metrics[f"error.{label}.k{k}"] = v
    metrics.update(claim_metrics(family, curves, d, ev["model_on_slow_prompts"]))
    shift_results = {}
    wanted = fc.shifts() if s["shifts"] == "all" else [x for x in s["shifts"] if x in fc.shifts()]
    for shift in wanted:
        shift_results[shift] = shift_errors(run_dir, s, shift, [k for k in (d, 2 * d) if k < n_points], ctx.seed)
    artifacts = ["plots/error_by_points.png"]
    return Outcome(metrics=metrics, runs={family: f"runs/{family}"}, artifacts=artifacts,
                   extra={"curves": curves, "skipped_baselines": ev["skipped"], "shifts": shift_results, "ks": ks})


def shift_errors(run_dir, s: dict[str, Any], shift: str, ks: list[int], seed: int) -> dict[str, dict[str, float | None]]:
    """Model and least-squares error at each k under a shift. A shift of the query alone (orthogonal,
    overlapping, random quadrants) moves only a prompt's last point, so k examples are scored on
    prompts of k + 1 points; the others move every point, and one prompt length scores every k."""
    if parse_shift(shift).acts_on == "query":
        out: dict[str, dict[str, float | None]] = {}
        for k in ks:
            r = evaluate_icl(run_dir, s["n_eval"], ["least-squares"], s["slow_n"], [], shift=shift, seed=seed, n_points=k + 1)
            for lab, c in r["curves"].items():
                out.setdefault(lab, {})[str(k)] = at_k(c, k)
        return out
    r = evaluate_icl(run_dir, s["n_eval"], ["least-squares"], s["slow_n"], [], shift=shift, seed=seed)
    return {lab: {str(k): at_k(c, k) for k in ks} for lab, c in r["curves"].items()}


def claim_metrics(family: str, curves: dict[str, dict], d: int, model_on_slow: dict | None = None) -> dict[str, float | None]:
    """The numbers the claims compare, from the measured curves. Against a slow baseline (Lasso, a
    tree), run on the first prompts only, the model is scored on those same prompts."""
    model, out = curves["model"], {}
    slow_model = model_on_slow or model
    if family == "linear-regression":
        ls = curves["least-squares"]
        late = [m for k, m in zip(model["k"], model["mean"]) if k >= 1.5 * d]
        out["linear.max_error_from_1.5d"] = max(late) if late else None
        gaps = [m - ls["mean"][ls["k"].index(k)] for k, m in zip(model["k"], model["mean"]) if k < d and k in ls["k"]]
        out["linear.max_excess_over_least_squares_below_d"] = max(gaps) if gaps else None
    if family == "sparse-linear-regression":
        k = d // 2
        lassos = [at_k(curves[n], k) for n in LASSOS if n in curves and at_k(curves[n], k) is not None]
        out["sparse.model_over_least_squares_at_d/2"] = ratio(at_k(model, k), at_k(curves["least-squares"], k))
        out["sparse.model_over_best_lasso_at_d/2"] = ratio(at_k(slow_model, k), min(lassos)) if lassos else None
    if family == "decision-tree" and "greedy-tree" in curves:
        out["tree.model_over_greedy_tree_at_50"] = ratio(at_k(slow_model, 50), at_k(curves["greedy-tree"], 50))
    return out


def report(ctx: Context, results: dict[str, Any]) -> str:
    m, fam = results["metrics"], results["options"]["family"]
    curves, ks = results.get("curves", {}), results.get("ks", [])
    lines = [results_header(results, f"In-context learning: {fam}"),
             f"A {m.get('n_params', 0):,}-parameter transformer trained {m.get('train_steps')} steps "
             f"({m.get('train_seconds')} s) on prompts of d = {m.get('n_dims')}; errors on held-out prompts, "
             "mean and bootstrap 90% interval.\n\n## Error against the number of in-context examples k\n\n",
             "| k | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for k in ks:
        cells = []
        for c in curves.values():
            v = at_k(c, k)
            cells.append("—" if v is None else f"{v:.4f} [{c['lo'][c['k'].index(k)]:.3f}, {c['hi'][c['k'].index(k)]:.3f}]")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("\n![error by k](plots/error_by_points.png)\n")
    for name, why in results.get("skipped_baselines", {}).items():
        lines.append(f"- baseline `{name}` skipped: {why}")
    if results.get("shifts"):
        lines += ["\n## Out-of-distribution prompts (model vs least squares)\n", "| shift | k | model | least squares |",
                  "|---|---:|---:|---:|"]
        for shift, by in results["shifts"].items():
            for k in by.get("model", {}):
                ls = by.get("least-squares", {}).get(k)
                lines.append(f"| {shift} | {k} | {by['model'][k]:.4f} | {'—' if ls is None else f'{ls:.4f}'} |")
    return "\n".join(lines) + "\n"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", default="linear-regression", choices=function_names())


def _when(family: str) -> tuple:
    return (("family", family),)


register(Recipe(
    name="icl-regression",
    paper="Garg et al. 2022, What Can Transformers Learn In-Context? A Case Study of Simple Function Classes",
    description="in-context learning of function classes against classical baselines (--family)",
    budgets=BUDGETS,
    claims=[
        Claim("linear regression: error <= 0.05 for every k >= 1.5d (least squares: 0)", "Garg et al. 2022",
              metric="linear.max_error_from_1.5d", threshold=0.05, direction="at_most", budgets=("cpu",),
              when=_when("linear-regression")),
        Claim("linear regression: within 0.1 of least squares for every k < d", "Garg et al. 2022",
              metric="linear.max_excess_over_least_squares_below_d", threshold=0.1, direction="at_most", budgets=("cpu",),
              when=_when("linear-regression")),
        Claim("sparse regression: below least squares at k = d/2 (ratio)", "Garg et al. 2022",
              metric="sparse.model_over_least_squares_at_d/2", threshold=1.0, direction="at_most", budgets=("cpu",),
              when=_when("sparse-linear-regression")),
        Claim("sparse regression: within 1.5x of the best Lasso at k = d/2", "Garg et al. 2022",
              metric="sparse.model_over_best_lasso_at_d/2", threshold=1.5, direction="at_most", budgets=("cpu",),
              when=_when("sparse-linear-regression")),
        Claim("decision trees: below the greedy depth-4 tree at k = 50 (ratio)", "Garg et al. 2022",
              metric="tree.model_over_greedy_tree_at_50", threshold=1.0, direction="at_most", budgets=("cpu",),
              when=_when("decision-tree")),
        *[Claim(f"{fam}: the whole command within 20 minutes on a 2-core CPU", "seqlab target", metric="wall_seconds",
                threshold=1200.0, direction="at_most", budgets=("cpu",), when=_when(fam))
          for fam in ("linear-regression", "sparse-linear-regression", "decision-tree")],
        # Garg et al.'s d = 20 table, within 1.5x of his numbers.
        Claim("linear regression at d = 20: error at k = 20", "Garg et al. 2022", metric="error.model.k20",
              paper_value=0.021, threshold=0.0315, direction="at_most", budgets=("gpu",), when=_when("linear-regression")),
        Claim("linear regression at d = 20: error at k = 40", "Garg et al. 2022", metric="error.model.k40",
              paper_value=5.8e-4, threshold=8.7e-4, direction="at_most", budgets=("gpu",), when=_when("linear-regression")),
        Claim("sparse regression at d = 20: error at k = 10 (Lasso: 0.083)", "Garg et al. 2022", metric="error.model.k10",
              paper_value=0.090, threshold=0.135, direction="at_most", budgets=("gpu",), when=_when("sparse-linear-regression")),
        Claim("decision trees at d = 20: error at k = 100 (XGBoost: 0.73)", "Garg et al. 2022", metric="error.model.k100",
              paper_value=0.12, threshold=0.18, direction="at_most", budgets=("gpu",), when=_when("decision-tree")),
    ],
    run=run,
    report=report,
    options=options,
    minutes={"smoke": 0.5, "cpu": 20.0},
))
